"""Peak memory of SwinV2-T at high resolution, ours (each option) against timm, each case in a
fresh process.

Usage: python tools/analysis_tools/memory.py [--out results/memory] [--quick] [--no-live-set]
       python tools/analysis_tools/memory.py --case ours-cpu --mode train --size 1024 [--with-cp]

The measure is a real allocator's: the growth of the process's resident high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` once the model and its input are built)
over two training steps or three inference steps: a forward, a loss over the four stage maps
and a backward (``train``), or a forward without gradients (``infer``). Each case runs twice,
under glibc's defaults and with large allocations mmapped (the live set, ``LIVE_SET_ENV``).
Beside it: the bytes of the distinct tensors autograd saves for backward (parameters
included) and the median step time. The model is SwinV2-T at window 16 (pretrained window 8),
batch 1: ``ours`` is the reference model a config builds, ``ours-cpu`` the same with the CPU
layer (what ``tools/train.py`` runs on a machine without CUDA), ``timm`` is timm's
``SwinTransformerV2`` built for the input size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / 'tests'), str(Path(__file__).resolve().parent)]

from machine import cpu_model  # noqa: E402

IMPLS = ('ours', 'ours-cpu', 'timm')
GIB = 2**30
MIB = 2**20


def _status_kib(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field}')


def peak_supported() -> bool:
    """Whether this kernel lets a process reset its high-water mark (Linux >= 4.0)."""
    try:
        reset_peak()
        return True
    except OSError:
        return False


def reset_peak() -> int:
    """Reset the resident high-water mark to the current resident size; return it in bytes."""
    Path('/proc/self/clear_refs').write_text('5')
    return _status_kib('VmRSS') * 1024


def peak_bytes() -> int:
    return _status_kib('VmHWM') * 1024


def build(impl: str, size: int, with_cp: bool) -> tuple[torch.nn.Module, object]:
    """The model and a function ``(B, 3, H, W) -> list of the four stage maps``."""
    if impl == 'timm':
        from reference import import_timm, timm_stage_outputs
        model = import_timm().create_model(
            'swinv2_tiny_window8_256', pretrained=False, img_size=(size, size), window_size=16,
            pretrained_window_sizes=(8, 8, 8, 8), num_classes=0, drop_path_rate=0.1)
        if with_cp:
            model.set_grad_checkpointing()
        return model, lambda x: timm_stage_outputs(model, x)
    from swin_backbone import SwinTransformerV2
    model = SwinTransformerV2(arch='tiny', window_size=16, pretrained_window_size=8,
                              drop_path_rate=0.1, with_cp=with_cp)
    if impl == 'ours-cpu':
        from swin_backbone.cpu import accelerate
        accelerate(model)
    return model, model


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs: the training-memory
    peak that differs between implementations (weights and optimiser state are identical)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def run_case(impl: str, mode: str, size: int, with_cp: bool, whole_backward: bool) -> dict:
    torch.manual_seed(0)
    if whole_backward:  # the CPU layer's attention backward over all windows at once
        from swin_backbone.cpu import recompute
        recompute.BACKWARD_PAIRS_PER_CHUNK = 1 << 62
    model, features = build(impl, size, with_cp)
    model.train(mode == 'train')
    x = torch.randn(1, 3, size, size)
    baseline = reset_peak()
    times = []
    for _ in range(2 if mode == 'train' else 3):
        start = time.perf_counter()
        if mode == 'train':
            loss = sum(o.float().square().mean() for o in features(x))
            loss.backward()
            del loss
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                features(x)
        times.append(time.perf_counter() - start)
    peak = peak_bytes() - baseline
    result = dict(impl=impl, mode=mode, size=size, with_cp=with_cp, whole_backward=whole_backward,
                  peak_mib=peak / MIB, model_mib=baseline / MIB,
                  step_s=statistics.median(times), cpu=cpu_model(),
                  threads=torch.get_num_threads())
    if mode == 'train':
        result['saved_mib'] = saved_activation_bytes(
            lambda: sum(o.float().square().mean() for o in features(x))) / MIB
    return result


# glibc serves allocations above its mmap threshold with fresh pages and returns them on
# free; below it they come from heaps that keep freed memory resident. The threshold starts
# at 128 KiB and rises to 32 MiB after the first large free, so the default peak includes
# what fragmentation retains. Fixed at 1 MiB, every tensor that matters is returned on free
# and the peak is the live set's (and steps are slower: fresh pages on every allocation).
LIVE_SET_ENV = {'MALLOC_MMAP_THRESHOLD_': str(1 << 20)}


def in_fresh_process(impl: str, mode: str, size: int, with_cp: bool = False,
                     whole_backward: bool = False, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, '--case', impl, '--mode', mode, '--size', str(size)]
    cmd += ['--with-cp'] * with_cp + ['--whole-backward'] * whole_backward
    # The CPU layer's GEMM library by the fixed rule unless the caller names one: a
    # calibrating first step would add its timing buffers to the peak of the first case only.
    env = {'SWIN_BACKBONE_GEMM': os.environ.get('SWIN_BACKBONE_GEMM', 'rule'), **(env or {})}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def cases(quick: bool) -> list[tuple]:
    """(impl, mode, size, with_cp, whole_backward) of the table."""
    rows = [(impl, 'infer', 1536, False, False) for impl in IMPLS]
    for size in ((1024,) if quick else (1024, 1536)):
        for with_cp in (False, True):
            rows += [(impl, 'train', size, with_cp, False) for impl in IMPLS]
        rows.append(('ours-cpu', 'train', size, False, True))
    return rows


def largest_side(points: list[dict], budget_bytes: float) -> int:
    """The largest square side whose training step fits ``budget_bytes`` (the model's own
    resident size included), on the straight line through the measured (pixels, peak) points:
    every activation is per token, and the bias and masks no longer grow with the input."""
    (p0, m0), (p1, m1) = sorted((pt['size'] ** 2, (pt['peak_mib'] + pt['model_mib']) * MIB)
                                for pt in points)[:2]
    slope = (m1 - m0) / (p1 - p0)
    pixels = p0 + (budget_bytes - m0) / slope
    return int(pixels ** 0.5) // 32 * 32


def table(results: list[dict]) -> list[str]:
    """One row per case: the peak under glibc's defaults and with large allocations
    mmapped (``r['live']``, when measured), each also over timm's for the same step."""
    def key(r: dict) -> tuple:
        return (r['mode'], r['size'], r['with_cp'])

    timm = {key(r): r for r in results if r['impl'] == 'timm'}

    def peak(r: dict, field: str, ref: dict | None) -> str:
        if field not in r:
            return ' | '
        ratio = f'{r[field] / ref[field]:.2f}x' if ref and field in ref else ''
        return f'{r[field]:.0f} | {ratio}'

    lines = ['| step | checkpointing | model | peak growth MiB | vs timm | live-set peak MiB '
             '| vs timm | saved for backward MiB | median s |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        ref = timm.get(key(r))
        saved = f'{r["saved_mib"]:.0f}' if 'saved_mib' in r else ''
        name = r['impl'] + (' (attention backward unchunked)' if r['whole_backward'] else '')
        lines.append(f'| {r["mode"]} {r["size"]}x{r["size"]} | {"yes" if r["with_cp"] else "no"} '
                     f'| {name} | {peak(r, "peak_mib", ref)} | {peak(r, "live_mib", ref)} '
                     f'| {saved} | {r["step_s"]:.2f} |')
    for impl in IMPLS:
        for with_cp in (False, True):
            points = [r for r in results if r['impl'] == impl and r['mode'] == 'train'
                      and r['with_cp'] == with_cp and not r['whole_backward']]
            if len({p['size'] for p in points}) >= 2:
                sides = [largest_side(points, gib * GIB) for gib in (16, 80)]
                lines.append(f'\nLargest square training input, {impl}, checkpointing '
                             f'{"on" if with_cp else "off"}: {sides[0]} px within 16 GiB, '
                             f'{sides[1]} px within 80 GiB (resident memory, extrapolated from '
                             'the measured sizes).')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--case', choices=IMPLS)
    parser.add_argument('--mode', choices=('train', 'infer'), default='train')
    parser.add_argument('--size', type=int, default=1024)
    parser.add_argument('--with-cp', action='store_true')
    parser.add_argument('--whole-backward', action='store_true',
                        help="the CPU layer's attention backward over all windows at once "
                             '(as before it went over chunks), for the comparison')
    parser.add_argument('--quick', action='store_true', help='training at 1024 only')
    parser.add_argument('--no-live-set', action='store_true',
                        help='skip the second run of each case with large allocations mmapped')
    parser.add_argument('--out', type=Path, default=Path('results/memory'))
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.mode, args.size, args.with_cp,
                                  args.whole_backward)))
        return
    report(args.out, args.quick, live_set=not args.no_live_set)


def report(out: Path, quick: bool, live_set: bool = True) -> None:
    """:func:`measure`, written to ``out/memory.md`` and printed."""
    text = '\n'.join(measure(quick, live_set)) + '\n'
    out.mkdir(parents=True, exist_ok=True)
    (out / 'memory.md').write_text(text)
    print(text)


def measure(quick: bool, live_set: bool = True) -> list[str]:
    """Every case of :func:`cases` in fresh processes; the report's lines."""
    results = []
    for case in cases(quick):
        results.append(in_fresh_process(*case))
        if live_set:
            results[-1]['live_mib'] = in_fresh_process(*case, env=LIVE_SET_ENV)['peak_mib']
        print(json.dumps(results[-1]), flush=True)
    first = results[0]
    return [f'Machine: {first["cpu"]}, {first["threads"]} threads, torch {torch.__version__}. '
            f'Command: `python tools/analysis_tools/memory.py{" --quick" if quick else ""}`.',
            '', 'Peak growth: glibc as configured by default. Live-set peak: the same case run '
            f'again with {" ".join(f"{k}={v}" for k, v in LIVE_SET_ENV.items())}, so freed '
            'tensors return to the system and the peak is what was alive at once. Times are '
            "the default run's (median of its steps, the first included).", '', *table(results)]


if __name__ == '__main__':
    main()
