"""Contract tests over both versions: shapes, gradients, checkpointing, freezing, errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from swin_backbone import MODELS, SwinTransformer, SwinTransformerV2
from swin_backbone.models.blocks import DropPath, LayerNorm, SwinBlockV2

TINY = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
VERSIONS = [SwinTransformer, SwinTransformerV2]


def expected_sizes(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(math.ceil(h / 4), math.ceil(w / 4))]
    for _ in range(3):
        sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return sizes


@pytest.mark.parametrize('cls', VERSIONS)
@pytest.mark.parametrize('size', [(224, 224), (256, 256), (511, 511), (112, 137), (33, 47),
                                  (4, 4), (1, 1), (16, 2048)])
def test_output_shapes(cls, size):
    model = cls(arch=TINY, window_size=7).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (2, 16 * 2**i, *hw) for i, hw in enumerate(expected_sizes(*size))]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('cls', VERSIONS)
def test_tiny_arch_at_detection_size(cls):
    model = cls(arch='tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (96 * 2**i, *hw) for i, hw in enumerate(expected_sizes(800, 1333))]


def test_out_indices_select_stages_and_norms():
    model = SwinTransformerV2(arch=TINY, out_indices=(1, 3))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 128]
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')


def test_registered_in_own_scope_and_reachable_from_mmdet_and_mmseg():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    for registry in (MODELS, MMDET_MODELS, MMSEG_MODELS):
        model = registry.build(dict(type='swin_backbone.SwinTransformerV2', arch=TINY))
        assert type(model) is SwinTransformerV2
    assert MODELS.scope == 'swin_backbone'


def test_import_does_not_pull_mmdet_or_mmseg():
    import subprocess
    import sys
    code = ('import sys, swin_backbone; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmdet", "mmseg")]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('cls', VERSIONS)
def test_every_parameter_gets_a_gradient(cls):
    model = cls(arch=TINY, window_size=4, drop_path_rate=0.)
    # V2's zero-initialised post-norms would block gradients to the branches behind them.
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1., .1)
    sum(o.square().mean() for o in model(torch.randn(2, 3, 61, 45))).backward()
    named = list(model.named_parameters())
    assert len(named) > 50
    no_grad = [n for n, p in named if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad


@pytest.mark.parametrize('cls', VERSIONS)
def test_with_cp_gives_same_outputs_and_gradients(cls):
    plain = cls(arch=TINY, window_size=4, drop_path_rate=0.)
    ckpt = cls(arch=TINY, window_size=4, drop_path_rate=0., with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 50, 70)
    outs = [m(x) for m in (plain, ckpt)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    for m, o in zip((plain, ckpt), outs):
        sum(t.sum() for t in o).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_drop_path_rates_rise_linearly_over_all_blocks():
    model = SwinTransformer(arch=TINY, drop_path_rate=0.35)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.35, 8).tolist())


def test_v2_block_with_full_drop_path_returns_its_input():
    block = SwinBlockV2(16, 2, 4, shifted=True, drop_path=1.0).train()
    nn.init.ones_(block.norm1.weight)
    nn.init.ones_(block.norm2.weight)
    x = torch.randn(3, 9, 10, 16)
    layout_model = SwinTransformerV2(arch=TINY, window_size=4).stages[0]
    _, shifted = layout_model.layouts((9, 10), x.device)
    assert torch.equal(block(x, shifted), x)
    assert DropPath(1.0).train()(x).abs().sum() == 0


def test_v2_post_norms_start_at_zero_like_the_official_code():
    model = SwinTransformerV2(arch=TINY)
    norms = [n for s in model.stages for b in s.blocks for n in (b.norm1, b.norm2)]
    assert len(norms) == 16
    assert all(n.weight.abs().sum() == 0 and n.bias.abs().sum() == 0 for n in norms)


@pytest.mark.parametrize('frozen', [0, 1, 3])
def test_frozen_stages_from_construction_and_through_train(frozen):
    model = SwinTransformerV2(arch=TINY, frozen_stages=frozen)
    frozen_prefixes = ['patch_embed.'] + [f'stages.{i}.' for i in range(frozen)] + \
        [f'norm{i}.' for i in range(frozen)]
    checked = 0
    for name, p in model.named_parameters():
        is_frozen = any(name.startswith(pref) for pref in frozen_prefixes)
        assert p.requires_grad != is_frozen, name
        checked += is_frozen
    assert checked > 0
    model.train()
    assert not model.patch_embed.training
    assert all(not model.stages[i].training for i in range(frozen))
    assert all(model.stages[i].training for i in range(frozen, 4))


def test_norm_eval_keeps_layer_norms_in_eval():
    model = SwinTransformer(arch=TINY, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
    assert len(norms) > 10 and not any(m.training for m in norms)
    assert model.stages[0].blocks[0].mlp.training


@pytest.mark.parametrize('bad, error, words', [
    (torch.randn(3, 64, 64), ValueError, ['4 dims', '(3, 64, 64)']),
    (torch.randn(1, 4, 64, 64), ValueError, ['3 input channels', 'got 4']),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, ['floating-point', 'uint8']),
    (torch.randn(0, 3, 64, 64), ValueError, ['empty', '(0, 3, 64, 64)']),
    (torch.randn(1, 3, 0, 64), ValueError, ['empty']),
])
def test_bad_inputs_raise_clear_errors(bad, error, words):
    with pytest.raises(error) as info:
        SwinTransformerV2(arch=TINY)(bad)
    assert all(w in str(info.value) for w in words), str(info.value)


@pytest.mark.parametrize('kwargs, words', [
    (dict(arch='huge'), ['huge', "'tiny'", "'large'"]),
    (dict(arch=dict(embed_dims=16, depths=[2, 2], num_heads=[1, 2, 4])), ['num_heads', 'depths']),
    (dict(arch=dict(embed_dims=18, depths=[2], num_heads=[4])), ['not divisible', 'num_heads[0]']),
    (dict(window_size=[7, 7]), ['window_size', 'one entry per stage']),
    (dict(window_size=0), ['window_size', '>= 1']),
    (dict(pretrained_window_size=[8, 8, 8]), ['pretrained_window_size']),
    (dict(out_indices=(0, 4)), ['out_indices']),
    (dict(frozen_stages=5), ['frozen_stages']),
])
def test_bad_construction_arguments_name_the_argument(kwargs, words):
    with pytest.raises(ValueError) as info:
        SwinTransformerV2(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_v1_rejects_pretrained_window_size():
    with pytest.raises(ValueError, match='SwinTransformerV2 argument'):
        SwinTransformer(pretrained_window_size=8)


def test_derived_buffers_are_not_in_state_dict():
    keys = list(SwinTransformerV2(arch=TINY).state_dict())
    assert keys and not [k for k in keys if 'relative_position_index' in k
                         or 'relative_coords_table' in k or 'mask' in k]
    assert any(k.endswith('attn.cpb_mlp.0.weight') for k in keys)


@pytest.mark.parametrize('cls', VERSIONS)
@pytest.mark.parametrize('out_indices', [(0, 1), (1,), (0, 2)])
def test_every_parameter_gets_a_gradient_for_any_out_indices(cls, out_indices):
    """DDP without find_unused_parameters: stages after max(out_indices) and that stage's
    patch merging are not built, so nothing built goes unused."""
    model = cls(arch=TINY, window_size=4, drop_path_rate=0., out_indices=out_indices)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1., .1)
    last = max(out_indices)
    assert len(model.stages) == last + 1 and model.stages[last].downsample is None
    assert all(model.stages[i].downsample is not None for i in range(last))
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16 * 2**i for i in out_indices]
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
