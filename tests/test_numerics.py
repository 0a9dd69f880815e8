"""Mixed precision: normalisation, logit scale, log-CPB and post-norms stay in float32, under
autocast and in a model cast to half precision."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.models import attention
from swin_backbone.models.attention import unit_vectors
from swin_backbone.models.blocks import LayerNorm, PatchMergingV2, SwinBlockV2, SwinStage
from torch_support import CPU_FLOAT16

NO_CPU_FP16 = pytest.mark.skipif(not CPU_FLOAT16, reason='this torch has no float16 CPU '
                                 'kernels (torch 2.1); the fake-CUDA traces cover fp16 there')

TINY = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def v2_stage() -> SwinStage:
    blocks = [SwinBlockV2(32, 2, 4, shifted=j == 1, pretrained_window_size=4) for j in range(2)]
    stage = SwinStage(blocks, window_size=4, downsample=PatchMergingV2(32))
    for m in stage.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
    return stage


@pytest.mark.parametrize('dtype,scale', [
    (torch.bfloat16, 1e4), (torch.bfloat16, 1e6),
    pytest.param(torch.float16, 1e2, marks=NO_CPU_FP16),
    pytest.param(torch.float16, 1e4, marks=NO_CPU_FP16)])
def test_autocast_with_huge_activations_stays_finite(dtype, scale):
    # The V2 residual stream is not normalised before attention and MLP (post-norm):
    # at these sizes the logits of a naive path (unnormalised q @ k^T in fp16) overflow.
    stage = v2_stage()
    x = (torch.randn(2, 9, 13, 32) * scale).requires_grad_()  # padded to 12x16 inside
    with torch.no_grad():
        q, k = (x @ stage.blocks[0].attn.qkv.weight.t()).flatten(0, 2).split(32, -1)[:2]
        assert ((q @ k.t()).abs() > torch.finfo(torch.float16).max).any()  # inf in fp16
    with torch.autocast('cpu', dtype=dtype):
        out, merged = stage(x)
    assert torch.isfinite(out).all() and torch.isfinite(merged).all()
    (out.float().square().mean() + merged.float().mean()).backward()
    assert torch.isfinite(x.grad).all()
    grads = {n: p.grad for n, p in stage.named_parameters() if p.grad is not None}
    assert len(grads) == len(list(stage.parameters()))
    assert [n for n, g in grads.items() if not torch.isfinite(g).all()] == []


def test_unit_vectors_equal_normalize_with_zero_gradient_at_zero():
    x = torch.randn(5, 8, dtype=torch.float64)
    x[1] = 0.
    x.requires_grad_()
    assert torch.equal(unit_vectors(x), F.normalize(x, dim=-1))
    unit_vectors(x).sum().backward()
    assert torch.equal(x.grad[1], torch.zeros(8, dtype=torch.float64))
    want = torch.autograd.grad(F.normalize(x, dim=-1)[[0, 2, 3, 4]].sum(), x)[0]
    assert torch.allclose(x.grad[[0, 2, 3, 4]], want[[0, 2, 3, 4]], atol=1e-12)


def test_sensitive_parts_run_in_float32_under_autocast(monkeypatch: pytest.MonkeyPatch):
    model = SwinTransformerV2(arch=TINY, window_size=4)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
    norm_dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: norm_dtypes.append(o.dtype))
             for m in model.modules() if isinstance(m, LayerNorm)]
    attention_calls = []  # one per regular block, one per region of a shifted block
    hooks += [m.register_forward_hook(lambda m, i, o: attention_calls.append(m))
              for m in model.modules() if isinstance(m, attention.CosineWindowAttention)]
    normalised_dtypes = []

    def recording_unit_vectors(x: torch.Tensor) -> torch.Tensor:
        normalised_dtypes.append(x.dtype)
        return unit_vectors(x)

    monkeypatch.setattr(attention, 'unit_vectors', recording_unit_vectors)
    attn = model.stages[0].blocks[0].attn
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 40, 40))
        bias = attn.relative_position_bias()
        scale = attn.clamped_logit_scale()
    for h in hooks:
        h.remove()
    assert len(norm_dtypes) > 20 and set(norm_dtypes) == {torch.float32}
    assert len(attention_calls) > 8
    assert len(normalised_dtypes) == 2 * len(attention_calls)  # q and k of every call
    assert set(normalised_dtypes) == {torch.float32}
    assert bias.dtype == scale.dtype == torch.float32
    assert all(o.dtype == torch.float32 for o in outs)
    # ...while the matmuls do run in bf16.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert model.stages[0].blocks[0].mlp.fc1(torch.randn(2, 16)).dtype == torch.bfloat16


@pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])
@pytest.mark.parametrize('dtype', [pytest.param(torch.float16, marks=NO_CPU_FP16),
                                   torch.bfloat16])
def test_a_model_cast_to_half_precision_runs_and_stays_near_float32(cls, dtype):
    """``model.half()`` / ``model.bfloat16()`` without autocast: every layer gets inputs of
    its own dtype (LayerNorm computes in float32 and returns the model's dtype), and the
    log-CPB and logit scale are computed from float32 copies of their weights."""
    torch.manual_seed(0)
    model = cls(arch=TINY, window_size=4, drop_path_rate=0.).eval()
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1., .1)
    x = torch.randn(1, 3, 45, 61)
    # ||diff|| / ||float32 output|| per stage, measured with two initialisations (seed 0 and
    # another parameter order): fp16 up to 0.2 % (V1) / 1.6 % (V2), bf16 (8x fp16's rounding
    # step) up to 1 % / 14 %: the V2 error grows through the post-norm stages. A broken
    # precision path (overflow, a float32 island cast down) is off by ~100 % or not finite.
    bound = 0.05 if dtype == torch.float16 else 0.3
    with torch.no_grad():
        want = model(x)
        half = model.to(dtype)
        assert half.stages[0].blocks[0].attn.relative_position_bias().dtype == torch.float32
        got = half(x.to(dtype))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        err = float((g.float() - w).norm() / w.norm())
        assert err < bound, err
    out = model.train()(x.to(dtype))  # and a training step
    sum(o.float().square().mean() for o in out).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
