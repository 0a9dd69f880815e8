"""CPU subclasses of the reference modules: the same parameters, the same results to float32
rounding, faster kernels for eager CPU calls.

Each class here subclasses one reference module of :mod:`swin_backbone.models` and is
installed on a built module by :meth:`adopt` (a class swap; parameters and state-dict keys
stay). Every call it does not accelerate goes to the reference ``forward``: other devices,
``torch.compile``, tracing and export (:mod:`.eager`), dtypes and modes a kernel does not
cover. What they add:

* training (float32, gradients): the MLP and the window attention recompute their largest
  intermediates in backward (:mod:`.recompute`);
* inference (no gradients): the attention bias + each edge mask is cached between forwards
  (keyed on the bias parameters' versions and the stage's cached edge masks), attention on
  large maps runs over chunks of windows, and the MLP branch over chunks of tokens whose
  hidden activations stay in cache.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.attention import CosineWindowAttention, WindowAttention, merge_heads
from ..models.blocks import Mlp, SwinBlock, SwinBlockV2, SwinStage, WindowLayout
from .bf16_attention import bf16_window_attention
from .eager import eager, eager_cpu_float32
from .linear import OneDnnLinear, onednn_bf16_available, onednn_linear_available
from .recompute import fused_attention_available, gelu_mlp, token_chunks, window_attention

_ONEDNN = onednn_linear_available()
_BF16_GEMMS = onednn_bf16_available()  # without them bf16 matmuls are emulated: SDPA instead
_FUSED_ATTENTION = fused_attention_available()
# Inference attends in chunks of windows once the windows of one call exceed glibc's largest
# mmap threshold (32 MiB): bigger temporaries arrive as fresh pages on every forward, which
# made a SwinV2-T forward at 1536x1536 9-14 % slower (measured with and without chunks).
_CHUNK_ABOVE_BYTES = 32 << 20
_CHUNK_BYTES = 8 << 20  # input windows per chunk


class CpuMlp(Mlp):
    """:class:`Mlp` that, in float32 CPU training, recomputes its GELU in backward
    (:func:`.recompute.gelu_mlp`) instead of keeping its ``4C`` output per token."""

    @classmethod
    def adopt(cls, module: Mlp) -> None:
        module.__class__ = cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C) -> (..., C)``."""
        if (torch.is_grad_enabled() and self.drop1.p == 0 and self.drop2.p == 0
                and self.act.approximate == 'none' and _ONEDNN
                and eager_cpu_float32(x, self.fc1.weight, self.fc2.weight)
                and (x.requires_grad or self.fc1.weight.requires_grad)):
            for fc in (self.fc1, self.fc2):  # gelu_mlp reads their weights directly
                if isinstance(fc, OneDnnLinear):
                    fc.drop_inference_cache()
            return gelu_mlp(x, self.fc1, self.fc2)
        return super().forward(x)


class _CpuAttention:
    """The CPU forward shared by both attention versions; the versions supply
    :meth:`_qkv_heads`, :meth:`_logit_scale`, :meth:`_kernel_scale` and
    :meth:`_scaled_qk_for_inference`."""

    num_heads: int
    attn_drop: float
    training: bool
    proj: nn.Linear
    proj_drop: nn.Dropout
    relative_position_bias: Callable[[], torch.Tensor]
    # One entry per shift mask a module meets (a shifted block's three edge masks and None).
    _mask_cache: list[tuple[tuple, torch.Tensor]] | None

    @classmethod
    def adopt(cls, module: nn.Module) -> None:
        module.__class__ = cls
        module._mask_cache = None

    def train(self, mode: bool = True):
        """Also drops the cached bias: fused optimisers (``AdamW(fused=True)``) and writes
        through ``.data`` (mmengine's ``EMAHook``) change weights without a version bump."""
        self._mask_cache = None
        return super().train(mode)  # type: ignore[misc]

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        state['_mask_cache'] = None
        return state

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(B * nW, N, C)`` windows, the ``(N, N)`` shift mask they share (or None) and
        the bias if known -> ``(B * nW, N, C)``; inference uses the cached bias + mask."""
        if not eager(x):
            return super().forward(x, shift_mask, bias)  # type: ignore[misc]
        if torch.is_grad_enabled():
            self._mask_cache = None  # an optimiser step may follow, see train()
            if (_FUSED_ATTENTION and eager_cpu_float32(x) and x.requires_grad
                    and not (self.training and self.attn_drop > 0)):
                if bias is None:
                    bias = self.relative_position_bias()
                out = window_attention(self._qkv_heads(x), bias, shift_mask,
                                       self._logit_scale(), self._kernel_scale())
                return self._project(out)
            return super().forward(x, shift_mask, bias)  # type: ignore[misc]
        if x.numel() * x.element_size() <= _CHUNK_ABOVE_BYTES:
            qkv = self._qkv_heads(x)
            return self._project(self._attend(qkv, self._cached_mask(shift_mask, qkv.dtype)))
        # Large calls over chunks of windows, each attending with the same broadcast mask.
        b_, n, c = x.shape
        rows = max(1, _CHUNK_BYTES // (n * c * x.element_size()))
        out = torch.empty_like(x)
        mask = None
        for first in range(0, b_, rows):
            part = slice(first, first + rows)
            qkv = self._qkv_heads(x[part])
            if mask is None:
                mask = self._cached_mask(shift_mask, qkv.dtype)
            out[part] = self._project(self._attend(qkv, mask))
        return out

    def _cached_mask(self, shift_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Bias plus shift mask, ``(1, h, N, N)``, in the windows' ``dtype`` (float32 for
        the bf16 windows of :func:`.bf16_attention.bf16_window_attention`, which adds it to
        float32 logits).

        Kept between inference forwards, keyed by the shift mask (the stage's cached tensor,
        held by the key, so identity is safe), the dtype and the version counters and
        storages of the bias parameters, so loading weights invalidates it.
        """
        params = tuple((p._version, p.data_ptr()) for p in self._bias_parameters())
        cache = self._mask_cache if self._mask_cache is not None else []
        for key, mask in cache:
            if key[0] is shift_mask and key[1:] == (dtype, params):
                return mask
        mask = self.relative_position_bias()  # (h, N, N)
        if shift_mask is not None:
            mask = mask + shift_mask
        mask = mask.unsqueeze(0).to(torch.float32 if _bf16_kernel(dtype) else dtype)
        # Entries of a layout no longer in use (other masks, old weights) go.
        self._mask_cache = [entry for entry in cache[-3:] if entry[0][1:] == (dtype, params)]
        self._mask_cache.append(((shift_mask, dtype, params), mask))
        return mask

    def _attend(self, qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(3, B * nW, h, N, d)`` q, k, v and a ``(1, h, N, N)`` mask from
        :meth:`_cached_mask` -> ``(B * nW, h, N, d)``; bf16 windows attend through
        :func:`.bf16_attention.bf16_window_attention`, others through SDPA."""
        q, k = self._scaled_qk_for_inference(qkv[0], qkv[1])
        v = qkv[2]
        if _bf16_kernel(v.dtype):
            return bf16_window_attention(q, k, v, mask, self._kernel_scale())
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                scale=self._kernel_scale())

    def _project(self, out: torch.Tensor) -> torch.Tensor:
        """``(B * nW, h, N, d)`` -> ``(B * nW, N, C)``."""
        return self.proj_drop(self.proj(merge_heads(out)))


def _bf16_kernel(dtype: torch.dtype) -> bool:
    """Whether windows of ``dtype`` attend through :func:`.bf16_attention.bf16_window_attention`."""
    return dtype == torch.bfloat16 and _BF16_GEMMS


class CpuWindowAttention(_CpuAttention, WindowAttention):
    """:class:`WindowAttention` on the CPU kernels of :class:`_CpuAttention`."""

    def _bias_parameters(self) -> list[nn.Parameter]:
        return [self.relative_position_bias_table]

    def _qkv_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * nW, N, C)`` -> q, k, v stacked as ``(3, B * nW, h, N, C / h)`` (a view)."""
        b_, n, c = x.shape
        qkv = self.qkv(x).view(b_, n, 3, self.num_heads, c // self.num_heads)
        return qkv.permute(2, 0, 3, 1, 4)

    def _logit_scale(self) -> None:
        return None

    def _kernel_scale(self) -> float:
        return self.scale

    def _scaled_qk_for_inference(self, q: torch.Tensor, k: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k


class CpuCosineWindowAttention(_CpuAttention, CosineWindowAttention):
    """:class:`CosineWindowAttention` on the CPU kernels of :class:`_CpuAttention`."""

    def _bias_parameters(self) -> list[nn.Parameter]:
        return list(self.cpb_mlp.parameters())

    def _qkv_heads(self, x: torch.Tensor) -> torch.Tensor:
        b_, n, c = x.shape
        bias = self.qkv_bias()
        qkv = (self.qkv.with_bias(x, bias) if isinstance(self.qkv, OneDnnLinear)
               else torch.nn.functional.linear(x, self.qkv.weight, bias))
        return qkv.view(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)

    def _logit_scale(self) -> torch.Tensor:
        return self.clamped_logit_scale()

    def _kernel_scale(self) -> float:
        return 1.0

    def _scaled_qk_for_inference(self, q: torch.Tensor, k: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``logit_scale * q / ||q||`` and ``k / ||k||`` in q's dtype (computed in float32)."""
        return (_scaled_unit_vectors(q, self.clamped_logit_scale()), _scaled_unit_vectors(k))


def _scaled_unit_vectors(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``F.normalize(x, dim=-1) * scale`` in x's dtype, computed in float32 (or wider).

    x (a strided view of qkv) is first copied into a fresh contiguous tensor, widened on the
    way: the norm of contiguous vectors runs ~4x faster than over the view (SwinV2-T's stage-1
    q at 800x1344: 3.3 against 13.4 ms for the whole normalisation, same bits). The
    per-vector factor ``scale / max(||x||, 1e-12)`` is formed on the small ``(..., 1)`` norm
    tensor and applied in place; a bf16 / fp16 x is rounded once, on the way out."""
    wide = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, torch.float32),
                       device=x.device)
    wide.copy_(x)
    factor = torch.linalg.vector_norm(wide, dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
    if scale is not None:
        factor = factor.mul_(scale)
    return wide.mul_(factor).to(x.dtype)


class _ChunkedFeedForward:
    """Inference forward of a block whose MLP branch runs over token chunks whose ``4C``
    hidden activations (8 MiB in fp32) stay in cache: at 800x1344 the MLP runs ~2x faster
    than on the whole map at once. Tokens are independent there, so the result is the same.
    The versions supply :meth:`_attention_branch` and :meth:`_feed_forward`."""

    training: bool

    @classmethod
    def adopt(cls, module: nn.Module) -> None:
        module.__class__ = cls

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or not eager(x):
            return super().forward(x, layout)  # type: ignore[misc]
        x = x + self._attention_branch(x, layout)  # drop-path is the identity in eval
        flat = x.reshape(-1, x.shape[-1])
        hidden = self.mlp.fc1.out_features  # type: ignore[attr-defined]
        chunks = token_chunks(flat.shape[0], hidden)
        if len(chunks) == 1:
            return x + self._feed_forward(x)
        out = torch.empty_like(flat)
        for rows in chunks:
            torch.add(flat[rows], self._feed_forward(flat[rows]), out=out[rows])
        return out.view(x.shape)


class CpuSwinBlock(_ChunkedFeedForward, SwinBlock):
    """:class:`SwinBlock` with the chunked inference MLP."""

    def _attention_branch(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        return self.attend_in_windows(self.norm1(x), layout)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))


class CpuSwinBlockV2(_ChunkedFeedForward, SwinBlockV2):
    """:class:`SwinBlockV2` with the chunked inference MLP."""

    def _attention_branch(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        return self.norm1(self.attend_in_windows(x, layout))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.mlp(x))


class CpuSwinStage(SwinStage):
    """:class:`SwinStage` that keeps its CPU edge masks between forwards with the same shift,
    which lets the attention modules keep their bias + mask too."""

    _mask_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None

    @classmethod
    def adopt(cls, module: SwinStage) -> None:
        module.__class__ = cls
        module._mask_cache = None

    def edge_masks(self, shift: tuple[int, int], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device.type != 'cpu' or not eager():
            return super().edge_masks(shift, device)
        if self._mask_cache is None or self._mask_cache[0] != shift:
            self._mask_cache = (shift, super().edge_masks(shift, device))
        return self._mask_cache[1]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state['_mask_cache'] = None
        return state
