"""Read the scalars an mmengine Runner logged and plot loss and validation metrics.

``LocalVisBackend`` appends one JSON object per line to
``WORK_DIR/<timestamp>/vis_data/scalars.json``: training lines carry ``loss``, ``lr`` and
``step`` (the global iteration); validation lines carry metrics such as
``coco/bbox_mAP`` or ``mIoU`` and ``step`` (the iteration when the LoggerHook has
``log_metric_by_epoch=False``, else the epoch). A work dir run several times (``--resume``)
has one timestamp folder per run; they are merged in time order, later runs winning.
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Sequence

DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/segm_mAP', 'mIoU', 'aAcc')


def read_scalars(work_dir: str) -> tuple[dict[int, dict], dict[int, dict]]:
    """Training and validation scalars of every run in ``work_dir``.

    Returns:
        ``(train, val)``, each ``{step: {name: value}}``.
    """
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                step = int(entry.pop('step'))
                (train if 'loss' in entry else val).setdefault(step, {}).update(entry)
    return train, val


def plot_training_curves(work_dir: str, out_file: str,
                         metrics: Sequence[str] = DEFAULT_METRICS, title: str = '') -> str:
    """Plot the total loss (left axis, log scale) and validation metrics (right axis)
    against the iteration, into ``out_file`` (PNG).

    Raises:
        FileNotFoundError: ``work_dir`` has no logged training scalars.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train, val = read_scalars(work_dir)
    if not train:
        raise FileNotFoundError(f'no */vis_data/scalars.json with training losses in {work_dir}')
    fig, ax_loss = plt.subplots(figsize=(8, 4.5), dpi=120)
    steps = sorted(train)
    ax_loss.plot(steps, [train[s]['loss'] for s in steps], color='tab:gray', lw=1.2,
                 label='train loss')
    ax_loss.set_yscale('log')
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel('loss (log scale)')
    ax_metric = ax_loss.twinx()
    colors = iter(['tab:blue', 'tab:orange', 'tab:green', 'tab:red'])
    top = 0.0
    for name in metrics:
        points = sorted((s, v[name]) for s, v in val.items() if name in v)
        if points:
            xs, ys = zip(*points)
            ax_metric.plot(xs, ys, 'o-', color=next(colors), label=f'val {name}')
            top = max(top, *ys)
    ax_metric.set_ylabel('validation metric')
    ax_metric.set_ylim(0, 1 if top <= 1 else None)  # mmdet's mAPs are fractions, mIoU a %
    handles = ax_loss.get_legend_handles_labels()
    handles2 = ax_metric.get_legend_handles_labels()
    ax_loss.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc='center right')
    ax_loss.grid(alpha=0.3)
    ax_loss.set_title(title or osp.basename(osp.normpath(work_dir)))
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
    return out_file
