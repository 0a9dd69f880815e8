"""Property-based: any batch, size, window and version gives the specified shapes, finite."""
from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swin_backbone import SwinTransformer, SwinTransformerV2

MODELS: dict = {}


def model(version: int, windows: tuple[int, ...]):
    key = (version, windows)
    if key not in MODELS:  # building is the slow part; keep one per configuration
        cls = SwinTransformerV2 if version == 2 else SwinTransformer
        MODELS[key] = cls(arch=dict(embed_dims=8, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4]),
                          window_size=list(windows)).eval()
    return MODELS[key]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([1, 2]), batch=st.integers(1, 3), h=st.integers(1, 97),
       w=st.integers(1, 97), windows=st.tuples(*[st.integers(1, 9)] * 4))
def test_shapes_and_finiteness(version, batch, h, w, windows):
    with torch.no_grad():
        outs = model(version, windows)(torch.randn(batch, 3, h, w))
    size = (math.ceil(h / 4), math.ceil(w / 4))
    for i, out in enumerate(outs):
        assert out.shape == (batch, 8 * 2**i, *size)
        assert torch.isfinite(out).all()
        size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
