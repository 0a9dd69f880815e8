"""The CPU layer runs the inference MLP branch over token chunks that stay in cache, and
attention on large maps over chunks of windows; the result is the one of the whole map at
once, which is what runs whenever autograd is on."""
from __future__ import annotations

import pytest
import torch

from scale import assert_close_to_scale
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.cpu import accelerate, modules, recompute

TINY = dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4])


@pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])
def test_chunked_feed_forward_equals_whole_map(cls, monkeypatch) -> None:
    monkeypatch.setattr(recompute, 'HIDDEN_PER_CHUNK', 1024)  # 256-token chunks here
    torch.manual_seed(0)
    model = accelerate(cls(arch=TINY, window_size=4, drop_path_rate=0., out_indices=(0, 1))).eval()
    x = torch.randn(2, 3, 77, 93)  # 2 x 20 x 24 stage-1 tokens: 3.75 chunks
    calls = []
    model.stages[0].blocks[0].mlp.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[:-1].numel()))
    with torch.no_grad():
        chunked = model(x)
    assert calls == [256, 256, 256, 192]
    whole = model(x)  # autograd on: no chunks
    for a, b in zip(chunked, whole):
        assert_close_to_scale(a, b.detach(), 1e-5)

    model.train()  # drop-path is per sample: training mode never chunks, even without grad
    calls.clear()
    with torch.no_grad():
        model(x)
    assert calls == [2 * 20 * 24]


@pytest.mark.parametrize('cls', [SwinTransformer, SwinTransformerV2], ids=['v1', 'v2'])
def test_chunked_window_attention_equals_whole_map(cls, monkeypatch) -> None:
    """Large maps attend in chunks of windows without autograd, across images (every window
    of a call shares its mask): a shifted block's four regions each in chunks."""
    monkeypatch.setattr(modules, '_CHUNK_ABOVE_BYTES', 0)
    monkeypatch.setattr(modules, '_CHUNK_BYTES', 7 * 16 * 32 * 4)  # 7 windows of 16 x 32
    torch.manual_seed(0)
    model = accelerate(cls(arch=TINY, window_size=4, drop_path_rate=0., out_indices=(0, 1))).eval()
    x = torch.randn(2, 3, 77, 93)  # stage 1: 20 x 24 tokens, 5 x 6 = 30 windows per image
    chunk_sizes = []
    proj = model.stages[0].blocks[1].attn.proj  # a shifted block: four regions
    proj.register_forward_hook(lambda m, i, o: chunk_sizes.append(i[0].shape[0]))
    with torch.no_grad():
        chunked = model(x)
        # interior 2 x 4 x 5 = 40 windows, right column 2 x 4, bottom row 2 x 5, corner 2
        assert chunk_sizes == [7] * 5 + [5] + [7, 1] + [7, 3] + [2]
        monkeypatch.setattr(modules, '_CHUNK_ABOVE_BYTES', 1 << 40)
        whole = model(x)
    assert chunk_sizes[-4:] == [40, 8, 10, 2]
    for a, b in zip(chunked, whole):
        assert_close_to_scale(a, b, 1e-5)
