"""Ours against independent implementations loaded from the same official-layout weights."""
from __future__ import annotations

import pytest
import torch

from reference import parity_with_mmdet, parity_with_timm

FP32_TOL = 1e-4  # the bound for every output stage
FP64_TOL = 1e-9  # same semantics: only float64 rounding remains


@pytest.mark.parametrize('dtype, tol', [(torch.float32, FP32_TOL), (torch.float64, FP64_TOL)])
def test_v2_matches_timm_swinv2_tiny_window8_256(official_v2, dtype, tol):
    diffs = parity_with_timm(2, str(official_v2), (256, 256), dtype)
    assert len(diffs) == 4 and max(diffs) <= tol, diffs


@pytest.mark.parametrize('dtype, tol', [(torch.float32, FP32_TOL), (torch.float64, FP64_TOL)])
def test_v1_matches_timm_swin_tiny_window7_224(official_v1, dtype, tol):
    diffs = parity_with_timm(1, str(official_v1), (224, 224), dtype)
    assert len(diffs) == 4 and max(diffs) <= tol, diffs


@pytest.mark.parametrize('dtype, tol', [(torch.float32, FP32_TOL), (torch.float64, FP64_TOL)])
def test_v1_matches_mmdet_at_odd_size(official_v1, dtype, tol):
    # 509x643: every stage (128x161 .. 16x21) exceeds the window and needs padding.
    diffs = parity_with_mmdet(str(official_v1), (509, 643), dtype)
    assert len(diffs) == 4 and max(diffs) <= tol, diffs


def test_v1_differs_from_mmdet_where_mmdet_shifts_a_single_window(official_v1):
    # At 224x224 stage 4 is one 7x7 window: the official model (and we) do not shift there,
    # mmdet does. Stages 1-3 agree; stage 4 must not (guards the no-shift rule itself).
    diffs = parity_with_mmdet(str(official_v1), (224, 224))
    assert max(diffs[:3]) <= FP32_TOL and diffs[3] > 1e-2, diffs
