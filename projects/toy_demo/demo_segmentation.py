"""Toy segmentation demo: generate data -> train from scratch -> test -> overlays, plot.

Runs ``tools/train.py`` and ``tools/test.py`` as subprocesses, exactly as a user would,
then reads what mmengine logged and prints a summary. Everything lands in the work dir:
``curves.png`` (training loss and val mIoU over iterations), ``overlays/`` (ground truth
| prediction, painted by mmseg's ``SegLocalVisualizer`` through ``--show-dir``),
``summary.json``, the checkpoint and the logs.

Usage: python projects/toy_demo/demo_segmentation.py [--work-dir work_dirs/demo_seg]
                                         [--data-root data/toy_seg] [--seed 0]
                                         [--data-seed 0] [--config CONFIG]
                                         [--cfg-options ...]

``make demo-seg SEED=1 DATA_SEED=1`` passes the two seeds through.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from projects.toy_demo.toy_segmentation import SHAPE_CLASSES, ToySpec, generate  # noqa: E402
from projects.toy_demo.training_curves import plot_training_curves  # noqa: E402

CONFIG = Path(__file__).parent / 'configs' / 'upernet_swinv2-toy-p4-w8_1xb4-1600_toy-seg-128x128.py'
# Targets in percent, as mmseg's IoUMetric reports them (docs/segmentation.md).
TARGETS = dict(shapes=60.0, objects=70.0, every_object_class=40.0)
BACKGROUND = 'background'


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


def class_groups(per_class: dict[str, float],
                 shapes: tuple[str, ...] = SHAPE_CLASSES) -> dict[str, float]:
    """Mean IoU over the object classes (all but background), over the shape classes, and
    the worst object class; classes absent from the validation set (nan) are left out."""
    objects = {k: v for k, v in per_class.items() if k != BACKGROUND and v == v}
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float('nan')
    return dict(objects=mean(list(objects.values())),
                shapes=mean([v for k, v in objects.items() if k in shapes]),
                worst_object_class=min(objects.values(), default=float('nan')))


def meets_targets(groups: dict[str, float]) -> bool:
    return (groups['shapes'] >= TARGETS['shapes'] and groups['objects'] >= TARGETS['objects']
            and groups['worst_object_class'] >= TARGETS['every_object_class'])


def iou_table(per_class: dict[str, float], groups: dict[str, float]) -> str:
    """The per-class IoU and the group means as a Markdown table."""
    rows = dict(per_class)
    rows['mean over the object classes'] = groups['objects']
    rows['mean over the shape classes'] = groups['shapes']
    width = max(map(len, rows))
    lines = [f'| {"class":<{width}} | IoU % |', f'|{"-" * (width + 2)}|------:|']
    return '\n'.join(lines + [f'| {name:<{width}} | {iou:5.1f} |' for name, iou in rows.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'demo_seg')
    parser.add_argument('--data-root', type=Path, default=REPO / 'data' / 'toy_seg')
    parser.add_argument('--config', type=Path, default=CONFIG,
                        help='a variant of the toy config (docs/segmentation.md: Measured)')
    parser.add_argument('--seed', type=int, default=0,
                        help="training seed (the config's randomness.seed)")
    parser.add_argument('--data-seed', type=int, default=ToySpec.seed,
                        help='seed of the generated toy set')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to tools/train.py and tools/test.py')
    args = parser.parse_args()
    work_dir = args.work_dir.resolve()
    wall = time.perf_counter()
    load_start = os.getloadavg()

    start = time.perf_counter()
    generate(args.data_root, ToySpec(seed=args.data_seed))
    t_data = time.perf_counter() - start

    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', str(free_cores()))  # the user's choice wins
    root = str(args.data_root.resolve())
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += [f'randomness.seed={args.seed}', *args.cfg_options]
    t_train, train_dir = run_tool(
        'train.py', [str(args.config), '--work-dir', str(work_dir), '--cfg-options', *options],
        work_dir, env)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    t_test, test_dir = run_tool(
        'test.py', [str(args.config), checkpoint, '--work-dir', str(work_dir),
                    '--show-dir', str(work_dir / 'overlays'), '--cfg-options', *options],
        work_dir, env)

    metrics = json.loads((test_dir / f'{test_dir.name}.json').read_text())
    curves = plot_training_curves(str(train_dir.parent), str(work_dir / 'curves.png'),
                                  metrics=('mIoU',), title='toy segmentation: SwinV2 + UPerNet')
    overlays = sorted((work_dir / 'overlays').rglob('*.png'))
    per_class = per_class_iou(test_dir / f'{test_dir.name}.log')
    groups = class_groups(per_class)
    summary = dict(
        mIoU=metrics['mIoU'], aAcc=metrics['aAcc'], mAcc=metrics['mAcc'],
        per_class_IoU=per_class, mIoU_groups={k: round(v, 2) for k, v in groups.items()},
        targets=TARGETS,
        met_target=meets_targets(groups), seed=args.seed, data_seed=args.data_seed,
        seconds=dict(data=round(t_data, 1), train=round(t_train, 1), test=round(t_test, 1),
                     total=round(time.perf_counter() - wall, 1)),
        cores=len(os.sched_getaffinity(0)), omp_threads=int(env['OMP_NUM_THREADS']),
        load_average_start=[round(x, 2) for x in load_start],
        load_average_end=[round(x, 2) for x in os.getloadavg()],
        checkpoint=checkpoint, curves=curves, overlays=len(overlays),
        train_log=str(train_dir), test_log=str(test_dir))
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2))

    print('\n=== toy segmentation demo (SwinV2 + UPerNet from random init) ===')
    print(f"seed {args.seed}, data seed {args.data_seed}; toy val mIoU {summary['mIoU']:.2f} % "
          f"(all classes), aAcc {summary['aAcc']:.2f} %, mAcc {summary['mAcc']:.2f} %")
    print(iou_table(per_class, groups))
    print(f"targets: shapes >= {TARGETS['shapes']:.0f}, objects >= {TARGETS['objects']:.0f}, "
          f"every object class >= {TARGETS['every_object_class']:.0f} (worst "
          f"{groups['worst_object_class']:.1f}): {'met' if summary['met_target'] else 'NOT met'}")
    print('wall seconds: ' + ', '.join(f'{k} {v}' for k, v in summary['seconds'].items()))
    print(f"{summary['omp_threads']} OpenMP thread(s) on {summary['cores']} cores; load "
          f"average (1/5/15 min) {summary['load_average_start']} at start, "
          f"{summary['load_average_end']} at end")
    print(f'plot: {curves}; {len(overlays)} overlays under {work_dir / "overlays"}; '
          f'summary: {work_dir / "summary.json"}')


if __name__ == '__main__':
    main()
