"""Window attention: V1 (scaled dot product + bias table) and V2 (cosine + log-CPB).

Both run through one kernel, ``F.scaled_dot_product_attention``, with the relative position
bias and the shifted-window mask folded into one additive ``attn_mask``. V2 fits it by
normalising q and k and folding the clamped logit scale into q, so the kernel's own scale
is 1 (SwinV2 section 3.2).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .fast_path import eager_cpu_float32
from .linear import Linear
from .recompute import fused_attention_available, window_attention
from .window import log_cpb_coordinates, relative_position_index


_FUSED_ATTENTION = fused_attention_available()
# Inference attends in chunks of windows once the windows of one call exceed glibc's largest
# mmap threshold (32 MiB): bigger temporaries arrive as fresh pages on every forward, which
# made a SwinV2-T forward at 1536x1536 9-14 % slower (measured with and without chunks).
_CHUNK_ABOVE_BYTES = 32 << 20
_CHUNK_BYTES = 8 << 20  # input windows per chunk


class WindowLayout(NamedTuple):
    """How a stage's map is cut into windows for one forward; shared by the stage's blocks.

    Attributes:
        padded: ``(Hp, Wp)`` after right/bottom zero padding to a window multiple.
        shift: effective cyclic shift ``(Sh, Sw)``; ``(0, 0)`` for regular windows.
        mask: ``(nW, N, N)`` additive shifted-region mask, or None without shift.
    """
    padded: tuple[int, int]
    shift: tuple[int, int]
    mask: torch.Tensor | None


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin V1).

    Args:
        dim: channels ``C``.
        num_heads: heads ``h``; ``C`` must be divisible by it.
        window: ``(Wh, Ww)``; a window holds ``N = Wh * Ww`` tokens.
        qkv_bias: learn biases for q, k and v.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window = window
        self.attn_drop = attn_drop
        self.register_buffer('relative_position_index', relative_position_index(window),
                             persistent=False)
        self._build_qkv(dim, qkv_bias)
        self._build_position_bias()
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._mask_cache: tuple[tuple, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> WindowAttention:
        """Also drops the cached bias: fused optimisers (``AdamW(fused=True)``) and writes
        through ``.data`` (mmengine's ``EMAHook``) change weights without a version bump."""
        self._mask_cache = None
        return super().train(mode)

    def _build_qkv(self, dim: int, qkv_bias: bool) -> None:
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)

    def _build_position_bias(self) -> None:
        wh, ww = self.window
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wh - 1) * (2 * ww - 1), self.num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def _bias_parameters(self) -> list[nn.Parameter]:
        return [self.relative_position_bias_table]

    def _bias_table(self) -> torch.Tensor:
        """``((2Wh - 1) * (2Ww - 1), h)`` bias for every relative offset."""
        return self.relative_position_bias_table

    def relative_position_bias(self) -> torch.Tensor:
        """The learned bias of every token pair, ``(h, N, N)``, in float32."""
        with torch.autocast(self.relative_position_index.device.type, enabled=False):
            n = self.relative_position_index.shape[0]
            table = self._bias_table()
            table = table.to(torch.promote_types(table.dtype, torch.float32))
            bias = table[self.relative_position_index.view(-1)]
            return bias.view(n, n, -1).permute(2, 0, 1).contiguous()

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        return self.qkv(x)

    def _scaled_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Return q, k and the scale the kernel applies to ``q @ k^T``."""
        return q, k, self._kernel_scale()

    def _kernel_scale(self) -> float:
        return (self.dim // self.num_heads) ** -0.5

    def _logit_scale(self) -> torch.Tensor | None:
        """V2's per-head multiplier of the cosine similarities, ``(h, 1, 1)``; None in V1."""
        return None

    def _recompute_in_backward(self, qkv: torch.Tensor) -> bool:
        """Whether to attend through :func:`.recompute.window_attention`: float32 CPU
        training with gradients and without attention dropout."""
        return (torch.is_grad_enabled() and qkv.requires_grad and eager_cpu_float32(qkv)
                and not (self.training and self.attn_drop > 0) and _FUSED_ATTENTION)

    def attention_mask(self, layout: WindowLayout, dtype: torch.dtype) -> torch.Tensor:
        """Bias plus shift mask, ``(1, h, N, N)`` without shift, else ``(1, nW * h, N, N)``.

        Cached while no gradient is recorded (inference): the cache is keyed by the layout,
        dtype and the version counters and storages of the bias parameters, so loading
        weights invalidates it. With gradients it is rebuilt each forward; :meth:`forward`
        with gradients and ``train()`` / ``eval()`` drop the cache, since an optimiser step
        that leaves the version counters alone may follow (see :meth:`train`).
        """
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if cacheable:
            key = (layout.padded, layout.shift, dtype, self.relative_position_index.device,
                   tuple((p._version, p.data_ptr()) for p in self._bias_parameters()))
            if self._mask_cache is not None and self._mask_cache[0] == key:
                return self._mask_cache[1]
        mask = self.relative_position_bias().unsqueeze(0)  # (1, h, N, N)
        if layout.mask is not None:
            n = mask.shape[-1]
            mask = (mask + layout.mask.unsqueeze(1)).view(1, -1, n, n)  # (1, nW * h, N, N)
        mask = mask.to(dtype)
        if cacheable:
            self._mask_cache = (key, mask)
        return mask

    @staticmethod
    def _per_window_mask(mask: torch.Tensor, qkv: tuple[torch.Tensor, ...], n_windows: int
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Pair a ``(1, nW * h, N, N)`` mask with ``(B * nW, h, N, d)`` q, k, v.

        Either the mask is broadcast to ``(B * nW, h, N, N)`` (free for a batch of one,
        and the smaller copy while ``N < 3 * head_dim``), or the windows are folded into the
        head axis, ``(B, nW * h, N, d)``, so that the mask broadcasts over the batch.
        """
        b_, h, n, d = qkv[0].shape
        batch = b_ // n_windows
        if batch == 1 or n < 3 * d:
            mask = mask.view(1, n_windows, h, n, n).expand(batch, -1, -1, -1, -1)
            return mask.reshape(b_, h, n, n), qkv
        return mask, tuple(t.reshape(batch, n_windows * h, n, d) for t in qkv)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """Attend within windows.

        Args:
            x: ``(B * nW, N, C)`` windows, batch-major, as from ``window_partition``.
            layout: the stage's window layout for this forward.

        Returns:
            ``(B * nW, N, C)``.
        """
        if torch.is_grad_enabled():
            self._mask_cache = None  # an optimiser step may follow, see train()
        elif (not torch.compiler.is_compiling()
                and x.numel() * x.element_size() > _CHUNK_ABOVE_BYTES):
            return self._forward_in_chunks(x, layout)
        qkv = self._qkv_heads(x)
        if self._recompute_in_backward(qkv):
            out = window_attention(qkv, self.relative_position_bias(), layout.mask,
                                   self._logit_scale(), self._kernel_scale())
        else:
            n_windows = None if layout.mask is None else layout.mask.shape[0]
            out = self._attend(qkv, self.attention_mask(layout, qkv.dtype), n_windows)
        return self._project(out)

    def _forward_in_chunks(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """:meth:`forward` without autograd over chunks of windows (never across images),
        each with its slice of the cached mask; the same result, ``(B * nW, N, C)``."""
        b_, n, c = x.shape
        h = self.num_heads
        full_mask = None
        n_windows = b_ if layout.mask is None else layout.mask.shape[0]
        rows = max(1, _CHUNK_BYTES // (n * c * x.element_size()))
        out = torch.empty_like(x)
        for image_start in range(0, b_, n_windows):
            for first in range(0, n_windows, rows):
                count = min(rows, n_windows - first)
                part = slice(image_start + first, image_start + first + count)
                qkv = self._qkv_heads(x[part])
                if full_mask is None:  # (1, h or nW * h, N, N), cached across forwards
                    full_mask = self.attention_mask(layout, qkv.dtype)
                if layout.mask is None:
                    out[part] = self._project(self._attend(qkv, full_mask, None))
                else:
                    mask = full_mask[:, first * h:(first + count) * h]
                    out[part] = self._project(self._attend(qkv, mask, count))
        return out

    def _qkv_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * nW, N, C)`` -> q, k, v stacked as ``(3, B * nW, h, N, C / h)`` (a view)."""
        b_, n, c = x.shape
        h = self.num_heads
        return self._qkv(x).view(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)

    def _project(self, out: torch.Tensor) -> torch.Tensor:
        """Merge the heads and project: ``(B * nW, h, N, d)`` -> ``(B * nW, N, C)``."""
        b_, h, n, d = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b_, n, h * d)))

    def _attend(self, qkv: torch.Tensor, mask: torch.Tensor,
                n_windows: int | None) -> torch.Tensor:
        """Attention through ``F.scaled_dot_product_attention``.

        Args:
            qkv: ``(3, B * nW, h, N, d)`` stacked q, k, v.
            mask: from :meth:`attention_mask` (or a slice of it over whole windows):
                ``(1, h, N, N)``, or per window ``(1, nW * h, N, N)``.
            n_windows: ``nW`` for a per-window mask, None for one shared by all windows.

        Returns:
            ``(B * nW, h, N, d)``.
        """
        q, k, scale = self._scaled_qk(qkv[0], qkv[1])
        v = qkv[2]
        q = q.to(v.dtype)
        k = k.to(v.dtype)
        if n_windows is not None:
            mask, (q, k, v) = self._per_window_mask(mask, (q, k, v), n_windows)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                             dropout_p=self.attn_drop if self.training else 0.)
        return out.reshape(qkv.shape[1:])


class CosineWindowAttention(WindowAttention):
    """Scaled cosine attention with a log-spaced continuous position bias (Swin V2, 3.2-3.3).

    ``attention = cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(coords))``;
    q and v have biases, k has none, as in the official release.

    Args:
        pretrained_window: ``(Wh, Ww)`` of pre-training, used to normalise the log-CPB
            coordinates; ``(0, 0)`` to normalise by the current window.
        Other arguments as in :class:`WindowAttention`.
    """

    max_logit_scale = math.log(1. / 0.01)

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.,
                 pretrained_window: tuple[int, int] = (0, 0)) -> None:
        self.pretrained_window = pretrained_window
        super().__init__(dim, num_heads, window, qkv_bias, attn_drop, proj_drop)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))

    def _build_qkv(self, dim: int, qkv_bias: bool) -> None:
        self.qkv = Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None

    def _build_position_bias(self) -> None:
        self.cpb_mlp = nn.Sequential(Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     Linear(512, self.num_heads, bias=False))
        self.register_buffer('relative_coords_table',
                             log_cpb_coordinates(self.window, self.pretrained_window),
                             persistent=False)

    def _bias_parameters(self) -> list[nn.Parameter]:
        return list(self.cpb_mlp.parameters())

    def _bias_table(self) -> torch.Tensor:
        coords = self.relative_coords_table.to(self.cpb_mlp[0].weight.dtype)
        return 16 * torch.sigmoid(self.cpb_mlp(coords))

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if self.q_bias is None:
            return self.qkv(x)
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        return self.qkv.with_bias(x, bias)

    def _scaled_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        # Normalisation and the logit scale stay in float32 under autocast: the logits reach
        # 100, and fp16 products of unnormalised activations overflow.
        dtype = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(q.device.type, enabled=False):
            scale = self._logit_scale().to(dtype)
            if torch.is_grad_enabled():
                return unit_vectors(q.to(dtype)) * scale, unit_vectors(k.to(dtype)), 1.0
            return _scaled_unit_vectors(q.to(dtype), scale), _scaled_unit_vectors(k.to(dtype)), 1.0

    def _kernel_scale(self) -> float:
        return 1.0

    def _logit_scale(self) -> torch.Tensor:
        with torch.autocast(self.logit_scale.device.type, enabled=False):
            scale = self.logit_scale.to(torch.promote_types(self.logit_scale.dtype, torch.float32))
            return torch.clamp(scale, max=self.max_logit_scale).exp()


def _scaled_unit_vectors(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``F.normalize(x, dim=-1) * scale`` in one pass over x (inference): the per-vector
    factor ``scale / max(||x||, 1e-12)`` is formed on the small ``(..., 1)`` norm tensor."""
    factor = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
    if scale is not None:
        factor = factor.mul_(scale)
    return x * factor


def unit_vectors(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` whose gradient at an all-zero vector is zero, not ``1/eps``.

    Zero vectors are real here: the padded tokens' keys (no k bias, zero input) and, while
    ``q_bias`` is zero, their queries. ``F.normalize`` sends them a gradient of ``1e12``
    times the incoming one; the product with their zero input is still zero in float32,
    but under fp16 autocast the gradient overflows to inf on its way back into the qkv
    projection and ``inf * 0`` turns its weight gradient into NaN. Values are identical
    for every vector of norm above ``1e-12``; without autograd :func:`_scaled_unit_vectors`
    runs instead (the extra ``where`` / compare / fill passes cost ~15 % of a SwinV2-T
    forward).
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    nonzero = norm > 0
    return torch.where(nonzero, x / torch.where(nonzero, norm, torch.ones_like(norm)), 0.)
