"""Mixed precision: normalisation, logit scale, log-CPB and post-norms stay in float32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from swin_backbone import SwinTransformerV2
from swin_backbone.models.attention import unit_vectors
from swin_backbone.models.blocks import LayerNorm, SwinStage

TINY = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])


def v2_stage() -> SwinStage:
    stage = SwinStage(32, depth=2, window=(4, 4), drop_paths=[0., 0.], downsample=True,
                      num_heads=2, post_norm=True, pretrained_window=(4, 4))
    for m in stage.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
    return stage


@pytest.mark.parametrize('dtype,scale', [(torch.bfloat16, 1e4), (torch.bfloat16, 1e6),
                                         (torch.float16, 1e2), (torch.float16, 1e4)])
def test_autocast_with_huge_activations_stays_finite(dtype, scale):
    # The V2 residual stream is not normalised before attention and MLP (post-norm):
    # at these sizes the logits of a naive path (unnormalised q @ k^T in fp16) overflow.
    stage = v2_stage()
    x = (torch.randn(2, 9, 13, 32) * scale).requires_grad_()  # padded to 12x16 inside
    with torch.no_grad():
        q, k = (x.half() @ stage.blocks[0].attn.qkv.weight.half().t()).flatten(0, 2).split(32, -1)[:2]
        assert not torch.isfinite(q @ k.t()).all()
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


def test_sensitive_parts_run_in_float32_under_autocast():
    model = SwinTransformerV2(arch=TINY, window_size=4)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
    norm_dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: norm_dtypes.append(o.dtype))
             for m in model.modules() if isinstance(m, LayerNorm)]
    attn = model.stages[0].blocks[0].attn
    qk_dtypes = []
    original = attn._scaled_qk
    attn._scaled_qk = lambda q, k: (lambda r: (qk_dtypes.append((r[0].dtype, r[1].dtype)), r)[1])(
        original(q, k))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 40, 40))
        bias = attn.relative_position_bias()
    for h in hooks:
        h.remove()
    assert len(norm_dtypes) > 20 and set(norm_dtypes) == {torch.float32}
    assert qk_dtypes and set(qk_dtypes) == {(torch.float32, torch.float32)}
    assert bias.dtype == torch.float32
    assert all(o.dtype == torch.float32 for o in outs)
    # ...while the matmuls do run in bf16.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert model.stages[0].blocks[0].mlp.fc1(torch.randn(2, 16)).dtype == torch.bfloat16
