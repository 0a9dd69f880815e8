"""The CPU layer's oneDNN linear against ``F.linear``: same outputs and gradients, a weight
cache that follows every weight change, and ``F.linear`` wherever oneDNN does not apply."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scale import assert_close_to_scale
from swin_backbone.cpu import linear as cpu_linear
from swin_backbone.cpu.linear import OneDnnLinear, onednn_bf16_available, onednn_linear_available

pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason='no oneDNN in this build')



def _layer(bias: bool = True) -> OneDnnLinear:
    torch.manual_seed(0)
    layer = nn.Linear(48, 80, bias=bias)
    OneDnnLinear.adopt(layer)
    return layer


@pytest.mark.parametrize('bias', [True, False])
def test_inference_matches_f_linear(bias: bool) -> None:
    layer = _layer(bias)
    x = torch.randn(2, 7, 9, 48).transpose(1, 2)  # 4-D and not contiguous
    with torch.no_grad():
        assert_close_to_scale(layer(x), F.linear(x, layer.weight, layer.bias), 1e-5)
        other = torch.randn(80)
        assert_close_to_scale(layer.with_bias(x, other), F.linear(x, layer.weight, other), 1e-5)


@pytest.mark.parametrize('tokens', [15, 2000], ids=['weight-grad-onednn', 'weight-grad-mkl'])
@pytest.mark.parametrize('bias', [True, False])
def test_gradients_match_f_linear(bias: bool, tokens: int) -> None:
    layer = _layer(bias)
    x = torch.randn(tokens // 5, 5, 48, requires_grad=True)
    grad_out = torch.randn(tokens // 5, 5, 80)
    layer(x).backward(grad_out)
    got = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    F.linear(x, layer.weight, layer.bias).backward(grad_out)
    want = [x.grad] + [p.grad for p in layer.parameters()]
    for g, w in zip(got, want):
        assert_close_to_scale(g, w, 1e-5)


def test_packed_weight_follows_every_weight_change() -> None:
    layer = _layer()
    x = torch.randn(4, 48)
    with torch.no_grad():
        layer(x)  # builds the packed copy
        layer.weight.mul_(2)  # in-place, as an optimiser step
        assert_close_to_scale(layer(x), F.linear(x, layer.weight, layer.bias), 1e-5)
        layer.load_state_dict({'weight': torch.randn(80, 48), 'bias': torch.randn(80)})
        assert_close_to_scale(layer(x), F.linear(x, layer.weight, layer.bias), 1e-5)
        layer.weight = nn.Parameter(torch.randn(80, 48))  # a new tensor
        assert_close_to_scale(layer(x), F.linear(x, layer.weight, layer.bias), 1e-5)


def test_same_state_dict_and_copies_drop_the_cache() -> None:
    layer = _layer()
    assert layer.state_dict().keys() == nn.Linear(48, 80).state_dict().keys()
    with torch.no_grad():
        layer(torch.randn(2, 48))
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone._packed == {}
        x = torch.randn(2, 48)
        with torch.no_grad():
            assert torch.allclose(clone(x), layer(x), atol=1e-6)


@pytest.mark.skipif(not onednn_bf16_available(),
                    reason='this CPU has no oneDNN bf16 kernels (AVX-512 BW/VL/DQ, AVX-NE-CONVERT '
                           'or AMX): the layer takes F.linear, checked by the next test')
def test_bf16_autocast_inference_matches_autocast_f_linear() -> None:
    layer = _layer()
    x = torch.randn(64, 48)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got, want = layer(x), F.linear(x, layer.weight, layer.bias)
        layer.weight.mul_(-1)  # the packed bf16 copy follows
        flipped = layer(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    assert torch.allclose(flipped.float(), 2 * layer.bias.bfloat16().float() - got.float(),
                          rtol=2e-2, atol=5e-2)


def test_bf16_autocast_without_onednn_bf16_takes_f_linear(monkeypatch) -> None:
    """On a CPU without oneDNN bf16 kernels (the AVX2-only AMD EPYC 7002) oneDNN refuses a
    bf16 weight; the layer must then give autocast's own F.linear result."""
    monkeypatch.setattr(cpu_linear, '_BF16_AVAILABLE', False)
    layer = _layer()
    x = torch.randn(64, 48)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got, want = layer(x), F.linear(x, layer.weight, layer.bias)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert not layer._packed


def test_other_dtypes_and_autocast_take_f_linear() -> None:
    layer = _layer()
    x = torch.randn(4, 48)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # with autograd: autocast's own path
        assert layer(x).dtype == torch.bfloat16
    double = copy.deepcopy(layer).double()
    assert double(x.double()).dtype == torch.float64
    with torch.no_grad():
        assert layer(torch.randn(0, 48)).shape == (0, 80)
        traced = torch.jit.trace(layer, x)  # mmengine.analysis counts FLOPs on traces
    assert 'aten::linear' in str(traced.graph) and 'mkldnn' not in str(traced.graph)
