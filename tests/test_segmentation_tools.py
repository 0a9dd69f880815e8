"""End to end through the command-line tools: a 2-iteration toy run, then a test run.

``tools/train.py`` and ``tools/test.py`` run as subprocesses on a tiny generated toy set;
the test run's mIoU (mmseg's ``IoUMetric``) is then recomputed here from the predicted
label maps that ``--out`` saves, so the number is checked, not just present.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from paths import TOY_SEGMENTATION_CONFIG
from projects.toy_demo.toy_segmentation import CLASSES, ToySpec, generate

REPO = Path(__file__).resolve().parents[1]
CONFIG = TOY_SEGMENTATION_CONFIG


def _tool(script: str, *args: str) -> None:
    result = subprocess.run([sys.executable, str(REPO / 'tools' / script), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _demo_module():
    spec = importlib.util.spec_from_file_location(
        'demo_segmentation', REPO / 'projects' / 'toy_demo' / 'demo_segmentation.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _miou(pred_dir: Path, label_dir: Path) -> float:
    """mIoU in percent over the classes present in prediction or ground truth.

    ``pred_dir`` holds IoUMetric's saved maps (class + 1, as ``reduce_zero_label``
    data are written back); ground-truth 0 is ignored, classes are ``label - 1``.
    """
    k = len(CLASSES)
    inter, union = np.zeros(k), np.zeros(k)
    preds = sorted(pred_dir.glob('*.png'))
    assert preds
    for path in preds:
        pred = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(int) - 1
        gt = cv2.imread(str(label_dir / path.name), cv2.IMREAD_UNCHANGED).astype(int) - 1
        valid = gt >= 0
        pred, gt = pred[valid], gt[valid]
        inter += np.bincount(gt[pred == gt], minlength=k)
        union += np.bincount(gt, minlength=k) + np.bincount(pred, minlength=k)
    union -= inter
    present = union > 0
    return float(100 * np.mean(inter[present] / union[present]))


@pytest.mark.slow
def test_two_iteration_train_then_test_yields_iou_metric_miou(tmp_path: Path) -> None:
    data = generate(tmp_path / 'toy', ToySpec(num_train=8, num_val=4, sides=(40, 80), seed=3))
    work = tmp_path / 'work'
    options = [f'{split}_dataloader.dataset.data_root={data}' for split in
               ('train', 'val', 'test')]
    options += [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test') for key in
                ('num_workers=0', 'persistent_workers=False')]
    options += ['train_dataloader.batch_size=2']  # val / test: the config's 1 (sizes differ)
    options += ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                'default_hooks.checkpoint.interval=2']
    _tool('train.py', str(CONFIG), '--work-dir', str(work), '--cfg-options', *options)
    checkpoint = work / 'iter_2.pth'
    assert checkpoint.is_file()

    before = set(work.iterdir())
    _tool('test.py', str(CONFIG), str(checkpoint), '--work-dir', str(work),
          '--out', str(tmp_path / 'pred'), '--show-dir', str(tmp_path / 'show'),
          '--cfg-options', *options, 'default_hooks.visualization.interval=1')
    (run,) = [p for p in set(work.iterdir()) - before if p.is_dir()]
    metrics = json.loads((run / f'{run.name}.json').read_text())
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert 0 <= metrics['mIoU'] <= 100
    # IoUMetric rounds to two decimals.
    assert metrics['mIoU'] == pytest.approx(
        _miou(tmp_path / 'pred', data / 'annotations' / 'validation'), abs=0.006)
    # The demo driver's reading of IoUMetric's per-class table agrees with the mIoU.
    per_class = _demo_module().per_class_iou(run / f'{run.name}.log')
    assert tuple(per_class) == CLASSES
    present = [v for v in per_class.values() if not math.isnan(v)]
    assert sum(present) / len(present) == pytest.approx(metrics['mIoU'], abs=0.01)
    # --show-dir, painting every batch: one ground truth | prediction image per val image.
    painted = sorted(p.name for p in (tmp_path / 'show').rglob('*.png'))
    assert painted == [f'test_toy_0000{i}.jpg_0.png' for i in range(4)]


def test_summary_groups_the_per_class_iou_and_checks_every_target() -> None:
    demo = _demo_module()
    per_class = dict(stripes=90.0, checker=80.0, circle=70.0, square=60.0, triangle=50.0,
                     star=40.0)
    groups = demo.class_groups(per_class)
    assert groups['objects'] == pytest.approx((90 + 80 + 70 + 60 + 50 + 40) / 6)  # 65
    assert groups['shapes'] == pytest.approx((70 + 60 + 50 + 40) / 4)  # 55: no texture
    assert groups['worst_object_class'] == 40.0
    assert not demo.meets_targets(groups)  # objects 65 < 70, shapes 55 < 60
    # a background class, where a data set has one, is no object class
    assert demo.class_groups(dict(per_class, background=1.0)) == groups
    good = dict(per_class, circle=90.0, square=80.0, triangle=70.0, star=45.0)
    assert demo.meets_targets(demo.class_groups(good))  # 76.25 shapes, 80.8 objects, 45
    weak = dict(good, star=39.0, square=96.0)  # the means still pass, one class does not
    assert demo.class_groups(weak)['shapes'] >= 60 and not demo.meets_targets(
        demo.class_groups(weak))
    # a class absent from the validation set (nan in IoUMetric's table) is left out
    absent = demo.class_groups(dict(per_class, stripes=float('nan')))
    assert absent['objects'] == pytest.approx((80 + 70 + 60 + 50 + 40) / 5)
    table = demo.iou_table(per_class, groups).splitlines()
    assert len(table) == 2 + len(per_class) + 2
    cells = [[c.strip() for c in row.split('|')[1:3]] for row in table]
    assert cells[0] == ['class', 'IoU %'] and cells[2] == ['stripes', '90.0']
    assert cells[-2:] == [['mean over the object classes', '65.0'],
                          ['mean over the shape classes', '55.0']]
    assert len({len(row) for row in table}) == 1  # aligned columns
