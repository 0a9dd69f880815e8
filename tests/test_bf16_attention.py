"""bf16 window attention of the CPU layer (``swin_backbone/cpu/bf16_attention.py``): the
kernel against a float64 softmax, its chunks against one call, and the accelerated models
under bf16 autocast against their own float32, no further off than the reference model."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpu_pair import reference_and_accelerated
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import bf16_attention, modules

VERSIONS = pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])


def _windows(b: int = 30, h: int = 3, n: int = 16, d: int = 8) -> tuple[torch.Tensor, ...]:
    """q, k, v as strided views of one qkv tensor (as the attention modules pass them)."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(b, n, 3, h, d, generator=g).permute(2, 0, 3, 1, 4).bfloat16()
    mask = torch.randn(1, h, n, n, generator=g) * 3
    mask[..., : n // 2, n // 2:] = -100.0  # a shift mask's blocked pairs
    return qkv[0], qkv[1], qkv[2], mask


@pytest.mark.parametrize('scale', [1.0, 8 ** -0.5])
def test_kernel_is_softmax_attention(scale: float) -> None:
    q, k, v, mask = _windows()
    out = bf16_attention.bf16_window_attention(q, k, v, mask, scale)
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                          attn_mask=mask.double(), scale=scale)
    assert out.dtype == torch.bfloat16 and out.shape == v.shape and out.is_contiguous()
    # bf16 inputs are exact in float64; what differs is the bf16 rounding of the logits,
    # the probabilities and the output (each 2^-9 relative)
    assert (out.double() - want).abs().max() <= 0.02 * want.abs().max()


def test_chunks_equal_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, mask = _windows(b=30)
    whole = bf16_attention.bf16_window_attention(q, k, v, mask, 1.0)
    per_window = 3 * 16 * 16 * 4
    monkeypatch.setattr(bf16_attention, 'LOGIT_BYTES_PER_CHUNK', 7 * per_window)  # 5 chunks
    calls = []
    softmax = torch.softmax
    monkeypatch.setattr(torch, 'softmax',
                        lambda x, dim: calls.append(x.shape[0]) or softmax(x, dim))
    chunked = bf16_attention.bf16_window_attention(q, k, v, mask, 1.0)
    assert calls == [7, 7, 7, 7, 2]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)


def _relative_errors(model: nn.Module, x: torch.Tensor) -> list[float]:
    """max |bf16 autocast - float32| / std of the float32 output, per output."""
    with torch.no_grad():
        exact = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    return [((b.float() - a).abs().max() / a.std()).item() for a, b in zip(exact, low)]


@VERSIONS
@pytest.mark.parametrize('bf16_gemms', [True, False], ids=['bf16 kernel', 'sdpa'])
def test_autocast_error_within_the_reference_models(cls: type, bf16_gemms: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Both bf16 paths of the CPU layer (the kernel where oneDNN has bf16 GEMMs, SDPA on
    CPUs that would emulate them) are as close to float32 as the reference model in bf16."""
    monkeypatch.setattr(modules, '_BF16_GEMMS', bf16_gemms)
    kernel_calls = []
    kernel = bf16_attention.bf16_window_attention
    monkeypatch.setattr(modules, 'bf16_window_attention',
                        lambda *a: kernel_calls.append(a[0].shape) or kernel(*a))
    reference, fast = (m.eval() for m in reference_and_accelerated(cls))
    x = torch.randn(2, 3, 45, 61)  # pads and shifts at both stages
    reference_errors = _relative_errors(reference, x)
    errors = _relative_errors(fast, x)
    assert bool(kernel_calls) == bf16_gemms
    for ours, theirs in zip(errors, reference_errors):
        assert 0 < ours <= 1.5 * theirs + 1e-3, (errors, reference_errors)


@VERSIONS
def test_float32_inference_never_takes_the_bf16_kernel(cls: type,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modules, '_BF16_GEMMS', True)
    monkeypatch.setattr(modules, 'bf16_window_attention',
                        lambda *a: pytest.fail('bf16 kernel on float32 windows'))
    with torch.no_grad():
        reference_and_accelerated(cls)[1].eval()(torch.randn(1, 3, 32, 32))
