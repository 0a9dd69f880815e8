"""Adaptive average pooling written with ops that export at any input size.

ONNX has no adaptive pooling: the exporters turn ``nn.AdaptiveAvgPool2d`` into an
``AveragePool`` whose kernel and stride are computed from the example's size, which gives
wrong bins at any other size (MMSegmentation's pyramid pooling module pools to 1, 2, 3 and 6
bins). :class:`ExportableAdaptiveAvgPool2d` computes the same bins as PyTorch, bin ``i`` of
``k`` covering rows ``[floor(i H / k), ceil((i + 1) H / k))``, as two small matrix products
whose weights are built from the input's size inside the graph.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ['ExportableAdaptiveAvgPool2d', 'adaptive_pool_matrix', 'replace_adaptive_avg_pools']


def adaptive_pool_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, size)`` averaging weights: row ``i`` is ``1 / len`` over bin ``i``'s span."""
    i = torch.arange(bins, device=like.device)
    start = torch.div(i * size, bins, rounding_mode='floor')
    end = -torch.div(-(i + 1) * size, bins, rounding_mode='floor')  # ceil((i + 1) size / bins)
    j = torch.arange(size, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` with integer output sizes, as ``P_h @ x @ P_w^T``.

    Same bins and, up to float rounding (a weighted sum instead of a sum then a division),
    the same values; ``(B, C, H, W) -> (B, C, out_h, out_w)``.
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        if any(not isinstance(s, int) or s < 1 for s in self.output_size):
            raise ValueError('ExportableAdaptiveAvgPool2d needs integer output sizes >= 1, '
                             f'got {output_size!r}')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = adaptive_pool_matrix(x.shape[-2], self.output_size[0], x)  # (out_h, H)
        cols = adaptive_pool_matrix(x.shape[-1], self.output_size[1], x)  # (out_w, W)
        return rows @ x @ cols.t()

    def extra_repr(self) -> str:
        return f'output_size={self.output_size}'


def replace_adaptive_avg_pools(model: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` inside ``model`` by its exportable twin, in
    place; returns how many were replaced.

    Raises:
        ValueError: a pool with a ``None`` output size (keep the input's size along it).
    """
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.AdaptiveAvgPool2d:
                setattr(parent, name, ExportableAdaptiveAvgPool2d(child.output_size))
                replaced += 1
    return replaced
