"""What a CUDA forward and training step of the backbone run, traced on fake CUDA tensors
(``tests/fake_cuda.py``) on this CPU-only build: one SDPA call per regular block and one per
region of a shifted block (interior, last row, last column, corner: ``models.window.
attend_by_region``), exactly one GEMM per linear layer applied, no CPU tensors, and nothing
but parameters and buffers kept by the modules afterwards. The accelerated model
(``swin_backbone.cpu``) runs the same on CUDA."""
from __future__ import annotations

import pytest
import torch

from fake_cuda import trace_fake_cuda
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import accelerate

SHAPE = (2, 3, 800, 1344)
MiB = 1 << 20


REGIONS = 4  # of a shifted block whose map has more than one window along both dimensions


def _linear_layers_applied(model: torch.nn.Module) -> int:
    """fc1, fc2 per block; qkv and proj once per regular block and once per region of a
    shifted one; V2's two log-CPB layers once per block; one per patch merging."""
    blocks = sum(len(stage.blocks) for stage in model.stages)
    shifted = sum(block.shifted for stage in model.stages for block in stage.blocks)
    mergings = sum(stage.downsample is not None for stage in model.stages)
    attention = 2 * (blocks - shifted + REGIONS * shifted)
    log_cpb = 2 * blocks if isinstance(model, SwinTransformerV2) else 0
    return 2 * blocks + attention + log_cpb + mergings


def _sdpa_calls(model: torch.nn.Module) -> int:
    return sum(REGIONS if block.shifted else 1 for stage in model.stages for block in stage.blocks)


def _models() -> list[tuple[str, torch.nn.Module]]:
    v2 = SwinTransformerV2(arch='tiny', window_size=16, pretrained_window_size=8)
    v1 = SwinTransformer(arch='tiny')
    return [('v2', v2), ('v1', v1), ('v2 accelerated', accelerate(SwinTransformerV2(
        arch='tiny', window_size=16, pretrained_window_size=8)))]


@pytest.fixture(scope='module')
def models() -> dict[str, torch.nn.Module]:
    return dict(_models())


def _assert_cuda_only(trace) -> None:
    assert not trace.cpu_ops, trace.cpu_ops
    assert not trace.real_tensor_inputs, trace.real_tensor_inputs
    assert all(device.startswith('cuda') for _, _, device in trace.outputs)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['v2', 'v1', 'v2 accelerated'])
def test_inference_forward_on_cuda(models, name: str) -> None:
    model = models[name].eval()
    trace = trace_fake_cuda(model, SHAPE)
    # 800x1344: every stage has more than one window along both dimensions, so 6 of the 12
    # blocks attend in 4 regions.
    assert trace.sdpa_calls == _sdpa_calls(model) == 6 + 6 * REGIONS
    assert trace.forward_gemms == _linear_layers_applied(model) == (111 if 'v2' in name else 87)
    assert trace.nn_calls['linear'] == trace.forward_gemms  # no chunk loops
    _assert_cuda_only(trace)
    assert trace.retained_bytes < MiB, trace.retained[:3]
    assert [shape for shape, _, _ in trace.outputs] == [
        (2, 96 * 2**i, -(-200 // 2**i), -(-336 // 2**i)) for i in range(4)]


@pytest.mark.slow
@pytest.mark.parametrize('autocast_dtype', [None, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16 autocast', 'bf16 autocast'])
def test_training_step_on_cuda(models, autocast_dtype) -> None:
    model = models['v2'].train()
    trace = trace_fake_cuda(model, SHAPE, train=True, autocast_dtype=autocast_dtype)
    assert trace.sdpa_calls == 6 + 6 * REGIONS
    assert trace.forward_gemms == 111
    # Two GEMMs per linear layer in backward (input and weight gradients), except the
    # log-CPB MLP's first layer, whose input is a constant table: weight gradient only.
    assert trace.backward_gemms == 2 * 111 - 12
    assert trace.params_without_grad == []
    _assert_cuda_only(trace)
    assert trace.retained_bytes < MiB, trace.retained[:3]
    if autocast_dtype is not None:
        gemm_dtypes = {g.dtype for g in trace.gemm_shapes if g.phase == 'forward'}
        # The backbone's GEMMs run in half precision, the log-CPB MLP in float32.
        assert gemm_dtypes == {autocast_dtype, torch.float32}
        assert sum(g.dtype == torch.float32 for g in trace.gemm_shapes
                   if g.phase == 'forward') == 2 * 12
        assert {s.dtype for s in trace.sdpa_shapes} == {autocast_dtype}
        assert all(dtype == torch.float32 for _, dtype, _ in trace.outputs)
