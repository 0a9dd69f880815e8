"""The CPU layer (``swin_backbone.cpu.accelerate``) against the reference model on the same
weights: outputs and every gradient, with tolerances relative to each tensor's scale."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import accelerate, is_accelerated
from swin_backbone.cpu.linear import OneDnnLinear, onednn_linear_available
from cpu_pair import TINY, reference_and_accelerated
from scale import assert_close_to_scale

VERSIONS = pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])
# Measured on an Intel Xeon (AMX): outputs 2e-6, gradients 5e-6 of their scale.
OUTPUT_REL, GRAD_REL = 2e-5, 1e-4


def _outputs_and_gradients(model: nn.Module, x: torch.Tensor, train: bool
                           ) -> list[tuple[str, torch.Tensor]]:
    model.train(train)
    model.zero_grad()
    with torch.set_grad_enabled(train):
        outs = model(x)
    named = [(f'out{i}', o.detach()) for i, o in enumerate(outs)]
    if train:
        # Random weights: a weighting constant over channels has zero gradient through the
        # output LayerNorms and would compare rounding noise.
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
                   for i, o in enumerate(outs)]
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        named += [(n, p.grad) for n, p in model.named_parameters()]
    return named


@pytest.mark.skipif(not onednn_linear_available(), reason='no oneDNN in this build')
@VERSIONS
@pytest.mark.parametrize('train', [False, True], ids=['inference', 'training'])
def test_accelerated_equals_reference(cls: type, train: bool) -> None:
    reference, fast = reference_and_accelerated(cls)
    x = torch.randn(2, 3, 37, 45)  # pads at both stages, shifts in both
    want = _outputs_and_gradients(reference, x, train)
    got = _outputs_and_gradients(fast, x, train)
    assert [n for n, _ in got] == [n for n, _ in want]
    assert len(want) == (2 + len(list(reference.parameters())) if train else 2)
    for (name, a), (_, b) in zip(got, want):
        assert a is not None and b is not None, name
        assert_close_to_scale(a, b, OUTPUT_REL if name.startswith('out') else GRAD_REL, name)


@VERSIONS
def test_bf16_autocast_inference_stays_near_the_reference(cls: type) -> None:
    reference, fast = reference_and_accelerated(cls)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        pairs = list(zip(fast.eval()(x), reference.eval()(x)))
    for a, b in pairs:
        assert a.dtype == b.dtype == torch.float32
        assert_close_to_scale(a, b, 5e-2)  # bf16 rounding of both paths


def test_only_the_backbones_modules_change_class() -> None:
    backbone = SwinTransformerV2(arch=TINY, window_size=4, out_indices=(0, 1))
    model = nn.ModuleDict(dict(backbone=backbone, head=nn.Linear(64, 10)))
    keys = list(model.state_dict())
    assert not is_accelerated(model)
    assert accelerate(model) is model and accelerate(model) is model  # idempotent
    assert is_accelerated(model)
    assert type(model['head']) is nn.Linear
    linears = [m for m in backbone.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is OneDnnLinear for m in linears)
    assert list(model.state_dict()) == keys
    with pytest.raises(ValueError, match='no swin_backbone SwinTransformer'):
        accelerate(nn.Linear(2, 2))


def test_traced_accelerated_model_runs_the_reference_ops() -> None:
    """Tracing (mmengine.analysis counts FLOPs this way) and export see ``aten::linear``."""
    _, fast = reference_and_accelerated(SwinTransformerV2)
    with torch.no_grad():
        graph = str(torch.jit.trace(fast.eval(), torch.randn(1, 3, 32, 32)).inlined_graph)
    assert 'aten::linear' in graph and 'mkldnn' not in graph


def test_models_never_import_the_cpu_layer() -> None:
    code = ('import sys, swin_backbone, swin_backbone.models; '
            'bad = [m for m in sys.modules if m.startswith("swin_backbone.cpu")]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('strided', [False, True], ids=['contiguous', 'qkv view'])
def test_scaled_unit_vectors_match_normalize_and_leave_their_input(dtype: torch.dtype,
                                                                   strided: bool) -> None:
    from swin_backbone.cpu.modules import _scaled_unit_vectors
    qkv = torch.randn(5, 16, 3, 2, 8).to(dtype)
    x = qkv.permute(2, 0, 3, 1, 4)[0] if strided else qkv[:, :, 0, 0].contiguous()
    before = x.clone()
    scale = torch.tensor([[[3.]], [[10.]]]) if strided else torch.tensor(10.)
    got = _scaled_unit_vectors(x, scale)
    want = (torch.nn.functional.normalize(x.float(), dim=-1) * scale).to(dtype)
    assert got.dtype == dtype and got.is_contiguous()
    torch.testing.assert_close(got, want)
    assert torch.equal(x, before)
