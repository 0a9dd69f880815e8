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
cutting what a training step at 2x512x512 keeps for backward by 38 % (SwinV2-T: 904 MiB
against 1469) and 25 % (Swin-T: 954 against 1276; ``tools/analysis_tools/benchmark.py``).
They run for float32 CPU tensors with gradients (:func:`.eager.eager_cpu_float32`); the callers
(:mod:`.modules`) fall back to the reference modules everywhere else. Values and gradients
equal the reference's to float32 rounding (``tests/test_cpu_layer.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .linear import linear_forward, linear_input_grad, weight_gradient

__all__ = ['fused_attention_available', 'gelu_mlp', 'token_chunks', 'window_attention']


def fused_attention_available() -> bool:
    """Whether this PyTorch has the fused CPU attention kernel that returns log-sum-exp."""
    return hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu')


HIDDEN_PER_CHUNK = 1 << 21  # MLP hidden activations per chunk of tokens (8 MiB in float32)
BACKWARD_PAIRS_PER_CHUNK = 1 << 23  # attention probabilities per chunk of windows (32 MiB)


class _GeluMlp(torch.autograd.Function):
    """``fc2(gelu(fc1(x)))`` saving x and ``fc1(x)``; GELU is recomputed in backward.

    Both passes run over chunks of tokens whose ``4C`` hidden activations stay in cache
    between the GELU and the matmul that consumes them.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None,
                w2: torch.Tensor, b2: torch.Tensor | None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        hidden, outs = [], []
        for rows in token_chunks(flat.shape[0], w1.shape[0]):
            hidden.append(linear_forward(flat[rows], w1, b1))
            outs.append(linear_forward(F.gelu(hidden[-1]), w2, b2))
        ctx.save_for_backward(flat, w1, w2, *hidden)
        ctx.has_bias = (b1 is not None, b2 is not None)
        return _concat(outs).view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        flat, w1, w2, *hidden = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_flat = grad.reshape(-1, grad.shape[-1])
        grad_x, grad_w1, grad_b1, grad_w2, grad_b2 = [], None, None, None, None
        for rows, h in zip(token_chunks(flat.shape[0], w1.shape[0]), hidden):
            g = grad_flat[rows]
            if needs[3]:
                grad_w2 = _accumulate(grad_w2, weight_gradient(g, F.gelu(h)))
            if needs[4] and ctx.has_bias[1]:
                grad_b2 = _accumulate(grad_b2, g.sum(0))
            grad_h = torch.ops.aten.gelu_backward(linear_input_grad(g, w2), h)
            if needs[0]:
                grad_x.append(linear_input_grad(grad_h, w1))
            if needs[1]:
                grad_w1 = _accumulate(grad_w1, weight_gradient(grad_h, flat[rows]))
            if needs[2] and ctx.has_bias[0]:
                grad_b1 = _accumulate(grad_b1, grad_h.sum(0))
        grad_x = _concat(grad_x).view(*grad.shape[:-1], w1.shape[1]) if needs[0] else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


def token_chunks(tokens: int, hidden: int) -> list[slice]:
    """Row ranges of at most ``HIDDEN_PER_CHUNK / hidden`` tokens (at least 256): the MLP's
    chunks, in training (:func:`gelu_mlp`) and in inference (:mod:`.modules`)."""
    rows = max(256, HIDDEN_PER_CHUNK // hidden)
    return [slice(start, start + rows) for start in range(0, tokens, rows)]


def _concat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _accumulate(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total.add_(part)


def gelu_mlp(x: torch.Tensor, fc1: torch.nn.Linear, fc2: torch.nn.Linear) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))``, ``(..., C) -> (..., C_out)``, with oneDNN / MKL matmuls
    (:mod:`.gemm_choice`); keeps ``C + 4C`` per token for backward instead of ``C + 8C``."""
    return _GeluMlp.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias)


def _inverse_norm(x: torch.Tensor) -> torch.Tensor:
    """``1 / ||x||`` over the last dim, 0 for all-zero vectors: ``(..., d) -> (..., 1)``."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(norm > 0, norm.reciprocal(), 0.)


def _unit_vectors_backward(grad: torch.Tensor, unit: torch.Tensor, inverse_norm: torch.Tensor,
                           out: torch.Tensor) -> torch.Tensor:
    """Gradient through ``x -> x / ||x||`` given the unit vectors (zero for zero vectors),
    written into ``out``."""
    return torch.mul(grad - unit * (grad * unit).sum(-1, keepdim=True), inverse_norm, out=out)


class _WindowAttention(torch.autograd.Function):
    """Window attention on the fused CPU kernel; backward recomputes the probabilities.

    Shapes: qkv ``(3, B * nW, h, N, d)`` (the permuted view of the qkv projection, whose
    layout the gradient keeps), bias ``(h, N, N)``, shift mask ``(nW, N, N)`` or None,
    logit scale ``(h, 1, 1)`` (already clamped and exponentiated) or None for V1, whose q
    and k enter as they are and are multiplied by ``scale``.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, bias: torch.Tensor, shift_mask: torch.Tensor | None,
                logit_scale: torch.Tensor | None, scale: float) -> torch.Tensor:
        q, k, v = qkv.unbind(0)
        inv_q = inv_k = None
        if logit_scale is not None:  # V2: cosine similarity times the logit scale
            # fresh contiguous copies (qkv is saved as it is): ~4x faster norms than on views
            q, k = (t.clone(memory_format=torch.contiguous_format) for t in (q, k))
            inv_q, inv_k = _inverse_norm(q), _inverse_norm(k)
            q, k = q.mul_(inv_q * logit_scale), k.mul_(inv_k)
        mask = _additive_mask(bias, shift_mask)
        kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = kernel(q, k, v, attn_mask=mask, scale=scale)
        ctx.save_for_backward(qkv, bias, shift_mask, logit_scale, inv_q, inv_k, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        qkv, bias, shift_mask, logit_scale, inv_q, inv_k, lse = ctx.saved_tensors
        scale = ctx.scale
        q, k, v = qkv.unbind(0)
        if logit_scale is not None:
            unit_q, unit_k = q * inv_q, k * inv_k
            q, k = unit_q * logit_scale, unit_k
        else:
            q, k = q.contiguous(), k.contiguous()
        mask = _additive_mask(bias, shift_mask)
        b_, h, n, _ = q.shape
        grad_qkv = torch.empty_like(qkv)  # same strides: the projection's gradient is dense
        grad_bias = grad_scale = None
        # The probabilities are recomputed over chunks of windows: (windows, h, N, N) at once
        # would be the largest tensor of the step at high resolution (453 MiB per block for
        # SwinV2-T window 16 at 1536x1536, twice with their gradient).
        rows = max(1, BACKWARD_PAIRS_PER_CHUNK // (h * n * n))
        for first in range(0, b_, rows):
            w = slice(first, first + rows)
            probs = torch.matmul(q[w], k[w].transpose(-1, -2))  # (windows, h, N, N)
            if scale != 1.:
                probs.mul_(scale)
            probs.add_(mask)
            probs.sub_(lse[w].unsqueeze(-1)).exp_()
            grad_qkv[2, w].copy_(torch.matmul(probs.transpose(-1, -2), grad_out[w]))
            grad_logits = torch.matmul(grad_out[w], v[w].transpose(-1, -2))
            grad_logits.sub_((grad_logits * probs).sum(-1, keepdim=True)).mul_(probs)
            del probs
            if ctx.needs_input_grad[1]:
                grad_bias = _accumulate(grad_bias, grad_logits.sum(0))
            if scale != 1.:
                grad_logits.mul_(scale)
            grad_q = torch.matmul(grad_logits, k[w])
            grad_k = torch.matmul(grad_logits.transpose(-1, -2), q[w])
            if logit_scale is None:
                grad_qkv[0, w].copy_(grad_q)
                grad_qkv[1, w].copy_(grad_k)
                continue
            if ctx.needs_input_grad[3]:
                grad_scale = _accumulate(grad_scale, (grad_q * unit_q[w]).sum((0, 2, 3)))
            _unit_vectors_backward(grad_q.mul_(logit_scale), unit_q[w], inv_q[w],
                                   out=grad_qkv[0, w])
            _unit_vectors_backward(grad_k, unit_k[w], inv_k[w], out=grad_qkv[1, w])
        if grad_scale is not None:
            grad_scale = grad_scale.view(logit_scale.shape)
        return grad_qkv, grad_bias, None, grad_scale, None


def _additive_mask(bias: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
    """Bias ``(h, N, N)`` plus the shift mask ``(N, N)`` every window shares: ``(1, h, N, N)``."""
    return (bias if shift_mask is None else bias + shift_mask).unsqueeze(0)


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, shift_mask: torch.Tensor | None,
                     logit_scale: torch.Tensor | None, scale: float) -> torch.Tensor:
    """``softmax(scale * q' k'^T + bias + shift_mask) v`` within windows: q, k, v stacked
    as ``(3, B * nW, h, N, d)`` in, ``(B * nW, h, N, d)`` out (in the fused kernel's
    ``(B * nW, N, h, d)`` memory layout, so merging the heads back is a view).

    V1: ``q' = q``, ``k' = k``. V2 (``logit_scale`` given, ``(h, 1, 1)``, ``scale=1``):
    ``q' = logit_scale * q / ||q||``, ``k' = k / ||k||``, with zero gradient at zero
    vectors (as ``models.attention.unit_vectors``). Saves q, k, v and the log-sum-exp only.
    """
    return _WindowAttention.apply(qkv, bias, shift_mask, logit_scale, scale)
