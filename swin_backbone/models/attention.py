"""Window attention: V1 (scaled dot product + bias table) and V2 (cosine + log-CPB).

Two explicit classes, each with its whole ``forward``, rather than a V2 subclass: the
versions differ in the qkv biases, the similarity, the bias and the kernel's scale, which
is every step of the forward; a subclass would override them all through hooks. What they
share are the functions below: splitting heads, one ``F.scaled_dot_product_attention``
call over the windows given, merging heads.

The relative position bias and the shifted-window mask (one ``(N, N)`` pattern shared by
every window of a call) are folded into one additive ``(1, h, N, N)`` ``attn_mask``. V2 fits
the same kernel by normalising q and k and folding the clamped logit scale into q, so the
kernel's own scale is 1 (SwinV2 section 3.2). The bias, the logit
scale and V2's normalisation run in float32 whatever the model's dtype or autocast, and
q, k, v enter the kernel in v's dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .window import log_cpb_coordinates, relative_position_index


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is if wider (float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, ...]:
    """``(B * nW, N, 3C)`` -> q, k, v, each ``(B * nW, h, N, C / h)`` (views)."""
    b_, n, c3 = qkv.shape
    return qkv.view(b_, n, 3, num_heads, c3 // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B * nW, h, N, d)`` -> ``(B * nW, N, h * d)``."""
    b_, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b_, n, h * d)


def attend_in_windows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                      shift_mask: torch.Tensor | None, scale: float,
                      dropout_p: float = 0.) -> torch.Tensor:
    """``softmax(scale * q k^T + bias + shift_mask) v`` in one SDPA call whose
    ``(1, h, N, N)`` mask is broadcast over the windows.

    Args:
        q, k, v: ``(B * nW, h, N, d)``.
        bias: ``(h, N, N)`` relative position bias.
        shift_mask: ``(N, N)`` additive mask shared by every window of the call (one group
            of a shifted layout's windows, :func:`~.window.attend_by_region`), or None.
        scale: multiplier of ``q k^T``.
        dropout_p: dropout on the attention weights.

    Returns:
        ``(B * nW, h, N, d)``.
    """
    mask = bias if shift_mask is None else bias + shift_mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(0).to(q.dtype),
                                          dropout_p=dropout_p, scale=scale)


def unit_vectors(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` whose gradient at an all-zero vector is zero, not ``1/eps``.

    Zero vectors are real here: the padded tokens' keys (no k bias, zero input) and, while
    ``q_bias`` is zero, their queries. ``F.normalize`` sends them a gradient of ``1e12``
    times the incoming one; under fp16 autocast that overflows to inf on its way back into
    the qkv projection, and ``inf * 0`` turns its weight gradient into NaN. Values are
    identical for every vector of norm above ``1e-12``.
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    nonzero = norm > 0
    return torch.where(nonzero, x / torch.where(nonzero, norm, torch.ones_like(norm)), 0.)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin V1).

    Args:
        dim: channels ``C``.
        num_heads: heads ``h``; ``C`` must be divisible by it.
        window_size: window side ``Wh = Ww``; a window holds ``N = Wh * Ww`` tokens.
        qkv_bias: learn biases for q, k and v.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        self.register_buffer('relative_position_index',
                             relative_position_index((window_size, window_size)),
                             persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> torch.Tensor:
        """The learned bias of every token pair, ``(h, N, N)``, in float32 (float64 in a
        float64 model)."""
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return upcast(bias).view(n, n, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B * nW, N, C)`` windows and the ``(N, N)`` shift mask they share (or None)
        -> ``(B * nW, N, C)``. ``bias``: :meth:`relative_position_bias`, if the caller has
        it already (a shifted block attends its regions in several calls)."""
        if bias is None:
            bias = self.relative_position_bias()
        q, k, v = split_heads(self.qkv(x), self.num_heads)  # (B * nW, h, N, d) each
        out = attend_in_windows(q, k, v, bias, shift_mask, self.scale,
                                self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(merge_heads(out)))


class CosineWindowAttention(nn.Module):
    """Scaled cosine attention with a log-spaced continuous position bias (Swin V2, 3.2-3.3).

    ``attention = cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(coords))``;
    q and v have biases, k has none, as in the official release.

    Args:
        dim, num_heads, window_size, qkv_bias, attn_drop, proj_drop: as in
            :class:`WindowAttention`.
        pretrained_window_size: window side of pre-training, which normalises the log-CPB
            coordinates; 0 normalises by the current window.
    """

    max_logit_scale = math.log(1. / 0.01)

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.,
                 pretrained_window_size: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.pretrained_window_size = pretrained_window_size
        self.attn_drop = attn_drop
        self.register_buffer('relative_position_index',
                             relative_position_index((window_size, window_size)),
                             persistent=False)
        # The official order of creation (and so of random initialisation).
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))

    def qkv_bias(self) -> torch.Tensor | None:
        """``(3C,)``: q's bias, zeros for k, v's bias; None without biases."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def relative_position_bias(self) -> torch.Tensor:
        """``16 * sigmoid(cpb_mlp(log-spaced offsets))`` of every token pair, ``(h, N, N)``,
        in float32 or wider (weights upcast, autocast off)."""
        fc1, fc2 = self.cpb_mlp[0], self.cpb_mlp[2]
        window = (self.window_size,) * 2
        coords = log_cpb_coordinates(window, (self.pretrained_window_size,) * 2,
                                     fc1.weight.device)  # ((2W - 1)^2, 2)
        with torch.autocast(fc1.weight.device.type, enabled=False):
            w1 = upcast(fc1.weight)
            hidden = F.relu(F.linear(coords.to(w1.dtype), w1, upcast(fc1.bias)))
            table = 16 * torch.sigmoid(F.linear(hidden, upcast(fc2.weight)))
        n = self.relative_position_index.shape[0]
        bias = table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1).contiguous()

    def clamped_logit_scale(self) -> torch.Tensor:
        """``exp(min(logit_scale, log 100))``, ``(h, 1, 1)`` in float32 or wider."""
        return torch.clamp(upcast(self.logit_scale), max=self.max_logit_scale).exp()

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B * nW, N, C)`` windows, an optional ``(N, N)`` shift mask they share and the
        bias if known -> ``(B * nW, N, C)``; see :meth:`WindowAttention.forward`."""
        if bias is None:
            bias = self.relative_position_bias()
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        q, k, v = split_heads(qkv, self.num_heads)  # (B * nW, h, N, d) each
        # Cosine similarity times the logit scale, in float32: the logits reach 100, and
        # fp16 products of unnormalised activations overflow.
        q = (unit_vectors(upcast(q)) * self.clamped_logit_scale()).to(v.dtype)
        k = unit_vectors(upcast(k)).to(v.dtype)
        out = attend_in_windows(q, k, v, bias, shift_mask, 1.,
                                self.attn_drop if self.training else 0.)
        return self.proj_drop(self.proj(merge_heads(out)))
