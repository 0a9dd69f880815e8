"""Attention in mmengine's FLOP counter, so that mmdet's ``analysis_tools/get_flops.py``
counts what our blocks compute.

mmengine 0.10's ``FlopAnalyzer`` has no handle for ``aten::scaled_dot_product_attention``
and skips it with a warning: every window attention of our backbones (one SDPA call per
regular block, four per shifted one) would count as zero.
"""
from __future__ import annotations

from math import prod
from typing import Any

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Multiply-adds (mmengine's "FLOPs") of ``softmax(q k^T) v`` for ``q (..., N, d)``,
    ``k (..., M, d)``, ``v (..., M, d_v)``: ``prod(...) * N * M * (d + d_v)``."""
    q, k, v = (inputs[i].type().sizes() for i in range(3))
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def count_attention_flops() -> None:
    """Add :func:`sdpa_flop_jit` to the handles every new ``FlopAnalyzer`` starts with
    (idempotent; a handle already there, mmengine's own in a later release, is kept)."""
    from mmengine.analysis import complexity_analysis
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(SDPA_OP, sdpa_flop_jit)
