"""Print ours vs timm (V1, V2) and mmdet (V1) per output stage, same generated weights.

Usage: python tools/analysis_tools/parity_report.py

The checks of tests/test_parity.py, as a table: max |ours - reference| per stage, in fp32 and
fp64, before the output norms (which the references do not have).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]  # reference.py, synthetic.py: test scaffolding

from reference import parity_with_mmdet, parity_with_timm  # noqa: E402
from synthetic import save_official  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        v1, v2 = Path(tmp) / 'v1.pth', Path(tmp) / 'v2.pth'
        save_official(v1, version=1, window=7)
        save_official(v2, version=2, window=8)
        cases = [('timm swinv2_tiny_window8_256', '256x256',
                  lambda dt: parity_with_timm(2, str(v2), (256, 256), dt)),
                 ('timm swin_tiny_patch4_window7_224', '224x224',
                  lambda dt: parity_with_timm(1, str(v1), (224, 224), dt)),
                 ('mmdet 3.3 SwinTransformer', '509x643',
                  lambda dt: parity_with_mmdet(str(v1), (509, 643), dt))]
        print('| reference | input | dtype | stage 0 | stage 1 | stage 2 | stage 3 |')
        print('|---|---|---|---|---|---|---|')
        for name, size, run in cases:
            for dtype in (torch.float32, torch.float64):
                diffs = ' | '.join(f'{d:.1e}' for d in run(dtype))
                print(f'| {name} | {size} | {str(dtype)[6:]} | {diffs} |')


if __name__ == '__main__':
    main()
