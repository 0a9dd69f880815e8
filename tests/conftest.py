from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # projects.toy_demo, tools
# The CPU layer's GEMM library by the fixed rule, not by timing (swin_backbone/cpu/
# gemm_choice.py): results never depend on a timer, nothing is written to ~/.cache, and the
# tools started in subprocesses inherit it. tests/test_gemm_choice.py tests the timing.
os.environ['SWIN_BACKBONE_GEMM'] = 'rule'

from synthetic import save_official  # noqa: E402


@pytest.fixture(scope='session')
def official_v1(tmp_path_factory) -> Path:
    """A generated official Swin-T window-7 checkpoint (``{'model': state_dict}``)."""
    path = tmp_path_factory.mktemp('ckpt') / 'swin_tiny_patch4_window7_224.pth'
    save_official(path, version=1, window=7)
    return path


@pytest.fixture(scope='session')
def official_v2(tmp_path_factory) -> Path:
    """A generated official SwinV2-T window-8 checkpoint (``{'model': state_dict}``)."""
    path = tmp_path_factory.mktemp('ckpt') / 'swinv2_tiny_patch4_window8_256.pth'
    save_official(path, version=2, window=8)
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
