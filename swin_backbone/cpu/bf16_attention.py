"""Window attention for bfloat16 inference on CPU: batched GEMMs with a float32 softmax.

Two batched bf16 matmuls around a float32 mask and softmax, over chunks of windows whose
float32 logits stay in cache. In SwinV2-T / Swin-T forwards at 800x1344 under bf16 autocast
(a 2-core AVX-512 BF16 AMD EPYC, three interleaved A/B runs) the forward took 1.04-1.13x
(V2) and 1.05-1.11x (V1) as long with torch's fused CPU attention (SDPA); windows timed alone
do not show a gain at every stage (SwinV2-T's stage-1 windows: 36 ms against SDPA's 34), so
the choice rests on the whole-model runs. Not measured on an AMX CPU.

Precision: the products accumulate in float32 inside oneDNN and each is rounded once to
bf16 before the float32 mask and softmax, as timm's cosine attention rounds its products
under autocast; adding the bias in bf16 as well (a faster variant) made SwinV2-T's stage
outputs 16-22 % of their std off float32, against 12-17 % for timm and 10-14 % with this
kernel (the reference model: 11-14 %).
"""
from __future__ import annotations

import torch

__all__ = ['bf16_window_attention']

LOGIT_BYTES_PER_CHUNK = 4 << 20  # float32 logits of one chunk of windows


def bf16_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale * q k^T + mask) v`` for bf16 windows.

    Args:
        q, k, v: ``(B * nW, h, N, d)`` bfloat16 (strided views are fine).
        mask: ``(1, h, N, N)`` float32: relative position bias plus shift mask.
        scale: Multiplies the products (V1: ``d ** -0.5``; V2 scales q beforehand: 1.0).

    Returns:
        ``(B * nW, h, N, d)`` bfloat16, contiguous.
    """
    windows, heads, tokens, _ = q.shape
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    rows = max(1, LOGIT_BYTES_PER_CHUNK // (heads * tokens * tokens * 4))
    k_t = k.transpose(-1, -2)
    for first in range(0, windows, rows):
        part = slice(first, first + rows)
        products = torch.matmul(q[part], k_t[part])  # bf16, float32 accumulation
        logits = torch.add(mask, products, alpha=scale)  # float32
        probabilities = torch.softmax(logits, dim=-1).to(v.dtype)
        torch.matmul(probabilities, v[part], out=out[part])
    return out
