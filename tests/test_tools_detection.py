"""End to end through the command lines: tools/train.py, tools/test.py, --resume, and a
2-process torchrun (gloo) run, on the toy detection config with a handful of images.

Slow (each step starts a Python with mmdet): marked ``slow``, still in the default run.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paths import TOY_DETECTION_CONFIG
from toy_runs import free_port, toy_coco_options
from swin_backbone.checkpoint.runner import is_complete_checkpoint
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(TOY_DETECTION_CONFIG)
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def toy_options(tmp_path_factory) -> list[str]:
    """``--cfg-options`` pointing the toy config at 4 train / 2 val images, batch 2,
    one epoch (2 iterations), a checkpoint and a validation per epoch."""
    return toy_coco_options(tmp_path_factory.mktemp('toy_coco')) + [
        'train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _meta(path: Path) -> dict:
    allow_runner_checkpoints()
    return torch.load(path, weights_only=True)['meta']


@pytest.fixture(scope='module')
def trained(tmp_path_factory, toy_options) -> Path:
    work_dir = tmp_path_factory.mktemp('train')
    _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir),
          '--cfg-options', *toy_options])
    return work_dir


def test_train_writes_a_complete_checkpoint(trained: Path) -> None:
    checkpoint = trained / 'epoch_1.pth'
    assert is_complete_checkpoint(str(checkpoint))
    assert (_meta(checkpoint)['epoch'], _meta(checkpoint)['iter']) == (1, 2)
    assert Path((trained / 'last_checkpoint').read_text().strip()) == checkpoint


def test_test_reports_coco_metrics_and_paints(trained: Path, toy_options, tmp_path) -> None:
    out, show = tmp_path / 'preds.pkl', tmp_path / 'vis'
    _run([sys.executable, 'tools/test.py', CONFIG, str(trained / 'epoch_1.pth'),
          '--work-dir', str(tmp_path), '--out', str(out), '--show-dir', str(show),
          '--cfg-options', *toy_options])
    logs = glob.glob(str(tmp_path / '*' / '*.json'))
    assert len(logs) == 1
    metrics = json.loads(Path(logs[0]).read_text().splitlines()[-1])
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)  # pycocotools gives -1 if no data
    assert out.stat().st_size > 0
    assert len(list(show.glob('*.png'))) == 2  # every val image, ground truth | prediction


def test_resume_continues_from_the_saved_iteration(trained: Path, toy_options) -> None:
    result = _run([sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(trained),
                   '--resume', '--cfg-options', *toy_options, 'train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 2' in result.stdout + result.stderr
    assert (_meta(trained / 'epoch_2.pth')['epoch'], _meta(trained / 'epoch_2.pth')['iter']) \
        == (2, 4)


def test_torchrun_two_processes_gloo_frozen_stages(tmp_path: Path, toy_options) -> None:
    """2 CPU processes x batch 1 over 4 images = 2 iterations, with frozen_stages=1 and
    without find_unused_parameters (issue 7 point 6): DDP would raise on a frozen
    parameter that still required grad but received none."""
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS='1')
    result = _run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(tmp_path),
                   '--cfg-options', *toy_options, 'train_dataloader.batch_size=1',
                   'model.backbone.frozen_stages=1'], env=env, timeout=900)
    assert 'Distributed training: True' in result.stdout + result.stderr
    meta = _meta(tmp_path / 'epoch_1.pth')
    assert meta['iter'] == 2
    assert 'find_unused_parameters=False' in meta['cfg']
    assert 'find_unused_parameters=True' not in meta['cfg']
