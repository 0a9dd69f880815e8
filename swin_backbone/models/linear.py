"""``nn.Linear`` whose float32 CPU matmuls run on oneDNN instead of MKL.

PyTorch sends a float32 ``F.linear`` on x86 CPUs to MKL's sgemm. On the AMD EPYC (AVX-512)
machines this project is measured on, oneDNN, which ships inside PyTorch, is 1.3x-3x
faster for the tall, thin matmuls of a Swin backbone (tokens x 96..3072 channels); see
``tools/benchmark.py``. :class:`Linear` keeps ``nn.Linear``'s parameters and state-dict
keys and only changes which library multiplies:

* without autograd (inference): ``torch.ops.mkldnn._linear_pointwise`` with the weight
  reordered once into oneDNN's blocked layout, cached until the weight changes (its
  version counter or storage);
* with autograd (training): a ``Function`` whose forward and input gradient run on oneDNN
  and whose weight gradient is one MKL ``mm`` (MKL reads the transposed operand in place).

Everything else keeps ``F.linear``: other devices and dtypes, autocast, ``torch.compile``
(inductor packs weights itself), and any call inside :func:`plain_linear`, the reference
path the tests compare against.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ['Linear', 'onednn_linear_available', 'plain_linear']

_state = threading.local()


def onednn_linear_available() -> bool:
    """Whether this PyTorch build has the oneDNN linear kernels :class:`Linear` uses."""
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_linear_pointwise')
            and hasattr(torch.ops.mkldnn, '_reorder_linear_weight'))


_AVAILABLE = onednn_linear_available()


@contextlib.contextmanager
def plain_linear() -> Iterator[None]:
    """Within this context (per thread) every :class:`Linear` calls ``F.linear``."""
    previous = getattr(_state, 'plain', False)
    _state.plain = True
    try:
        yield
    finally:
        _state.plain = previous


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_AVAILABLE and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.device.type == 'cpu' and weight.device.type == 'cpu' and x.numel() > 0
            and not getattr(_state, 'plain', False)
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling())


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight^T + bias`` on oneDNN; x ``(..., K)``, weight ``(N, K)`` plain or packed."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, 'none', [], '')


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` with forward and input gradient on oneDNN, weight gradient on MKL."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad, weight.t().contiguous(), None)
        flat_grad = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = flat_grad.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat_grad.sum(0)
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and results to float32 rounding) that
    multiplies on oneDNN for float32 CPU tensors; see the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._packed: tuple[tuple, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        return self.with_bias(x, self.bias)

    def with_bias(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This layer's weight with another bias (V2's qkv bias is assembled from q and v)."""
        if not _onednn_applies(x, self.weight):
            return F.linear(x, self.weight, bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            return _OneDnnLinear.apply(x, self.weight, bias)
        return _onednn(x, self._packed_weight(), bias)

    def _packed_weight(self) -> torch.Tensor:
        weight = self.weight
        key = (weight._version, weight.data_ptr(), tuple(weight.shape))
        if self._packed is None or self._packed[0] != key:
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
            self._packed = (key, packed)
        return self._packed[1]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state['_packed'] = None  # a cache in oneDNN's layout: rebuilt on first use
        return state
