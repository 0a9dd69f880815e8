"""Convert a Swin checkpoint of any supported layout to swin_backbone keys.

Usage: python tools/model_converters/convert_checkpoint.py SRC DST [--from FORMAT]
       [--to pth|safetensors] [--force] [--num-stages N]

SRC may be a file (``.pth``, ``.bin``, ``.safetensors``, a sharded ``*.index.json``), a
Hugging Face folder (``config.json`` and weights) or an http(s) URL; its layout (official,
timm, mmdet, mmpretrain, huggingface, torchvision, swin_backbone) is detected unless
``--from`` names it. DST receives our backbone keys (classifier head and window-derived
buffers dropped), as ``{'state_dict': ..., 'meta': ...}`` (``--to pth``) or a
``.safetensors`` file (``--to safetensors``, the default when DST ends in ``.safetensors``),
written to a temporary name first and renamed, never over an existing file unless ``--force``
is given. Reading never runs code from SRC.
"""
from __future__ import annotations

import argparse
import sys

from swin_backbone.checkpoint import FORMATS, SAVE_FORMATS, CheckpointError, convert_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint file, Hugging Face folder or URL')
    parser.add_argument('dst', help='output path (.pth or .safetensors)')
    parser.add_argument('--from', dest='fmt', choices=FORMATS,
                        help='the layout of SRC (default: detected)')
    parser.add_argument('--to', dest='file_format', choices=SAVE_FORMATS,
                        help='file type of DST (default: from its extension; pth otherwise)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing DST')
    parser.add_argument('--num-stages', type=int, default=4,
                        help='stages of the model (the final norm maps to norm{N-1})')
    args = parser.parse_args(argv)
    try:
        fmt, count = convert_file(args.src, args.dst, force=args.force,
                                  num_stages=args.num_stages, fmt=args.fmt,
                                  file_format=args.file_format)
    except (CheckpointError, FileNotFoundError, FileExistsError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'converted {count} tensors from {args.src} ({fmt} format) to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
