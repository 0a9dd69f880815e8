"""Convert an official Microsoft, timm or mmdet / mmseg Swin checkpoint to swin_backbone keys.

Usage: python tools/convert_checkpoint.py SRC DST [--force]

SRC may be a path or URL; its format is detected. DST receives ``{'state_dict': ...,
'meta': ...}`` with our backbone keys (classifier head and window-derived buffers dropped),
written to a temporary name first and renamed, and never over an existing file unless
``--force`` is given. Loading never runs code from SRC (``weights_only=True``).
"""
from __future__ import annotations

import argparse
import sys

import swin_backbone  # noqa: F401  (registers the models)
from swin_backbone.checkpoint import CheckpointError, convert_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint path or URL')
    parser.add_argument('dst', help='output path (.pth)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing DST')
    parser.add_argument('--num-stages', type=int, default=4,
                        help='stages of the model (the final norm maps to norm{N-1})')
    args = parser.parse_args(argv)
    try:
        fmt, count = convert_file(args.src, args.dst, force=args.force,
                                  num_stages=args.num_stages)
    except (CheckpointError, FileNotFoundError, FileExistsError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'converted {count} tensors from {args.src} ({fmt} format) to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
