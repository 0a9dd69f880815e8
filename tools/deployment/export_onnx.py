"""Export a config's backbone, UPerNet segmentor or detector features to ONNX.

    python tools/deployment/export_onnx.py CONFIG [--checkpoint CKPT] --out FILE \
        [--shape H W] [--dynamic] [--what backbone|segmentor|detector-features] [--overwrite]

With ``--dynamic`` the file takes any batch, height and width (``--shape`` is then only the
size of the check below); without it, exactly ``1 x 3 x H x W``. After writing, the file is
run once in ONNX Runtime at ``--shape`` and its largest difference to eager PyTorch printed.
Inputs are what the model's data preprocessor gives (normalised images): see
docs/deployment.md.
"""
from __future__ import annotations

import argparse
import time

import torch
from mmengine.config import DictAction

from swin_backbone.deploy import (EXPORT_TARGETS, build_export_target, differences_to_eager,
                                  export_onnx, run_onnxruntime)
from swin_backbone.deploy.onnx_export import DEFAULT_OPSET


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights to load (any layout init_cfg reads)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default 512 512 for segmentors, else 800 1344)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width (default: fixed 1 x 3 x H x W)')
    parser.add_argument('--what', choices=EXPORT_TARGETS, default='backbone')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in mmdet / mmseg tools')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    target = build_export_target(args.config, args.checkpoint, args.what, args.cfg_options)
    h, w = args.shape or target.default_shape
    example = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    path = export_onnx(target.module, args.out, example, dynamic=args.dynamic,
                       output_names=target.output_names, opset=args.opset,
                       overwrite=args.overwrite)
    print(f'wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, '
          f"{'dynamic batch, H, W' if args.dynamic else f'fixed 1x3x{h}x{w}'}) "
          f'in {time.perf_counter() - start:.0f} s')
    try:
        got = run_onnxruntime(path, example)
    except ImportError as error:
        print(f'not checked in ONNX Runtime: {error}')
        return
    with torch.no_grad():
        eager = target.module(example)
    for name, have, (diff, scale) in zip(target.output_names, got,
                                         differences_to_eager(eager, got)):
        print(f'{name}: {tuple(have.shape)} max |onnxruntime - eager| {diff:.2e} '
              f'(max |eager| {scale:.3g})')


if __name__ == '__main__':
    main()
