"""RandomStateHook's pieces: the state round trip and how tools/train.py adds the hook.

Resuming with it (exact losses, several processes, other world sizes) is tested through real
runs in tests/test_runner_checkpoint.py and tests/test_interrupted_training.py.
"""
from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import numpy as np
import torch

from swin_backbone import RandomStateHook
from swin_backbone.hooks import get_rng_state, set_rng_state, with_random_state_hook

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
    for config in ('mask_rcnn_swin_t.py', 'upernet_swin_t.py'):
        cfg = build_config(parse_args([str(REPO / 'configs' / config)]))
        assert [h['type'] for h in cfg.custom_hooks].count('swin_backbone.RandomStateHook') == 1
