"""ZeRO-1 under mmengine's plain Runner (``swin_backbone.engine.zero``): 2 gloo processes
train the toy detector with the layer-decay constructor's parameter groups, as DDP does,
save, resume, and hold half the optimizer state each.

Slow (each run starts two Pythons with mmdet): marked ``slow``, still in the default run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paths import REPO, TOY_DETECTION_CONFIG
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints
from toy_runs import free_port, toy_coco_options

pytestmark = pytest.mark.slow
ZERO = ['optim_wrapper.optimizer.type=swin_backbone.ZeroRedundancyOptimizer',
        'optim_wrapper.optimizer.optimizer_type=AdamW']


@pytest.fixture(scope='module')
def options(tmp_path_factory) -> list[str]:
    """4 train images, batch 1 on each of 2 ranks: 2 iterations per epoch, 2 epochs, a
    checkpoint per epoch; layer-wise lr decay (one parameter group per layer and decay)."""
    return toy_coco_options(tmp_path_factory.mktemp('toy_coco')) + [
        'train_dataloader.batch_size=1', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
        'optim_wrapper.constructor=swin_backbone.LayerDecayOptimWrapperConstructor',
        'optim_wrapper.paramwise_cfg.decay_rate=0.9']


def _torchrun(work_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', str(free_port()), str(REPO / 'tests' / 'zero_train.py'),
         str(TOY_DETECTION_CONFIG), '--work-dir', str(work_dir), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _losses(out: str) -> dict[tuple[int, int], float]:
    """``{(rank, iteration): loss}`` from ``rank<r> loss <iter> <value>`` lines."""
    return {(int(r), int(i)): float(v)
            for r, i, v in re.findall(r'^rank(\d) loss (\d+) (\S+)$', out, re.M)}


def _state_bytes(out: str) -> list[int]:
    return [int(n) for _, n in sorted(re.findall(r'^rank(\d) optimizer_state_bytes (\d+)$',
                                                 out, re.M))]


@pytest.fixture(scope='module')
def ddp(tmp_path_factory, options) -> str:
    return _torchrun(tmp_path_factory.mktemp('ddp'), '--cfg-options', *options).stdout


@pytest.fixture(scope='module')
def zero(tmp_path_factory, options) -> tuple[Path, str]:
    work_dir = tmp_path_factory.mktemp('zero')
    return work_dir, _torchrun(work_dir, '--cfg-options', *options, *ZERO).stdout


def test_zero_trains_as_ddp_with_half_the_optimizer_state_per_rank(ddp, zero) -> None:
    work_dir, out = zero
    expected, got = _losses(ddp), _losses(out)
    assert sorted(expected) == sorted(got) == [(r, i) for r in (0, 1) for i in (1, 2, 3, 4)]
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    full, shards = _state_bytes(ddp), _state_bytes(out)
    assert full[0] == full[1] > 0
    assert sum(shards) == full[0]  # every parameter's state on exactly one rank
    assert max(shards) <= 0.55 * full[0], (shards, full)
    # The checkpoint holds the whole state, consolidated on rank 0.
    allow_runner_checkpoints()
    optimizer = torch.load(work_dir / 'epoch_2.pth', weights_only=True)['optimizer']
    saved = sum(t.numel() * t.element_size() for state in optimizer['state'].values()
                for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    assert saved == full[0]
    assert len({g['lr'] for g in optimizer['param_groups']}) > 2  # the layer-decay groups
    assert 'refused: ZeroRedundancyOptimizer.state_dict(): the optimizer shards were not ' \
        'consolidated' in out


def test_zero_resume_replays_the_uninterrupted_run(tmp_path, options, zero) -> None:
    work_dir, out = zero
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    shutil.copy(work_dir / 'epoch_1.pth', resumed_dir / 'epoch_1.pth')
    resumed = _torchrun(resumed_dir, '--resume', str(resumed_dir / 'epoch_1.pth'),
                        '--cfg-options', *options, *ZERO).stdout
    expected, got = _losses(out), _losses(resumed)
    assert sorted(got) == [(r, i) for r in (0, 1) for i in (3, 4)]
    for key in got:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


def test_mmengines_own_zero_optimizer_is_refused_before_it_hangs(tmp_path, options) -> None:
    result = _torchrun(tmp_path, '--cfg-options', *options,
                       'optim_wrapper.optimizer.type=ZeroRedundancyOptimizer',
                       'optim_wrapper.optimizer.optimizer_type=AdamW', check=False)
    assert result.returncode != 0
    assert "hang at its first save. Use type='swin_backbone.ZeroRedundancyOptimizer'" in \
        result.stdout + result.stderr
