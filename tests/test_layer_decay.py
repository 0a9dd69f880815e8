"""LayerDecayOptimWrapperConstructor on tiny V1 / V2 Mask R-CNN detectors built by mmdet.

The detectors come from ``configs/mask_rcnn_swin_t.py`` with a tiny backbone, and the
constructor gets that config's own ``paramwise_cfg`` (the shared no-decay ``custom_keys``)
plus ``decay_rate``: the same path a real config takes through mmengine's registry.
"""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from paths import config
import swin_backbone  # noqa: F401  (registers the backbones and the constructor)
from swin_backbone.engine.optim import LayerDecayOptimWrapperConstructor, get_layer_id

REPO = Path(__file__).resolve().parents[1]
DEPTHS = [1, 2, 3, 1]  # L = 7 blocks: layer ids 0 (patch embed) .. 7, heads 8
L = sum(DEPTHS)
RATE = 0.9
LR, WD = 1e-4, 0.05  # configs/_base_/schedules/swin_adamw_1x.py


def _tiny_detector(version: int) -> nn.Module:
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(config('mask_rcnn_swin_t.py')))
    backbone = cfg.model.backbone
    backbone.arch = dict(embed_dims=16, depths=DEPTHS, num_heads=[1, 2, 2, 4])
    backbone.window_size = 4
    backbone.init_cfg = None
    if version == 1:
        backbone.type = 'swin_backbone.SwinTransformer'
        backbone.pop('pretrained_window_size')
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    init_default_scope('mmdet')
    return MODELS.build(cfg.model)


def _optim_wrapper_cfg(**paramwise) -> dict:
    cfg = Config.fromfile(str(config('mask_rcnn_swin_t.py'))).optim_wrapper.to_dict()
    cfg['constructor'] = 'swin_backbone.LayerDecayOptimWrapperConstructor'
    cfg['paramwise_cfg'] = dict(cfg['paramwise_cfg'], decay_rate=RATE, **paramwise)
    return cfg


@pytest.fixture(scope='module', params=[1, 2], ids=['v1', 'v2'])
def built(request) -> tuple[int, nn.Module, dict[str, dict]]:
    """(version, detector, parameter name -> its optimizer param group)."""
    model = _tiny_detector(request.param)
    optimizer = build_optim_wrapper(model, _optim_wrapper_cfg()).optimizer
    group_of = {id(p): g for g in optimizer.param_groups for p in g['params']}
    by_name = {n: group_of[id(p)] for n, p in model.named_parameters() if id(p) in group_of}
    return request.param, model, by_name


def _scale(layer_id: int) -> float:
    return RATE ** (L + 1 - layer_id)


@pytest.mark.parametrize('name, layer_id, decays', [
    ('backbone.patch_embed.proj.weight', 0, True),
    ('backbone.patch_embed.norm.weight', 0, False),
    # first block
    ('backbone.stages.0.blocks.0.attn.qkv.weight', 1, True),
    ('backbone.stages.0.blocks.0.norm1.weight', 1, False),
    ('backbone.stages.0.blocks.0.mlp.fc1.bias', 1, False),  # biases: flat_decay_mult=0
    # middle block: stage 2, block 1 -> 1 + 2 + 1 + 1
    ('backbone.stages.2.blocks.1.mlp.fc1.weight', 5, True),
    ('backbone.stages.2.blocks.1.attn.proj.weight', 5, True),
    # last block
    ('backbone.stages.3.blocks.0.mlp.fc2.weight', L, True),
    ('backbone.stages.3.blocks.0.norm2.bias', L, False),
    # merging at the end of stage 1 goes with the block it feeds: stage 2, block 0
    ('backbone.stages.1.downsample.reduction.weight', 4, True),
    ('backbone.stages.1.downsample.norm.weight', 4, False),
    # output norm of stage 1 goes with stage 1's last block
    ('backbone.norm1.weight', 3, False),
    ('backbone.norm3.bias', L, False),
    # outside the backbone: top id, lr scale 1
    ('neck.lateral_convs.0.conv.weight', L + 1, True),
    ('neck.fpn_convs.3.conv.bias', L + 1, False),
    ('roi_head.bbox_head.fc_cls.weight', L + 1, True),
])
def test_lr_and_weight_decay_per_parameter(built, name: str, layer_id: int,
                                           decays: bool) -> None:
    _, _, by_name = built
    group = by_name[name]
    assert group['layer_id'] == layer_id
    assert group['lr'] == pytest.approx(LR * _scale(layer_id), rel=1e-12)
    assert group['weight_decay'] == (WD if decays else 0.)


def test_version_specific_position_parameters_get_no_decay(built) -> None:
    version, _, by_name = built
    names = (['backbone.stages.0.blocks.0.attn.logit_scale',
              'backbone.stages.2.blocks.2.attn.cpb_mlp.0.weight',
              'backbone.stages.2.blocks.2.attn.q_bias', 'backbone.stages.2.blocks.2.attn.v_bias']
             if version == 2 else
             ['backbone.stages.0.blocks.0.attn.relative_position_bias_table',
              'backbone.stages.2.blocks.2.attn.relative_position_bias_table'])
    for name in names:
        assert by_name[name]['weight_decay'] == 0., name
    assert by_name[names[0]]['lr'] == pytest.approx(LR * _scale(1))  # stage 0, block 0
    assert by_name[names[1]]['layer_id'] == 6  # stage 2, block 2


def test_groups_cover_every_trainable_parameter_once(built) -> None:
    _, model, by_name = built
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(by_name) == sorted(trainable)
    # two groups (decay, no decay) per layer id: patch embed, L blocks, the heads
    assert len({g['group_name'] for g in by_name.values()}) == 2 * (L + 2) == 18


def test_first_group_has_the_base_lr(built) -> None:
    """mmengine logs the first group's lr; it must be the heads' (scale 1)."""
    _, model, _ = built
    optimizer = build_optim_wrapper(model, _optim_wrapper_cfg()).optimizer
    assert optimizer.param_groups[0]['lr'] == LR
    assert optimizer.param_groups[-1]['layer_id'] == 0
    assert len(optimizer.param_groups) == 18


def test_custom_lr_mult_multiplies_the_layer_scale() -> None:
    model = _tiny_detector(2)
    cfg = _optim_wrapper_cfg()
    cfg['paramwise_cfg']['custom_keys']['cpb_mlp'] = dict(lr_mult=10., decay_mult=0.)
    optimizer = build_optim_wrapper(model, cfg).optimizer
    (group,) = [g for g in optimizer.param_groups
                if any(p is model.backbone.stages[0].blocks[0].attn.cpb_mlp[0].weight
                       for p in g['params'])]
    assert group['lr'] == pytest.approx(10 * LR * _scale(1))
    assert group['group_name'] == 'layer_1_no_decay_1'  # beside layer_1_no_decay (lr x1)


def test_frozen_stages_are_left_out() -> None:
    model = _tiny_detector(2)
    model.backbone.patch_embed.requires_grad_(False)
    optimizer = build_optim_wrapper(model, _optim_wrapper_cfg()).optimizer
    assert all(g['layer_id'] != 0 for g in optimizer.param_groups)
    assert len(optimizer.param_groups) == 16


def test_ddp_wrapped_model_is_unwrapped(tmp_path: Path) -> None:
    model = _tiny_detector(2)
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                                         rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        optimizer = build_optim_wrapper(wrapped, _optim_wrapper_cfg()).optimizer
    finally:
        torch.distributed.destroy_process_group()
    assert len(optimizer.param_groups) == 18


def test_backbone_that_is_not_ours_is_a_clear_error() -> None:
    from mmdet.models.backbones import ResNet

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = ResNet(depth=18)
            self.neck = nn.Conv2d(512, 8, 1)

    with pytest.raises(TypeError, match=r'mmdet\.models\.backbones\.resnet\.ResNet'):
        build_optim_wrapper(Detector(), _optim_wrapper_cfg())
    with pytest.raises(TypeError, match='no `backbone` attribute'):
        build_optim_wrapper(nn.Linear(2, 2), _optim_wrapper_cfg())


def test_config_errors_are_explicit() -> None:
    optim = dict(optimizer=dict(type='AdamW', lr=LR, weight_decay=WD))
    with pytest.raises(ValueError, match='decay_rate'):
        LayerDecayOptimWrapperConstructor(deepcopy(optim), dict())
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        LayerDecayOptimWrapperConstructor(deepcopy(optim), dict(decay_rate=1.5))
    constructor = LayerDecayOptimWrapperConstructor(deepcopy(optim),
                                                    dict(decay_rate=RATE, num_layers=12))
    with pytest.raises(ValueError, match='sum\\(depths\\) = 7'):
        constructor(_tiny_detector(2))


@pytest.mark.parametrize('arch, depths', [('tiny', [2, 2, 6, 2]), ('base', [2, 2, 18, 2])])
def test_layer_ids_of_the_standard_archs(arch: str, depths: list[int]) -> None:
    model = swin_backbone.SwinTransformerV2(arch=arch)
    ids = {n: get_layer_id(n, model.depths) for n, _ in model.named_parameters()}
    assert set(ids.values()) == set(range(sum(depths) + 1))
    assert ids['stages.2.blocks.0.attn.qkv.weight'] == 5
    assert ids['stages.2.downsample.reduction.weight'] == sum(depths[:3]) + 1
    assert ids['norm2.weight'] == sum(depths[:3])
    assert ids[f'stages.3.blocks.{depths[3] - 1}.mlp.fc2.weight'] == sum(depths)
    with pytest.raises(ValueError, match='no layer id'):
        get_layer_id('absolute_pos_embed', depths)


def test_get_layer_depth_is_mmpretrains_protocol() -> None:
    backbone = swin_backbone.SwinTransformerV2(
        arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]))
    assert backbone.get_layer_depth('backbone.patch_embed.proj.weight') == (0, 10)
    assert backbone.get_layer_depth('backbone.stages.1.blocks.0.attn.qkv.weight') == (3, 10)
    assert backbone.get_layer_depth('backbone.stages.1.downsample.reduction.weight') == (5, 10)
    assert backbone.get_layer_depth('backbone.norm1.weight') == (4, 10)
    assert backbone.get_layer_depth('neck.lateral_convs.0.conv.weight') == (9, 10)
    assert backbone.get_layer_depth('stages.3.blocks.1.mlp.fc2.bias', prefix='') == (8, 10)
    with pytest.raises(ValueError, match="no layer id for backbone parameter 'stages.9.x'"):
        backbone.get_layer_depth('backbone.stages.9.x')


def test_mmpretrains_constructor_gives_the_same_scales_as_ours() -> None:
    """mmpretrain's LearningRateDecayOptimWrapperConstructor asks the model's
    ``get_layer_depth``: an mmpretrain classifier with our backbone gets our layer ids."""
    from reference import import_mmpretrain
    import_mmpretrain()
    from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
    from mmpretrain.models import ImageClassifier
    from mmengine.registry import DefaultScope
    arch = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # earlier tests set mmdet's
        model = ImageClassifier(
            backbone=dict(type='swin_backbone.SwinTransformerV2', arch=arch, out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=256))
    optimizer = dict(type='AdamW', lr=1e-3, weight_decay=0.05)
    theirs = LearningRateDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=optimizer), dict(layer_decay_rate=0.9))(model)
    ours = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=optimizer), dict(decay_rate=0.9))(model)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g['lr_scale'] for g in ours.optimizer.param_groups
             for p in g['params']}
    for group in theirs.optimizer.param_groups:
        assert group['lr_scale'] == pytest.approx(scale[group['param_name']]), group['param_name']
    assert len(theirs.optimizer.param_groups) == len(scale)
