"""Toy segmentation demo: generate data -> train from scratch -> test -> overlays, plot.

Runs ``tools/train.py`` and ``tools/test.py`` as subprocesses, exactly as a user would,
then reads what mmengine logged and prints a summary. Everything lands in the work dir:
``curves.png`` (training loss and val mIoU over iterations), ``overlays/`` (ground truth
| prediction, painted by mmseg's ``SegLocalVisualizer`` through ``--show-dir``),
``summary.json``, the checkpoint and the logs.

Usage: python tools/demo_segmentation.py [--work-dir work_dirs/demo_seg]
                                         [--data-root data/toy_seg] [--cfg-options ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swin_backbone.toy_segmentation import ToySpec, generate  # noqa: E402
from swin_backbone.training_curves import plot_training_curves  # noqa: E402

CONFIG = REPO / 'configs' / 'upernet_swin_t_toy.py'
TARGET_MIOU = 60.0  # percent, as mmseg's IoUMetric reports it


def free_cores() -> int:
    """Cores not already busy with other work (1-minute load average), at least 1.

    On a shared machine more OpenMP threads than free cores make every step several
    times slower (toy training with 2 threads next to two busy processes on 2 cores:
    1.64 s/iteration; with 1 thread: 0.37 s/iteration).
    """
    cores = len(os.sched_getaffinity(0))
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def run_tool(script: str, args: list[str], work_dir: Path,
             env: dict[str, str]) -> tuple[float, Path]:
    """Run ``tools/<script>``; return (seconds, the ``<timestamp>`` folder it logged to)."""
    def runs() -> set[Path]:
        found = work_dir.glob('*/*.log') if work_dir.exists() else []
        return {p.parent for p in found if p.stem == p.parent.name}

    before = runs()
    start = time.perf_counter()
    cmd = [sys.executable, str(REPO / 'tools' / script), *args]
    print(f"$ OMP_NUM_THREADS={env['OMP_NUM_THREADS']}", ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=env)
    new = sorted(runs() - before)
    if not new:
        raise RuntimeError(f'{script} wrote no <timestamp>/<timestamp>.log under {work_dir}')
    return time.perf_counter() - start, new[-1]


def per_class_iou(log_file: Path) -> dict[str, float]:
    """The last 'per class results' table IoUMetric printed into ``log_file``."""
    text = log_file.read_text()
    table = text[text.rindex('per class results'):]
    rows = re.findall(r'^\|\s*([^|]+?)\s*\|\s*([\d.]+|nan)\s*\|\s*([\d.]+|nan)\s*\|$',
                      table, flags=re.M)
    return {name: float(iou) for name, iou, _ in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'demo_seg')
    parser.add_argument('--data-root', type=Path, default=REPO / 'data' / 'toy_seg')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to tools/train.py and tools/test.py')
    args = parser.parse_args()
    work_dir = args.work_dir.resolve()
    wall = time.perf_counter()
    load_start = os.getloadavg()

    start = time.perf_counter()
    generate(args.data_root, ToySpec())
    t_data = time.perf_counter() - start

    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', str(free_cores()))  # the user's choice wins
    root = str(args.data_root.resolve())
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += args.cfg_options
    t_train, train_dir = run_tool(
        'train.py', [str(CONFIG), '--work-dir', str(work_dir), '--cfg-options', *options],
        work_dir, env)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    t_test, test_dir = run_tool(
        'test.py', [str(CONFIG), checkpoint, '--work-dir', str(work_dir),
                    '--show-dir', str(work_dir / 'overlays'), '--cfg-options', *options],
        work_dir, env)

    metrics = json.loads((test_dir / f'{test_dir.name}.json').read_text())
    curves = plot_training_curves(str(train_dir.parent), str(work_dir / 'curves.png'),
                                  metrics=('mIoU',), title='toy segmentation: SwinV2 + UPerNet')
    overlays = sorted((work_dir / 'overlays').rglob('*.png'))
    summary = dict(
        mIoU=metrics['mIoU'], aAcc=metrics['aAcc'], mAcc=metrics['mAcc'],
        per_class_IoU=per_class_iou(test_dir / f'{test_dir.name}.log'),
        target_mIoU=TARGET_MIOU, met_target=metrics['mIoU'] >= TARGET_MIOU,
        seconds=dict(data=round(t_data, 1), train=round(t_train, 1), test=round(t_test, 1),
                     total=round(time.perf_counter() - wall, 1)),
        cores=len(os.sched_getaffinity(0)), omp_threads=int(env['OMP_NUM_THREADS']),
        load_average_start=[round(x, 2) for x in load_start],
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        checkpoint=checkpoint, curves=curves, overlays=len(overlays),
        train_log=str(train_dir), test_log=str(test_dir))
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2))

    print('\n=== toy segmentation demo (SwinV2 + UPerNet from random init) ===')
    print(f"toy val mIoU {summary['mIoU']:.2f} % (target >= {TARGET_MIOU:.0f}: "
          f"{'met' if summary['met_target'] else 'NOT met'}), aAcc {summary['aAcc']:.2f} %, "
          f"mAcc {summary['mAcc']:.2f} %")
    print('per-class IoU: ' + ', '.join(f'{k} {v:.1f}'
                                        for k, v in summary['per_class_IoU'].items()))
    print('wall seconds: ' + ', '.join(f'{k} {v}' for k, v in summary['seconds'].items()))
    print(f"{summary['omp_threads']} OpenMP thread(s) on {summary['cores']} cores; load "
          f"average (1/5/15 min) {summary['load_average_start']} at start, "
          f"{summary['load_average_end']} at end")
    print(f'plot: {curves}; {len(overlays)} overlays under {work_dir / "overlays"}; '
          f'summary: {work_dir / "summary.json"}')


if __name__ == '__main__':
    main()
