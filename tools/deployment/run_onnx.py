"""Run an exported ONNX file on an image in ONNX Runtime or OpenVINO and compare with eager.

    python tools/deployment/run_onnx.py FILE CONFIG [--checkpoint CKPT] [--what ...] \
        [--image IMG | --shape H W] [--batch N] [--runtime onnxruntime|openvino] \
        [--precision f32|bf16]

The image (or a seeded random one of ``--shape``) is normalised by the model's own data
preprocessor at its own size, then fed to the file and to the eager model the file was
exported from; prints each output's shape, its largest absolute difference and that
difference over ``max(1, max |eager|)``.
"""
from __future__ import annotations

import argparse
import time

import torch
from mmengine.config import DictAction

from swin_backbone.deploy import (EXPORT_TARGETS, build_export_target, differences_to_eager,
                                  onnxruntime_session, openvino_model, run_onnxruntime,
                                  run_openvino)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('file', help='the .onnx file')
    parser.add_argument('config', help='the config it was exported from')
    parser.add_argument('--checkpoint')
    parser.add_argument('--what', choices=EXPORT_TARGETS, default='backbone')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--image', help='an image file (read as BGR, like mmcv)')
    source.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='a random image of this size (default: the target default)')
    parser.add_argument('--batch', type=int, default=1, help='copies of the image per batch')
    parser.add_argument('--runtime', choices=('onnxruntime', 'openvino'), default='onnxruntime')
    parser.add_argument('--precision', choices=('f32', 'bf16'), default='f32',
                        help='OpenVINO inference precision')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def load_image(args: argparse.Namespace, default_shape: tuple[int, int]) -> torch.Tensor:
    """``(3, H, W)`` uint8, BGR."""
    if args.image:
        import mmcv
        return torch.from_numpy(mmcv.imread(args.image)).permute(2, 0, 1).contiguous()
    h, w = args.shape or default_shape
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    target = build_export_target(args.config, args.checkpoint, args.what, args.cfg_options)
    image = load_image(args, target.default_shape)
    with torch.no_grad():
        x = target.model.data_preprocessor({'inputs': [image] * args.batch}, False)['inputs']
        eager = target.module(x)
    if args.runtime == 'onnxruntime':
        session = onnxruntime_session(args.file)
        run = lambda: run_onnxruntime(session, x)  # noqa: E731
    else:
        compiled = openvino_model(args.file, args.precision)
        run = lambda: run_openvino(compiled, x)  # noqa: E731
    start = time.perf_counter()
    got = run()
    seconds = time.perf_counter() - start
    print(f'{args.runtime} ({args.precision if args.runtime == "openvino" else "f32"}) on '
          f'{tuple(x.shape)}: {seconds:.3f} s (first run)')
    try:
        differences = differences_to_eager(eager, got)
    except ValueError as error:
        raise SystemExit(f'{args.file} does not fit {args.config} --what {args.what}: {error}')
    for name, have, (diff, scale) in zip(target.output_names, got, differences):
        print(f'{name}: {tuple(have.shape)} max |diff| {diff:.2e}, relative '
              f'{diff / max(1., scale):.2e}')


if __name__ == '__main__':
    main()
