"""Toy segmentation demo: generate data -> train from scratch -> test -> overlays, plot.

Runs ``tools/train.py`` and ``tools/test.py`` as subprocesses, exactly as a user would,
then reads the scalars mmengine logged and prints a summary. Everything lands in the
work dir: ``curves.png`` (loss and val mIoU over iterations), ``overlays/`` (ground
truth | prediction, painted by mmseg's ``SegLocalVisualizer`` via ``--show-dir``),
``summary.json`` and the usual checkpoint and logs.

Usage: python tools/demo_segmentation.py [--work-dir work_dirs/demo_seg]
                                         [--data-root data/toy_seg] [--cfg-options ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swin_backbone.toy_segmentation import ToySpec, generate  # noqa: E402

CONFIG = REPO / 'configs' / 'upernet_swin_t_toy.py'
TARGET_MIOU = 60.0  # percent, as mmseg's IoUMetric reports it


def run_tool(script: str, args: list[str], log_dir: Path) -> tuple[float, Path]:
    """Run ``tools/<script>`` and return (seconds, the timestamped folder it logged to)."""
    before = {p for p in log_dir.iterdir() if p.is_dir()} if log_dir.exists() else set()
    start = time.perf_counter()
    cmd = [sys.executable, str(REPO / 'tools' / script), *args]
    print('$', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    new = sorted(p for p in log_dir.iterdir() if p.is_dir() and p not in before
                 and (p / 'vis_data').is_dir())
    if not new:
        raise RuntimeError(f'{script} wrote no log folder under {log_dir}')
    return time.perf_counter() - start, new[-1]


def read_scalars(run_dir: Path) -> list[dict]:
    """The records of mmengine's ``vis_data/scalars.json`` (one JSON object per line)."""
    lines = (run_dir / 'vis_data' / 'scalars.json').read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_curves(records: list[dict], out: Path) -> None:
    """Training loss and validation mIoU against the iteration, as a two-panel PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train = [r for r in records if 'loss' in r]
    val = [r for r in records if 'mIoU' in r]
    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r['iter'] for r in train], [r['loss'] for r in train], label='total')
    ax_loss.plot([r['iter'] for r in train], [r['decode.loss_ce'] for r in train],
                 label='decode head CE')
    ax_loss.set(xlabel='iteration', ylabel='loss', title='training loss', yscale='log')
    ax_loss.legend()
    ax_miou.plot([r['step'] for r in val], [r['mIoU'] for r in val], 'o-')
    ax_miou.axhline(TARGET_MIOU, color='grey', ls='--', label=f'target {TARGET_MIOU:.0f}')
    ax_miou.set(xlabel='iteration', ylabel='mIoU (%)', title='toy val mIoU', ylim=(0, 100))
    ax_miou.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'demo_seg')
    parser.add_argument('--data-root', type=Path, default=REPO / 'data' / 'toy_seg')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to tools/train.py and tools/test.py')
    args = parser.parse_args()
    work_dir = args.work_dir.resolve()
    wall = time.perf_counter()

    start = time.perf_counter()
    generate(args.data_root, ToySpec())
    t_data = time.perf_counter() - start

    root = str(args.data_root.resolve())
    options = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]
    options += args.cfg_options
    t_train, train_dir = run_tool(
        'train.py', [str(CONFIG), '--work-dir', str(work_dir), '--cfg-options', *options],
        work_dir)
    checkpoint = (work_dir / 'last_checkpoint').read_text().strip()
    t_test, test_dir = run_tool(
        'test.py', [str(CONFIG), checkpoint, '--work-dir', str(work_dir),
                    '--show-dir', str(work_dir / 'overlays'), '--cfg-options', *options],
        work_dir)

    test_metrics = json.loads((test_dir / f'{test_dir.name}.json').read_text())
    plot_curves(read_scalars(train_dir), work_dir / 'curves.png')
    overlays = sorted((work_dir / 'overlays').rglob('*.png'))
    summary = dict(
        mIoU=test_metrics['mIoU'], aAcc=test_metrics['aAcc'], mAcc=test_metrics['mAcc'],
        target_mIoU=TARGET_MIOU, met_target=test_metrics['mIoU'] >= TARGET_MIOU,
        seconds=dict(data=round(t_data, 1), train=round(t_train, 1), test=round(t_test, 1),
                     total=round(time.perf_counter() - wall, 1)),
        cpu_threads=os.cpu_count(), load_average=[round(x, 2) for x in os.getloadavg()],
        checkpoint=checkpoint, curves=str(work_dir / 'curves.png'),
        overlays=len(overlays), train_log=str(train_dir), test_log=str(test_dir))
    (work_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    print('\n=== toy segmentation demo ===')
    print(f"toy val mIoU {summary['mIoU']:.2f} % (target >= {TARGET_MIOU:.0f}: "
          f"{'met' if summary['met_target'] else 'NOT met'}), aAcc {summary['aAcc']:.2f} %, "
          f"mAcc {summary['mAcc']:.2f} %")
    print('wall seconds: ' + ', '.join(f'{k} {v}' for k, v in summary['seconds'].items()))
    print(f"load average (1, 5, 15 min) at the end: {summary['load_average']}")
    print(f'plot: {work_dir / "curves.png"}; {len(overlays)} overlays under '
          f'{work_dir / "overlays"}; summary: {work_dir / "summary.json"}')


if __name__ == '__main__':
    main()
