"""Training kernels that recompute cheap intermediates in backward instead of saving them.

Autograd keeps every intermediate an op needs for its gradient. In a Swin block the largest
of them are cheap to recompute from tensors that are saved anyway:

* the MLP's GELU output (``4C`` per token, the input of ``fc2``), one GELU away from its
  input, which GELU's own gradient keeps;
* the attention probabilities (``h * N`` per token), one ``q @ k^T`` away from q, k and
  the per-row log-sum-exp the fused CPU attention kernel returns;
* V2's normalised and scaled q and k (``2C`` per token), a multiply away from the raw q and
  k, which are views of the qkv output that v keeps alive.

:func:`gelu_mlp` and :func:`window_attention` save only those and recompute the rest,
cutting what a SwinV2-T training step keeps for backward by about a third. They run for
float32 CPU tensors with gradients (:func:`.fast_path.eager_cpu_float32`); the callers
fall back to plain modules everywhere else. Values and gradients equal the plain path's to
float32 rounding (``tests/test_recompute.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .linear import onednn_matmul, weight_gradient

__all__ = ['fused_attention_available', 'gelu_mlp', 'window_attention']


def fused_attention_available() -> bool:
    """Whether this PyTorch has the fused CPU attention kernel that returns log-sum-exp."""
    return hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu')


class _GeluMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` saving x and ``fc1(x)``; GELU is recomputed in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None,
                w2: torch.Tensor, b2: torch.Tensor | None) -> torch.Tensor:
        hidden = onednn_matmul(x, w1, b1)
        out = onednn_matmul(F.gelu(hidden), w2, b2)
        ctx.save_for_backward(x, hidden, w1, w2)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, hidden, w1, w2 = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_w2 = weight_gradient(grad, F.gelu(hidden)) if needs[3] else None
        grad_b2 = grad.reshape(-1, grad.shape[-1]).sum(0) if needs[4] and ctx.has_bias[1] else None
        grad_hidden = torch.ops.aten.gelu_backward(onednn_matmul(grad, w2.t().contiguous()),
                                                   hidden)
        del hidden
        grad_x = onednn_matmul(grad_hidden, w1.t().contiguous()) if needs[0] else None
        grad_w1 = weight_gradient(grad_hidden, x) if needs[1] else None
        grad_b1 = (grad_hidden.reshape(-1, grad_hidden.shape[-1]).sum(0)
                   if needs[2] and ctx.has_bias[0] else None)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


def gelu_mlp(x: torch.Tensor, fc1: torch.nn.Linear, fc2: torch.nn.Linear) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))`` with oneDNN matmuls, ``(..., C) -> (..., C_out)``; keeps
    ``C + 4C`` per token for backward instead of ``C + 8C``."""
    return _GeluMlp.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)


def _inverse_norm(x: torch.Tensor) -> torch.Tensor:
    """``1 / ||x||`` over the last dim, 0 for all-zero vectors: ``(..., d) -> (..., 1)``."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(norm > 0, norm.reciprocal(), 0.)


def _unit_vectors_backward(grad: torch.Tensor, unit: torch.Tensor,
                           inverse_norm: torch.Tensor) -> torch.Tensor:
    """Gradient through ``x -> x / ||x||`` given the unit vectors (zero for zero vectors)."""
    return inverse_norm * (grad - unit * (grad * unit).sum(-1, keepdim=True))


class _WindowAttention(torch.autograd.Function):
    """Window attention on the fused CPU kernel; backward recomputes the probabilities.

    Shapes: q, k, v ``(B * nW, h, N, d)`` (any strides), bias ``(h, N, N)``, shift mask
    ``(nW, N, N)`` or None, logit scale ``(h, 1, 1)`` (already clamped and exponentiated)
    or None for V1, whose q and k enter as they are and are multiplied by ``scale``.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                shift_mask: torch.Tensor | None, logit_scale: torch.Tensor | None,
                scale: float) -> torch.Tensor:
        inv_q = inv_k = None
        if logit_scale is not None:  # V2: cosine similarity times the logit scale
            inv_q, inv_k = _inverse_norm(q), _inverse_norm(k)
            q_in, k_in = q * (inv_q * logit_scale), k * inv_k
        else:
            q_in, k_in = q, k
        q4, k4, v4, mask = _fold_windows(q_in, k_in, v, bias, shift_mask)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q4, k4, v4, attn_mask=mask, scale=scale)
        ctx.save_for_backward(q, k, v, bias, shift_mask, logit_scale, inv_q, inv_k, lse)
        ctx.scale = scale
        return out.view(q.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, bias, shift_mask, logit_scale, inv_q, inv_k, lse = ctx.saved_tensors
        scale = ctx.scale
        if logit_scale is not None:
            unit_q, unit_k = q * inv_q, k * inv_k
            q_in, k_in = unit_q * logit_scale, unit_k
        else:
            q_in, k_in = q, k
        q4, k4, v4, mask = _fold_windows(q_in, k_in, v, bias, shift_mask)
        grad4 = grad_out.reshape(v4.shape)
        probs = torch.matmul(q4, k4.transpose(-1, -2))  # (B, nW * h, N, N) or (B_, h, N, N)
        if scale != 1.:
            probs.mul_(scale)
        probs.add_(mask).sub_(lse.unsqueeze(-1)).exp_()
        grad_v = torch.matmul(probs.transpose(-1, -2), grad4)
        grad_logits = torch.matmul(grad4, v4.transpose(-1, -2))
        grad_logits.sub_((grad_logits * probs).sum(-1, keepdim=True)).mul_(probs)
        del probs
        grad_bias = grad_logits.view(-1, *bias.shape).sum(0) if ctx.needs_input_grad[3] else None
        if scale != 1.:
            grad_logits.mul_(scale)
        grad_q = torch.matmul(grad_logits, k4).view(q.shape)
        grad_k = torch.matmul(grad_logits.transpose(-1, -2), q4).view(k.shape)
        grad_scale = None
        if logit_scale is not None:
            if ctx.needs_input_grad[5]:
                grad_scale = (grad_q * unit_q).sum((0, 2, 3)).view(logit_scale.shape)
            grad_q = _unit_vectors_backward(grad_q * logit_scale, unit_q, inv_q)
            grad_k = _unit_vectors_backward(grad_k, unit_k, inv_k)
        return grad_q, grad_k, grad_v.view(v.shape), grad_bias, None, grad_scale, None


def _fold_windows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                  shift_mask: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay q, k, v ``(B * nW, h, N, d)`` out for one additive mask that broadcasts over the
    batch: without shift ``(B * nW, h, N, d)`` with mask ``(1, h, N, N)``; with shift
    ``(B, nW * h, N, d)`` with bias + shift mask ``(1, nW * h, N, N)``."""
    if shift_mask is None:
        return q.contiguous(), k.contiguous(), v.contiguous(), bias.unsqueeze(0)
    b_, h, n, d = q.shape
    n_windows = shift_mask.shape[0]
    mask = (bias.unsqueeze(0) + shift_mask.unsqueeze(1)).view(1, n_windows * h, n, n)
    fold = (b_ // n_windows, n_windows * h, n, d)
    return q.reshape(fold), k.reshape(fold), v.reshape(fold), mask


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     shift_mask: torch.Tensor | None, logit_scale: torch.Tensor | None,
                     scale: float) -> torch.Tensor:
    """``softmax(scale * q' k'^T + bias + shift_mask) v`` within windows, ``(B * nW, h, N, d)``.

    V1: ``q' = q``, ``k' = k``. V2 (``logit_scale`` given, ``(h, 1, 1)``, ``scale=1``):
    ``q' = logit_scale * q / ||q||``, ``k' = k / ||k||``, with zero gradient at zero
    vectors (as :func:`.attention.unit_vectors`). Saves q, k, v and the log-sum-exp only.
    """
    return _WindowAttention.apply(q, k, v, bias, shift_mask, logit_scale, scale)
