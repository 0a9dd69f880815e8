"""The pieces of a Swin stage: patch embedding, the block, patch merging, the stage.

One class each for V1 and V2: the versions differ only in where the norms sit
(``post_norm``) and which attention the block holds.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import nn

from .attention import CosineWindowAttention, WindowAttention, WindowLayout
from .fast_path import eager_cpu_float32
from .linear import Linear, onednn_linear_available
from .recompute import gelu_mlp, token_chunks
from .window import pad_to, shift_attention_mask, window_grid, window_partition, window_reverse


_ONEDNN = onednn_linear_available()


class LayerNorm(nn.LayerNorm):
    """LayerNorm that normalises in float32 under autocast and returns float32 there.

    Keeps the residual stream and the V2 post-norms in full precision under fp16 / bf16
    autocast, where activations of large magnitude would otherwise overflow.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                                    self.bias.float(), self.eps)
        return super().forward(x)


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
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., C)``; float32 CPU training recomputes the GELU in backward
        (:func:`.recompute.gelu_mlp`) instead of keeping its ``4C`` output per token."""
        if (torch.is_grad_enabled() and self.drop1.p == 0 and self.drop2.p == 0
                and self.act.approximate == 'none' and _ONEDNN
                and eager_cpu_float32(x, self.fc1.weight, self.fc2.weight)
                and (x.requires_grad or self.fc1.weight.requires_grad)):
            self.fc1.drop_inference_cache()
            self.fc2.drop_inference_cache()
            return gelu_mlp(x, self.fc1, self.fc2)
        return super().forward(x)


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
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, C, H', W') -> (B, H', W', C)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood and project ``4C -> 2C``.

    ``(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), 2C)``; odd sizes are zero-padded first.
    The neighbours are concatenated in the official order (top-left, bottom-left, top-right,
    bottom-right). V1 normalises the 4C input, V2 the 2C output (``post_norm``).
    """

    def __init__(self, dim: int, post_norm: bool = False) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNorm(2 * dim if post_norm else 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to(x, (x.shape[1] + x.shape[1] % 2, x.shape[2] + x.shape[2] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1)
        if self.post_norm:
            return self.norm(self.reduction(x))
        return self.reduction(self.norm(x))


class SwinBlock(nn.Module):
    """A (shifted) window attention block.

    V1 (pre-norm):  ``x = x + dp(attn(norm1(x)))``,  ``x = x + dp(mlp(norm2(x)))``.
    V2 (residual post-norm, SwinV2 3.1): ``x = x + dp(norm1(attn(x)))``,
    ``x = x + dp(norm2(mlp(x)))``.

    Args:
        dim: channels ``C``.
        num_heads: attention heads.
        window: ``(Wh, Ww)``.
        shifted: whether this block attends in shifted windows (odd blocks).
        post_norm: V2 residual post-norm with cosine attention when True, else V1.
        pretrained_window: V2 only, see :class:`CosineWindowAttention`.
        mlp_ratio, qkv_bias, drop, attn_drop, drop_path: the usual regularisers.
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], shifted: bool,
                 post_norm: bool = False, pretrained_window: tuple[int, int] = (0, 0),
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0.) -> None:
        super().__init__()
        self.window = window
        self.shifted = shifted
        self.post_norm = post_norm
        self.norm1 = LayerNorm(dim)
        if post_norm:
            self.attn = CosineWindowAttention(dim, num_heads, window, qkv_bias, attn_drop, drop,
                                              pretrained_window)
        else:
            self.attn = WindowAttention(dim, num_heads, window, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def _window_attention(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """Pad, shift, partition, attend, reverse, un-shift, crop: ``(B, H, W, C)`` in and out."""
        _, h, w, _ = x.shape
        x = pad_to(x, layout.padded)  # pad before roll, so the shift sees the padded map
        shift = layout.shift
        if shift != (0, 0):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = window_reverse(self.attn(window_partition(x, self.window), layout), self.window,
                           layout.padded)
        if shift != (0, 0):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``; ``layout`` is the stage's for this block's shift."""
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self._window_attention(x, layout)))
        else:
            x = x + self.drop_path(self._window_attention(self.norm1(x), layout))
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return x + self.drop_path(self._feed_forward(x))
        return self._add_feed_forward_in_chunks(x)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP branch with its norm (V1 before, V2 after): ``(..., C) -> (..., C)``."""
        return self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))

    def _add_feed_forward_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``x + feed_forward(x)`` (inference) over token chunks whose ``4C`` hidden
        activations (8 MiB in fp32) stay in cache: at 800x1344 the MLP runs ~2x faster
        than on the whole map at once. Tokens are independent here, so the result is the
        same."""
        flat = x.reshape(-1, x.shape[-1])
        chunks = token_chunks(flat.shape[0], self.mlp.fc1.out_features)
        if len(chunks) == 1:
            return x + self._feed_forward(x)
        out = torch.empty_like(flat)
        for rows in chunks:
            torch.add(flat[rows], self._feed_forward(flat[rows]), out=out[rows])
        return out.view(x.shape)


class SwinStage(nn.Module):
    """``depth`` blocks alternating regular and shifted windows, then optional patch merging.

    Args:
        dim: channels of the stage.
        depth: number of blocks.
        window: ``(Wh, Ww)``.
        drop_paths: one drop-path rate per block.
        downsample: end the stage with :class:`PatchMerging`.
        with_cp: non-reentrant activation checkpointing of each block while training.
        block_kwargs: forwarded to :class:`SwinBlock` (``num_heads``, ``post_norm``, ...).
    """

    def __init__(self, dim: int, depth: int, window: tuple[int, int], drop_paths: Sequence[float],
                 downsample: bool, with_cp: bool = False, **block_kwargs) -> None:
        super().__init__()
        self.window = window
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            SwinBlock(dim, window=window, shifted=j % 2 == 1, drop_path=drop_paths[j],
                      **block_kwargs) for j in range(depth))
        self.downsample = (PatchMerging(dim, block_kwargs.get('post_norm', False))
                           if downsample else None)
        self._mask_cache: tuple[tuple, torch.Tensor] | None = None

    def layouts(self, size: tuple[int, int], device: torch.device) -> tuple[WindowLayout,
                                                                            WindowLayout]:
        """The regular and the shifted window layout of a ``size`` map."""
        half = (self.window[0] // 2, self.window[1] // 2)
        padded, shift = window_grid(size, self.window, half)
        regular = WindowLayout(padded, (0, 0), None)
        if shift == (0, 0):
            return regular, regular
        return regular, WindowLayout(padded, shift, self._shift_mask(padded, shift, device))

    def _shift_mask(self, padded: tuple[int, int], shift: tuple[int, int],
                    device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return shift_attention_mask(padded, self.window, shift, device)
        key = (padded, shift, device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            self._mask_cache = (key, shift_attention_mask(padded, self.window, shift, device))
        return self._mask_cache[1]

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
