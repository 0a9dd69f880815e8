"""The CPU layer's GEMM policies against each other (``SWIN_BACKBONE_GEMM``), in one process.

Usage: python tools/analysis_tools/gemm_policies.py [--repeats 5]

On a cold cache (a fresh ``XDG_CACHE_HOME``) it prints the one-off cost of calibrating
(the first forward / step under ``calibrate`` against one under ``rule``), how many shapes
were timed and how many left the rule, then SwinV2-T / Swin-T forward at 800x1344 and
training step 2x512x512 under each policy, interleaved, medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402

from swin_backbone.cpu import gemm_choice  # noqa: E402

POLICIES = ('rule', 'calibrate', 'mkl')


def under(policy: str, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        os.environ['SWIN_BACKBONE_GEMM'] = policy
        return fn()
    return run


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    os.environ['XDG_CACHE_HOME'] = tempfile.mkdtemp()  # cold cache, the user's left alone
    ckpt_dir = Path(tempfile.mkdtemp())
    g800, g512 = (benchmark.build_backbones(ckpt_dir, s) for s in ((800, 1344), (512, 512)))
    x800, x512 = torch.randn(1, 3, 800, 1344), torch.randn(2, 3, 512, 512)
    cases = {}
    for v in (2, 1):
        cases[f'V{v} forward 800x1344'] = benchmark.inference_fn(g800[v][0], x800, False)
        cases[f'V{v} train step 2x512x512'] = benchmark.train_step_fn(g512[v][0], x512)
    print(f'{benchmark.cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}')
    print('\n| case | first call, calibrating (s) | a call under rule (s) |\n|---|---|---|')
    for name, fn in cases.items():
        under('rule', fn)()
        rule_s = seconds(under('rule', fn))
        print(f'| {name} | {seconds(under("calibrate", fn)):.2f} | {rule_s:.2f} |')
    choices = gemm_choice.cached_choices()
    changed = sum(lib != gemm_choice.rule(op, int(m), int(k), int(n))
                  for (op, m, k, n), lib in ((key.split(':'), lib) for key, lib in choices.items()))
    print(f'\n{len(choices)} shapes timed, {changed} of them not on the rule\'s library')
    print('\n| case | ' + ' | '.join(f'{p} ms' for p in POLICIES)
          + ' | rule / calibrate | rule / mkl |\n|---|' + '---|' * (len(POLICIES) + 2))
    for name, fn in cases.items():
        times = benchmark.interleaved({p: under(p, fn) for p in POLICIES}, args.repeats)
        med = {p: statistics.median(t) for p, t in times.items()}
        print(f'| {name} | ' + ' | '.join(f'{med[p] * 1000:.0f}' for p in POLICIES)
              + f' | {med["rule"] / med["calibrate"]:.2f}x | {med["rule"] / med["mkl"]:.2f}x |')


if __name__ == '__main__':
    main()
