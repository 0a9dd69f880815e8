"""The CPU layer's inference caches (oneDNN-packed weights, the attention bias + edge masks)
never outlive the weights they were built from, even when a write leaves the version counter
alone: ``AdamW(fused=True)`` steps and writes through ``.data`` (mmengine's ``EMAHook``).
The reference model keeps no caches."""
from __future__ import annotations

import copy

import pytest
import torch

from scale import assert_close_to_scale
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import accelerate
from swin_backbone.cpu.linear import OneDnnLinear, onednn_linear_available
from swin_backbone.cpu.modules import _CpuAttention
from torch_support import CPU_FUSED_ADAMW

FUSED = pytest.mark.skipif(not CPU_FUSED_ADAMW, reason='no CPU AdamW(fused=True) before torch '
                           '2.4: the hazard these tests guard does not exist there')

TINY = dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4])
MODELS = [SwinTransformer, SwinTransformerV2]


def _model(cls: type, accelerated: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(arch=TINY, window_size=4, out_indices=(0, 1))
    return accelerate(model) if accelerated else model


def _infer(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(x))


def _reference(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of a reference model holding ``model``'s current weights (no caches)."""
    fresh = _model(type(model), accelerated=False).eval()
    fresh.load_state_dict(model.state_dict())
    return _infer(fresh, x)


def _fused_adamw_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    versions = [p._version for p in model.parameters()]
    sum(o.square().mean() for o in model(x)).backward()
    optimizer.step()
    # The premise of this file: the fused kernel leaves version counters as they were.
    assert [p._version for p in model.parameters()] == versions


def _assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want):
        assert_close_to_scale(g, w, 2e-5)


@FUSED
@pytest.mark.parametrize('cls', MODELS)
def test_validation_after_a_fused_optimiser_step_sees_the_new_weights(cls: type) -> None:
    """The Runner's order: eval (caches built), train() and a step, eval() again."""
    model = _model(cls)
    x = torch.randn(1, 3, 40, 56)
    before = _infer(model.eval(), x)
    _fused_adamw_step(model.train(), x)
    after = _infer(model.eval(), x)
    _assert_close(after, _reference(model, x))
    assert not torch.allclose(after[0], before[0], atol=1e-3)


@FUSED
@pytest.mark.parametrize('cls', MODELS)
def test_training_without_a_mode_switch_drops_the_caches(cls: type) -> None:
    """A training forward (gradients recorded) drops the caches even in eval mode."""
    model = _model(cls).eval()
    x = torch.randn(1, 3, 40, 56)
    _infer(model, x)
    _fused_adamw_step(model, x)
    _assert_close(_infer(model, x), _reference(model, x))


@pytest.mark.parametrize('cls', MODELS)
def test_writes_through_data_are_seen_after_eval(cls: type) -> None:
    """mmengine's EMAHook swaps weights with ``p.data.copy_``, then calls ``eval()``."""
    model = _model(cls).eval()
    x = torch.randn(1, 3, 40, 56)
    _infer(model, x)
    with torch.no_grad():
        for p in model.parameters():
            p.data.copy_(p.data * 1.1 + 0.01)
    _assert_close(_infer(model.eval(), x), _reference(model, x))


@pytest.mark.skipif(not onednn_linear_available(), reason='no oneDNN: nothing is packed')
@pytest.mark.parametrize('cls', MODELS)
def test_caches_are_reused_between_inference_forwards(cls: type) -> None:
    model = _model(cls).eval()
    x = torch.randn(1, 3, 40, 56)
    _infer(model, x)
    attention = [m for m in model.modules() if isinstance(m, _CpuAttention)]
    # V2's log-CPB MLP runs in float32 through F.linear (the reference's own path): not packed.
    linears = [m for n, m in model.named_modules()
               if isinstance(m, OneDnnLinear) and '.cpb_mlp.' not in n]
    assert len(attention) == 4 and len(linears) > 16
    # A regular block's one bias; a shifted block's bias with each of its three edge masks
    # and alone (its interior windows).
    assert [len(m._mask_cache) for m in attention] == [1, 4, 1, 4]
    masks = [[mask for _, mask in m._mask_cache] for m in attention]
    packed = [dict(m._packed) for m in linears]
    assert all(packed)
    _infer(model, x)
    assert all(len(m._mask_cache) == len(kept) and all(a is b for (_, a), b in
                                                        zip(m._mask_cache, kept))
               for m, kept in zip(attention, masks))
    assert all(m._packed[k][1] is v[1] for m, p in zip(linears, packed) for k, v in p.items())
    clone = copy.deepcopy(model)
    _assert_close(_infer(clone, x), _infer(model, x))
