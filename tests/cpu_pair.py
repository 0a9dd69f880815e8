"""A tiny reference backbone and its CPU-layer copy on the same weights, for the CPU-layer
tests (``tests/test_cpu_layer.py``, ``tests/test_bf16_attention.py``)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from swin_backbone.cpu import accelerate

TINY = dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4])


def reference_and_accelerated(cls: type, **kwargs) -> tuple[nn.Module, nn.Module]:
    """A reference backbone with non-trivial norms and its accelerated copy."""
    torch.manual_seed(0)
    reference = cls(arch=TINY, window_size=4, drop_path_rate=0., out_indices=(0, 1), **kwargs)
    for m in reference.modules():  # V2's zero-initialised post-norms would hide the branches
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1., .1)
            nn.init.normal_(m.bias, 0., .1)
    return reference, accelerate(copy.deepcopy(reference))
