"""The pieces of a Swin stage: patch embedding, the V1 and V2 blocks, patch merging, the stage.

Maps between blocks are channel-last, ``(B, H, W, C)``. The V2 classes subclass the V1 ones
and override only what differs (torchvision's pattern): the block's norm placement and
attention, the merging's norm placement.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from .attention import CosineWindowAttention, WindowAttention, upcast
from .window import (attend_by_region, cyclic_shift, edge_masks, known_zero, pad_to,
                     window_grid, window_partition, window_reverse)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (or float64) for every input dtype.

    Returns a half-precision input in the weight's dtype: float32 under autocast (float32
    weights), which keeps the residual stream and V2's post-norms in full precision, and
    the model's own dtype after ``model.half()`` / ``model.bfloat16()``. Other inputs keep
    their dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = upcast(self.weight)
        out = F.layer_norm(x.to(weight.dtype), self.normalized_shape, weight,
                           upcast(self.bias), self.eps)
        half = x.dtype in (torch.float16, torch.bfloat16)
        return out.to(self.weight.dtype if half else x.dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample; ``drop_prob=1`` drops the whole branch (returns zeros)."""

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep if keep > 0. else x * mask

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class Mlp(nn.Sequential):
    """``Linear(C, rC) -> GELU -> Dropout -> Linear(rC, C) -> Dropout`` with official names."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution and LayerNorm.

    ``(B, C_in, H, W) -> (B, ceil(H / p), ceil(W / p), C)``; H and W are zero-padded
    right/bottom to a multiple of the patch size first.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[2:]
        # The padded size as (patches) * p rather than H + (-H % p): a symbolic size of that
        # form is one the exporter can prove positive.
        pad_h, pad_w = (h + p - 1) // p * p - h, (w + p - 1) // p * p - w
        if not known_zero(pad_h, pad_w):
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, C, H', W') -> (B, H', W', C)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood, normalise the 4C channels, project to 2C (V1).

    ``(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), 2C)``; odd sizes are zero-padded first.
    The neighbours are concatenated in the official order (top-left, bottom-left, top-right,
    bottom-right).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNorm(4 * dim)

    @staticmethod
    def gather_neighbours(x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), 4C)``, neighbours in channel
        blocks ``2 * column + row`` (the official order)."""
        b, h, w, c = x.shape
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        x = pad_to(x, (2 * h2, 2 * w2)).view(b, h2, 2, w2, 2, c)  # (B, H2, row, W2, col, C)
        return x.permute(0, 1, 3, 4, 2, 5).reshape(b, h2, w2, 4 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(self.gather_neighbours(x)))


class PatchMergingV2(PatchMerging):
    """:class:`PatchMerging` that normalises the 2C output instead (SwinV2)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.norm = LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(self.gather_neighbours(x)))


class WindowLayout(NamedTuple):
    """How a stage's map is cut into windows for one forward; shared by the stage's blocks.

    Attributes:
        padded: ``(Hp, Wp)`` after right/bottom zero padding to a window multiple.
        shift: effective cyclic shift ``(Sh, Sw)``; ``(0, 0)`` for regular windows.
        masks: the shifted layout's ``(N, N)`` masks of the last row's, the last column's and
            the corner's windows (:func:`~.window.edge_masks`), or None without shift.
    """
    padded: tuple[int, int]
    shift: tuple[int, int]
    masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None


class SwinBlock(nn.Module):
    """A (shifted) window attention block with pre-norm (Swin V1):
    ``x = x + dp(attn(norm1(x)))``, ``x = x + dp(mlp(norm2(x)))``.

    Args:
        dim: channels ``C``.
        num_heads: attention heads.
        window_size: window side.
        shifted: whether this block attends in shifted windows (odd blocks).
        mlp_ratio: MLP hidden width over ``C``.
        qkv_bias: learn q, k, v biases.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth of both residual branches.
        attn_layer: builds the attention from ``(dim, num_heads, window_size, qkv_bias,
            attn_drop, proj_drop)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0.,
                 attn_layer: Callable[..., nn.Module] = WindowAttention) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.norm1 = LayerNorm(dim)
        self.attn = attn_layer(dim, num_heads, window_size, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def attend_in_windows(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """Pad, shift, partition, attend, reverse, un-shift, crop: ``(B, H, W, C)`` in and out.

        Regular windows attend in one call; shifted ones by region (:func:`~.window.
        attend_by_region`), the edge windows with their masks and the interior without."""
        _, h, w, _ = x.shape
        window = (self.window_size, self.window_size)
        x = pad_to(x, layout.padded)  # pad before roll, so the shift sees the padded map
        if layout.masks is None:
            x = window_reverse(self.attn(window_partition(x, window)), window, layout.padded)
            return x[:, :h, :w]
        shift = layout.shift
        x = cyclic_shift(x, (-shift[0], -shift[1]))
        bias = self.attn.relative_position_bias()  # (h, N, N), shared by the regions' calls
        x = attend_by_region(x, window, lambda windows, mask: self.attn(windows, mask, bias),
                             layout.masks)
        return cyclic_shift(x, shift)[:, :h, :w]

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``; ``layout`` is the stage's for this block's shift."""
        x = x + self.drop_path(self.attend_in_windows(self.norm1(x), layout))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinBlockV2(SwinBlock):
    """A Swin V2 block: cosine attention and residual post-norm (SwinV2 3.1),
    ``x = x + dp(norm1(attn(x)))``, ``x = x + dp(norm2(mlp(x)))``.

    Args:
        pretrained_window_size: see :class:`CosineWindowAttention`.
        Other arguments as in :class:`SwinBlock`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0.,
                 pretrained_window_size: int = 0) -> None:
        attn_layer = partial(CosineWindowAttention, pretrained_window_size=pretrained_window_size)
        super().__init__(dim, num_heads, window_size, shifted, mlp_ratio, qkv_bias, drop,
                         attn_drop, drop_path, attn_layer)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        # The difference to V1: the norms follow the branches instead of preceding them.
        x = x + self.drop_path(self.norm1(self.attend_in_windows(x, layout)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class SwinStage(nn.Module):
    """Blocks alternating regular and shifted windows, then an optional patch merging.

    Args:
        blocks: the stage's blocks, :class:`SwinBlock` or :class:`SwinBlockV2`, all with
            the same ``window_size``.
        window_size: their window side.
        downsample: patch merging applied to the stage's output, or None.
        with_cp: non-reentrant activation checkpointing of each block while training.
    """

    def __init__(self, blocks: Sequence[SwinBlock], window_size: int,
                 downsample: PatchMerging | None = None, with_cp: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def layouts(self, size: tuple[int, int],
                device: torch.device) -> tuple[WindowLayout, WindowLayout]:
        """The regular and the shifted window layout of a ``size`` map; the shifted one's
        masks are built here, once per stage and forward."""
        window = (self.window_size, self.window_size)
        padded, shift = window_grid(size, window, (self.window_size // 2,) * 2)
        regular = WindowLayout(padded, (0, 0), None)
        if known_zero(*shift):
            return regular, regular
        return regular, WindowLayout(padded, shift, self.edge_masks(shift, device))

    def edge_masks(self, shift: tuple[int, int], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three ``(N, N)`` masks of the shifted layout, see :func:`~.window.edge_masks`."""
        return edge_masks((self.window_size,) * 2, shift, device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, C)`` -> the stage output ``(B, H, W, C)`` and the map after merging
        (``(B, ceil(H / 2), ceil(W / 2), 2C)``, or the output itself without merging)."""
        regular, shifted = self.layouts((x.shape[1], x.shape[2]), x.device)
        for block in self.blocks:
            layout = shifted if block.shifted else regular
            if self.with_cp and self.training and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, layout, use_reentrant=False)
            else:
                x = block(x, layout)
        return x, (self.downsample(x) if self.downsample is not None else x)
