"""torch.compile: the whole forward is one graph (no breaks) and H, W stay dynamic, in
inference and in a training step."""
from __future__ import annotations

import pytest
import torch

from swin_backbone import SwinTransformer, SwinTransformerV2


@pytest.mark.slow
def test_compile_fullgraph_with_dynamic_sizes():
    model = SwinTransformerV2(arch=dict(embed_dims=16, depths=[1, 2, 1, 1],
                                        num_heads=[1, 2, 4, 8]), window_size=4).eval()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # backend='eager' checks what dynamo captures without paying for C++ code generation on
    # a 2-core CI machine; fullgraph=True raises on any graph break.
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend='eager')
    with torch.no_grad():
        # Two sizes that pad and shift alike at every stage must share one graph.
        for size in [(61, 77), (62, 78)]:
            x = torch.randn(1, 3, *size)
            for a, b in zip(compiled(x), model(x)):
                torch.testing.assert_close(a, b)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


@pytest.mark.slow
@pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2])
def test_compiled_training_step_is_one_graph_with_the_eager_gradients(cls: type) -> None:
    """With gradients the forward also drops the inference caches (attribute writes that
    dynamo must trace without a break)."""
    torch.manual_seed(0)
    model = cls(arch=dict(embed_dims=16, depths=[1, 2], num_heads=[1, 2]), window_size=4,
                out_indices=(0, 1), drop_path_rate=0.).train()
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend='eager')
    x = torch.randn(1, 3, 40, 56)
    grads = []
    for run in (compiled, model):
        model.zero_grad()
        sum(o.square().mean() for o in run(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
