"""Comparisons whose tolerance is relative to a tensor's scale, not element-wise.

Float rounding differs between GEMM libraries and CPU families (oneDNN on AMX and on AVX-512
alone, MKL): an element near zero can differ by more than any element-wise ``rtol`` allows
while the tensor agrees to float32 precision. ``max|a - b| <= rel * max|b|`` holds on both.
"""
from __future__ import annotations

import torch


def max_relative_to_scale(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` in float64 (0 when both are all zero)."""
    a, b = a.double(), b.double()
    scale = float(b.abs().max())
    diff = float((a - b).abs().max())
    return diff / scale if scale > 0 else diff


def assert_close_to_scale(a: torch.Tensor, b: torch.Tensor, rel: float, name: str = '') -> None:
    """``max|a - b| <= rel * max|b|``, with equal shapes and both finite."""
    assert a.shape == b.shape, (name, a.shape, b.shape)
    assert torch.isfinite(a).all() and torch.isfinite(b).all(), name
    err = max_relative_to_scale(a, b)
    assert err <= rel, f'{name}: max|a - b| / max|b| = {err:.3g} > {rel:g}'
