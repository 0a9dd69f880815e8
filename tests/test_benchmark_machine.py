"""The benchmark's machine description: arithmetic and parsing only (no timing asserted)."""
from __future__ import annotations

import sys

import pytest
import torch

from paths import REPO

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
import machine  # noqa: E402


def test_layer_shapes_are_swin_t_at_800x1344() -> None:
    shapes = {name: (m, k, n) for name, m, k, n in machine.swin_t_layer_shapes((800, 1344))}
    assert shapes['stage 1 qkv'] == (203 * 336, 96, 288)  # 200 x 336 tokens, rows padded to 7s
    assert shapes['stage 1 fc1'] == (200 * 336, 96, 384)
    assert shapes['stage 4 fc2'] == (25 * 42, 3072, 768)
    assert len(shapes) == 12


def test_ceiling_share_counts_two_flops_per_multiply_add() -> None:
    assert machine.ceiling_share(gmacs=100., seconds=2., ceiling_gflops=200.) == 0.5


def test_isa_flags_names_every_flag_the_kernels_depend_on() -> None:
    assert set(machine.isa_flags()) == {'AVX2', 'AVX-512', 'AVX512_BF16', 'AMX-BF16', 'AMX'}


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_matmul_rate_is_positive_and_finite(dtype: torch.dtype) -> None:
    rate = machine.matmul_gflops(64, 32, 16, dtype, repeats=1)
    assert 0 < rate < float('inf')
