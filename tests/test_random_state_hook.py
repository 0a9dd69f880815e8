"""RandomStateHook's pieces: the state round trip and how tools/train.py adds the hook.

Resuming with it (exact losses, several processes, other world sizes) is tested through real
runs in tests/test_runner_checkpoint.py and tests/test_interrupted_training.py. Here, where it
gathers the ranks' states: tiny Runners with a fake 2-process world count the gathers.
"""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.runner import Runner

from paths import config
from runner_utils import _Linear, _Random
from swin_backbone.engine import hooks
from swin_backbone.engine.hooks import (RandomStateHook, get_rng_state, set_rng_state,
                                        with_random_state_hook)

REPO = Path(__file__).resolve().parents[1]


def _draw() -> tuple:
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()


def test_state_survives_weights_only_loading_without_any_allow_list() -> None:
    np.random.randn()  # leaves a cached Gaussian (has_gauss=1), which must come back too
    buffer = io.BytesIO()
    torch.save({'rng_states': [get_rng_state()]}, buffer)
    expected = _draw()
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        buffer.seek(0)
        (state,) = torch.load(buffer, weights_only=True)['rng_states']
    finally:
        torch.serialization.add_safe_globals(allowed)
    assert state['numpy']['has_gauss'] == 1
    set_rng_state(state)
    assert _draw() == expected


def test_added_once_and_after_the_configs_own_hooks() -> None:
    ema = dict(type='EMAHook', momentum=2e-4)
    assert with_random_state_hook(None) == [dict(type='swin_backbone.RandomStateHook')]
    assert with_random_state_hook([ema]) == [ema, dict(type='swin_backbone.RandomStateHook')]
    for listed in ('swin_backbone.RandomStateHook', 'RandomStateHook', RandomStateHook):
        assert with_random_state_hook([dict(type=listed), ema]) == [dict(type=listed), ema]
    assert with_random_state_hook([RandomStateHook()])[0].__class__ is RandomStateHook


def test_train_tool_adds_it_to_every_config() -> None:
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        from train import build_config, parse_args
    finally:
        sys.path.remove(str(REPO / 'tools'))
    for name in ('mask_rcnn_swin_t.py', 'upernet_swin_t.py'):
        cfg = build_config(parse_args([str(config(name))]))
        assert [h['type'] for h in cfg.custom_hooks].count('swin_backbone.RandomStateHook') == 1


class _Phase(Hook):
    """Runs first; ``now`` names the step the other hooks are at: ``('iter', n)`` after
    training iteration n, ``('epoch', n)`` after epoch n, ``('val', n)`` before the validation
    that follows iteration (epoch) n."""

    priority = 'HIGHEST'

    def __init__(self, by_epoch: bool) -> None:
        self.by_epoch = by_epoch
        self.now: tuple[str, int] | None = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.now = ('iter', runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        self.now = ('epoch', runner.epoch + 1)

    def before_val(self, runner) -> None:
        self.now = ('val', runner.epoch if self.by_epoch else runner.iter)


class _RisingScore(BaseMetric):
    """``score`` 1, 2, 3, ...: every validation gives a new best checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results: list) -> dict:
        self.evaluations += 1
        return {'score': float(self.evaluations)}


def _gathers(monkeypatch: pytest.MonkeyPatch, work_dir: Path, by_epoch: bool,
             checkpoint: dict, val_interval: int | None = None) -> list[tuple[str, int]]:
    """Train a tiny Runner (4 iterations an epoch; 10 iterations or 5 epochs) with
    ``RandomStateHook`` in a fake 2-process world and the ``CheckpointHook`` ``checkpoint``
    (and a validation every ``val_interval``); return where the hook gathered. Checks that
    every checkpoint saved holds the gathered states of both ranks."""
    phase = _Phase(by_epoch)
    gathered: list[tuple[str, int]] = []

    def fake_all_gather(state: hooks.RngState) -> tuple[list[hooks.RngState], list]:
        gathered.append(phase.now)
        return [state, state], []

    monkeypatch.setattr(hooks, 'get_world_size', lambda: 2)
    monkeypatch.setattr(hooks, '_all_gather_states', fake_all_gather)
    val = {}
    if val_interval is not None:
        val = dict(val_dataloader=dict(dataset=_Random(), batch_size=4, num_workers=0,
                                       sampler=dict(type='DefaultSampler', shuffle=False),
                                       collate_fn=dict(type='default_collate')),
                   val_cfg=dict(), val_evaluator=Evaluator([_RisingScore()]))
    loop = (dict(by_epoch=True, max_epochs=5) if by_epoch
            else dict(by_epoch=False, max_iters=10))
    torch.manual_seed(0)
    runner = Runner(
        model=_Linear(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_Random(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(**loop, **({} if val_interval is None else
                                  dict(val_interval=val_interval))),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', **checkpoint)),
        custom_hooks=[phase, RandomStateHook()], randomness=dict(seed=0),
        default_scope='mmengine', log_level='WARNING', experiment_name=work_dir.name,
        **val)
    runner.train()
    saved = sorted(work_dir.glob('*.pth'))
    assert saved
    for path in saved:
        assert len(torch.load(path, weights_only=False)['rng_states']) == 2, path.name
    return gathered


def _saved(work_dir: Path, prefix: str) -> list[int]:
    return sorted(int(p.stem.rsplit('_', 1)[1]) for p in work_dir.glob(f'{prefix}_*.pth'))


@pytest.mark.parametrize('checkpoint, expected', [
    (dict(interval=4, save_last=True), [4, 8, 10]),
    (dict(interval=4, save_last=False, save_begin=5), [5, 9]),
    (dict(interval=-1, save_last=True), [10]),
])
def test_gathers_only_where_an_iteration_checkpoint_is_saved(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checkpoint: dict,
        expected: list[int]) -> None:
    gathered = _gathers(monkeypatch, tmp_path, False, dict(by_epoch=False, **checkpoint))
    assert gathered == [('iter', n) for n in expected]
    assert _saved(tmp_path, 'iter') == expected


def test_gathers_before_every_validation_with_save_best(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gathered = _gathers(monkeypatch, tmp_path, False, dict(
        by_epoch=False, interval=4, save_last=True, save_best='score', rule='greater'),
        val_interval=3)
    assert gathered == [('val', 3), ('iter', 4), ('val', 6), ('iter', 8), ('val', 9),
                        ('iter', 10), ('val', 10)]
    # after a new best (once it has saved one) CheckpointHook.after_val_epoch also saves the
    # regular checkpoint again, here iter_6 and iter_9: resumable, so with every rank's states
    assert _saved(tmp_path, 'iter') == [4, 6, 8, 9, 10]
    assert _saved(tmp_path, 'best_score_iter') == [10]  # the earlier bests were replaced


def test_no_gather_before_validation_without_save_best(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gathered = _gathers(monkeypatch, tmp_path, False,
                        dict(by_epoch=False, interval=4, save_last=True), val_interval=3)
    assert gathered == [('iter', 4), ('iter', 8), ('iter', 10)]


@pytest.mark.parametrize('checkpoint, expected', [
    (dict(interval=2, save_last=True), [2, 4, 5]),
    (dict(interval=2, save_last=False, save_begin=3), [3, 5]),
])
def test_gathers_only_where_an_epoch_checkpoint_is_saved(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checkpoint: dict,
        expected: list[int]) -> None:
    gathered = _gathers(monkeypatch, tmp_path, True, dict(by_epoch=True, **checkpoint))
    assert gathered == [('epoch', n) for n in expected]
    assert _saved(tmp_path, 'epoch') == expected


def test_epoch_checkpoints_with_save_best_gather_before_validation(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gathered = _gathers(monkeypatch, tmp_path, True, dict(
        by_epoch=True, interval=2, save_last=True, save_best='score', rule='greater'),
        val_interval=2)
    assert gathered == [('epoch', 2), ('val', 2), ('epoch', 4), ('val', 4), ('epoch', 5),
                        ('val', 5)]
    assert _saved(tmp_path, 'epoch') == [2, 4, 5]
    assert _saved(tmp_path, 'best_score_epoch') == [5]
