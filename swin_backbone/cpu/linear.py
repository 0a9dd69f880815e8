"""``nn.Linear`` whose float32 CPU matmuls run on oneDNN or MKL, whichever is faster here.

PyTorch sends a float32 ``F.linear`` on x86 CPUs to MKL's sgemm. On the AMD EPYC machines
this project is measured on, oneDNN, which ships inside PyTorch, is 1.3x-3x faster for the
tall, thin matmuls of a Swin backbone (tokens x 96..3072 channels); on the Intel Xeon with
AMX the two are close. :mod:`.gemm_choice` decides per shape and per CPU (timed once and
cached, or a fixed rule; ``SWIN_BACKBONE_GEMM``). :class:`OneDnnLinear` is what
:func:`swin_backbone.cpu.accelerate` turns a backbone's ``nn.Linear`` into: same parameters
and state-dict keys, only the library that multiplies changes:

* without autograd (inference): where oneDNN is chosen (else ``F.linear``),
  ``torch.ops.mkldnn._linear_pointwise`` with the weight reordered once into oneDNN's
  blocked layout, cached until the weight changes (its
  version counter or storage), a forward records gradients or ``train()`` / ``eval()``
  is called (:meth:`OneDnnLinear.drop_inference_cache`); under CPU bf16 autocast the same
  in bfloat16, the dtype autocast would use, with the bf16 copy of the weight packed once
  instead of cast per call (on CPUs with oneDNN bf16 kernels; elsewhere ``F.linear``);
* with autograd (training): a ``Function`` whose forward, input gradient and weight
  gradient each run on the library chosen for its shape (on the AMD EPYC: oneDNN, but
  MKL for the weight gradient of the many-token early stages, which it reads transposed
  in place, ~3x faster there).

Everything else is ``nn.Linear.forward``: other devices and dtypes, fp16 autocast, autocast
with autograd, ``torch.compile`` (inductor packs weights itself), ``torch.jit.trace`` (so
``mmengine.analysis`` counts FLOPs of ``aten::linear``) and exporters (:mod:`.eager`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .eager import cpu_autocast_dtype, eager
from .gemm_choice import choose

__all__ = ['OneDnnLinear', 'linear_forward', 'linear_input_grad', 'onednn_bf16_available',
           'onednn_linear_available', 'onednn_matmul', 'weight_gradient', 'weight_gradient_on']


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernels :class:`OneDnnLinear` uses."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_linear_pointwise')
            and hasattr(torch.ops.mkldnn, '_reorder_linear_weight'))


def onednn_bf16_available() -> bool:
    """Whether this CPU runs oneDNN's bfloat16 kernels (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or
    AMX); without them, as on the AVX2-only AMD EPYC 7002, oneDNN refuses a bf16 weight."""
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    return _AVAILABLE and check is not None and bool(check())


_AVAILABLE = onednn_linear_available()
_BF16_AVAILABLE = onednn_bf16_available()


def _onednn_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype oneDNN should multiply ``x`` and ``weight`` in, or None for ``F.linear``:
    float32 for float32 tensors; bfloat16 under CPU bf16 autocast without autograd (the
    dtype autocast itself would pick, with the cast weight kept packed)."""
    if not (_AVAILABLE and weight.dtype == torch.float32 and x.numel() > 0
            and eager(x, weight)):
        return None
    autocast_dtype = cpu_autocast_dtype()
    if autocast_dtype is not None:
        if (autocast_dtype == torch.bfloat16 and _BF16_AVAILABLE and not torch.is_grad_enabled()
                and x.dtype in (torch.float32, torch.bfloat16)):
            return torch.bfloat16
        return None
    return torch.float32 if x.dtype == torch.float32 else None


def onednn_matmul(x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight^T + bias`` on oneDNN; x ``(..., K)``, weight ``(N, K)`` plain or packed."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, 'none', [], '')


def linear_forward(x: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x (..., K) @ weight (N, K)^T + bias`` on the library :mod:`.gemm_choice` picks."""
    n, k = weight.shape
    if choose('forward', x.numel() // k, k, n) == 'mkl':
        return F.linear(x, weight, bias)
    return onednn_matmul(x, weight, bias)


def linear_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``grad (..., N) @ weight (N, K) -> (..., K)`` on the library :mod:`.gemm_choice`
    picks (oneDNN reads the transposed weight view in place)."""
    n, k = weight.shape
    if choose('input_grad', grad.numel() // n, k, n) == 'mkl':
        return grad.matmul(weight)
    return onednn_matmul(grad, weight.t())


def weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad^T @ x`` over all tokens: grad ``(..., N)``, x ``(..., K)`` -> ``(N, K)``, on
    the library :mod:`.gemm_choice` picks for ``(tokens, K, N)``."""
    tokens, k, n = x.numel() // x.shape[-1], x.shape[-1], grad.shape[-1]
    return weight_gradient_on(choose('weight_grad', tokens, k, n), grad, x)


def weight_gradient_on(library: str, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad^T @ x`` on ``'mkl'`` or ``'onednn'``.

    MKL reads both transposed operands in place; oneDNN reads the transposed x as its
    weight in place but copies the transposed grad, its input, into a dense
    ``(N, tokens)`` buffer. On the AVX-512 AMD EPYC MKL won for many tokens into a layer no
    wider than its output (``K <= N``, more than ``16 K`` tokens: the early stages' qkv and
    fc1, ~3x), oneDNN everywhere else (1.3-2x, copy included): :func:`.gemm_choice.rule`.
    """
    flat_grad = grad.reshape(-1, grad.shape[-1])
    flat_x = x.reshape(-1, x.shape[-1])
    if library == 'mkl':
        return flat_grad.t().mm(flat_x)
    return torch.ops.mkldnn._linear_pointwise(flat_grad.t(), flat_x.t(), None, 'none', [], '')


class _OneDnnLinearFunction(torch.autograd.Function):
    """``F.linear`` with each of its three matmuls on the library :mod:`.gemm_choice` picks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_forward(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = linear_input_grad(grad, weight)
        if ctx.needs_input_grad[1]:
            grad_w = weight_gradient(grad, x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and results to float32 rounding) whose
    float32 CPU matmuls run on oneDNN or MKL by shape; see the module docstring. Made from a
    built ``nn.Linear`` by :meth:`adopt`."""

    _packed: dict[torch.dtype, tuple[tuple, torch.Tensor]]

    @classmethod
    def adopt(cls, module: nn.Linear) -> None:
        """Turn ``module`` into this class in place (parameters untouched)."""
        module.__class__ = cls
        module._packed = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        return self.with_bias(x, self.bias)

    def with_bias(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This layer's weight with another bias (V2's qkv bias is assembled from q and v)."""
        dtype = _onednn_dtype(x, self.weight)
        if dtype is None:
            return F.linear(x, self.weight, bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            self.drop_inference_cache()
            return _OneDnnLinearFunction.apply(x, self.weight, bias)  # float32 only, see above
        if dtype == torch.float32 and choose('inference', x.numel() // self.in_features,
                                             self.in_features, self.out_features) == 'mkl':
            return F.linear(x, self.weight, bias)
        bias = None if bias is None else bias.detach().to(dtype)
        return onednn_matmul(x.to(dtype), self._packed_weight(dtype), bias)

    def train(self, mode: bool = True) -> OneDnnLinear:
        """Also drops the packed weights, see :meth:`drop_inference_cache`."""
        self.drop_inference_cache()
        return super().train(mode)

    def drop_inference_cache(self) -> None:
        """Forget the packed weights. Called by ``train()`` / ``eval()`` and by every
        forward that records gradients (here and in callers that use the weight directly):
        writes that leave the version counter alone (fused optimisers such as
        ``AdamW(fused=True)``, ``.data`` writes such as mmengine's ``EMAHook`` swaps) come
        after a training forward or before an ``eval()``."""
        self._packed.clear()

    def _packed_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight in ``dtype``, reordered into oneDNN's layout; rebuilt when the weight
        changes (in place: version counter; replaced or moved: storage)."""
        weight = self.weight
        key = (weight._version, weight.data_ptr(), tuple(weight.shape))
        cached = self._packed.get(dtype)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), None)
            cached = self._packed[dtype] = (key, packed)
        return cached[1]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state['_packed'] = {}  # caches in oneDNN's layout: rebuilt on first use
        return state
