"""The CPU layer's recomputing training kernels: same values and gradients as plain
autograd, less kept for backward, and the reference modules where they do not apply."""
from __future__ import annotations

import copy

import pytest
import torch

from scale import assert_close_to_scale
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import accelerate
from swin_backbone.cpu.recompute import fused_attention_available, gelu_mlp, window_attention
from swin_backbone.models.attention import unit_vectors
from swin_backbone.models.blocks import Mlp

pytestmark = pytest.mark.skipif(not fused_attention_available(),
                                reason='no fused CPU attention kernel in this PyTorch')


def _reference_attention(qkv, bias, shift_mask, logit_scale, scale):
    """Plain autograd (float64 in the tests), normalising as the reference model does: like
    ``F.normalize`` but with a zero gradient at zero vectors."""
    q, k, v = qkv.unbind(0)
    if logit_scale is not None:
        q = unit_vectors(q) * logit_scale
        k = unit_vectors(k)
    logits = q @ k.transpose(-1, -2) * scale + bias
    if shift_mask is not None:  # (N, N), shared by every window
        logits = logits + shift_mask
    return logits.softmax(-1) @ v


@pytest.mark.parametrize('cosine', [False, True], ids=['v1', 'v2'])
@pytest.mark.parametrize('shifted', [False, True], ids=['regular', 'shifted'])
@pytest.mark.parametrize('chunk', [None, 4], ids=['one chunk', 'chunks of 4 windows'])
def test_window_attention_matches_autograd(cosine: bool, shifted: bool, chunk: int | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused kernel's forward and its backward, whole or over chunks of windows (4, 2 of
    the 6), against float64 autograd."""
    torch.manual_seed(0)
    batch, windows, heads, tokens, dims = 2, 3, 2, 16, 8
    if chunk is not None:
        monkeypatch.setattr('swin_backbone.cpu.recompute.BACKWARD_PAIRS_PER_CHUNK',
                            chunk * heads * tokens * tokens)
    # (3, B * nW, h, N, d) as the attention module passes it: a view of the projection
    qkv = torch.randn(batch * windows, tokens, 3, heads, dims).permute(2, 0, 3, 1, 4)
    qkv[:, 1, :, 5] = 0.  # an all-zero (padded) token: zero vector for q and k
    bias = torch.randn(heads, tokens, tokens)
    shift_mask = (torch.randint(0, 2, (tokens, tokens)) * -100.).float() if shifted else None
    logit_scale = torch.rand(heads, 1, 1) * 20 + 1 if cosine else None
    scale = 1. if cosine else dims ** -0.5
    weights = torch.randn(batch * windows, heads, tokens, dims)

    def run(fn, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (qkv, bias)]
        scale_leaf = None if logit_scale is None else logit_scale.detach().to(dtype).requires_grad_()
        mask = None if shift_mask is None else shift_mask.to(dtype)
        out = fn(leaves[0], leaves[1], mask, scale_leaf, scale)
        (out * weights.to(dtype)).sum().backward()
        grads = [t.grad for t in leaves] + ([scale_leaf.grad] if cosine else [])
        return [out.detach()] + grads

    ours = run(window_attention, torch.float32)
    reference = run(_reference_attention, torch.float64)
    # The logit scale's gradient is a sum over every logit with cancelling signs: float32
    # rounding reaches 1.5e-5 of its size (the kernel in float64 agrees to 1e-14).
    for a, b, rel in zip(ours, reference, (1e-5, 1e-5, 1e-5, 1e-4)):
        assert_close_to_scale(a.double(), b, rel)
    if cosine:  # zero q and k vectors get a zero gradient, not 1 / eps
        assert ours[1][:2, 1, :, 5].abs().sum() == 0


@pytest.mark.parametrize('chunk', [None, 96 * 256], ids=['one chunk', 'chunks of 256 tokens'])
def test_gelu_mlp_matches_modules(chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if chunk is not None:  # 1000 tokens: three chunks of 256 and one of 232
        monkeypatch.setattr('swin_backbone.cpu.recompute.HIDDEN_PER_CHUNK', chunk)
    torch.manual_seed(0)
    mlp = Mlp(24, 96)
    x = torch.randn(2, 500, 24, requires_grad=True)
    weights = torch.randn(2, 500, 24)

    def run(fn):
        mlp.zero_grad()
        x.grad = None
        out = fn()
        (out * weights).sum().backward()
        return [out.detach(), x.grad] + [p.grad for p in mlp.parameters()]

    ours = run(lambda: gelu_mlp(x, mlp.fc1, mlp.fc2))
    reference = run(lambda: mlp(x))  # the reference Mlp: nn.Linear, GELU, nn.Linear
    for a, b in zip(ours, reference):
        assert_close_to_scale(a, b, 1e-5)


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct storages autograd keeps for backward of ``model(x)``."""
    storages = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    del outs
    return sum(storages.values())


@pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])
def test_accelerated_model_keeps_less_for_backward(cls) -> None:
    """The GELU outputs and attention probabilities (and V2's normalised q, k) are not kept:
    measured 0.68x (V1) and 0.61x (V2) of the reference for this model."""
    torch.manual_seed(0)
    model = cls(arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]), window_size=8,
                drop_path_rate=0., out_indices=(0, 1)).train()
    x = torch.randn(2, 3, 128, 128)
    reference = _saved_bytes(model, x)
    fast = _saved_bytes(accelerate(copy.deepcopy(model)), x)
    assert fast < 0.8 * reference, (fast, reference)


@pytest.mark.parametrize('case', ['dropout', 'float64', 'bf16 autocast', 'no grad'])
def test_fallbacks_take_the_reference_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernels do not apply (dropout, other dtypes, autocast, inference) the
    reference modules run, and training still works."""
    def refuse(*args):
        raise AssertionError('recomputing kernel called')

    monkeypatch.setattr('swin_backbone.cpu.modules.window_attention', refuse)
    monkeypatch.setattr('swin_backbone.cpu.modules.gelu_mlp', refuse)
    torch.manual_seed(0)
    model = SwinTransformerV2(arch=dict(embed_dims=16, depths=[2], num_heads=[2]),
                              window_size=4, drop_path_rate=0., out_indices=(0,),
                              drop_rate=0.1 if case == 'dropout' else 0.,
                              attn_drop_rate=0.1 if case == 'dropout' else 0.)
    accelerate(model)
    x = torch.randn(1, 3, 16, 16)
    if case == 'float64':
        model, x = model.double(), x.double()
    if case == 'no grad':
        with torch.no_grad():
            model(x)
        return
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=case == 'bf16 autocast'):
        out = model(x)[0]
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
