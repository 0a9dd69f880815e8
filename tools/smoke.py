"""Build SwinV2-T, run one forward on a random 800x1333 image, print output shapes and time."""
from __future__ import annotations

import time

import torch

from swin_backbone import SwinTransformerV2


def main() -> None:
    model = SwinTransformerV2(arch='tiny', window_size=16, pretrained_window_size=8).eval()
    x = torch.randn(1, 3, 800, 1333)
    with torch.no_grad():
        start = time.perf_counter()
        outs = model(x)
        elapsed = time.perf_counter() - start
    for i, out in enumerate(outs):
        print(f'stage {i}: {tuple(out.shape)}')
    print(f'forward of SwinV2-T (window 16) at 800x1333 on {torch.get_num_threads()} threads: '
          f'{elapsed:.2f} s')


if __name__ == '__main__':
    main()
