"""The SwinV2 paper recipes (issue 9): each config parses, states the paper's settings, and
its model and optimiser build on CPU (pre-trained loading off)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

from paths import config
import swin_backbone

REPO = Path(__file__).resolve().parents[1]
CKPT = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
        'swinv2_{}_patch4_window8_256.pth')
# size -> (arch, drop-path rate) for detection / segmentation
DET = {'t': ('tiny', 0.2), 's': ('small', 0.3), 'b': ('base', 0.3)}
SEG = {'t': ('tiny', 0.3), 's': ('small', 0.3), 'b': ('base', 0.3)}
DET_CFG = 'cascade-mask-rcnn_swinv2-{}-p4-w16_fpn_ms-crop-3x_coco.py'
SEG_CFG = 'upernet_swinv2-{}-p4-w16_layer-decay_8xb2-160k_ade20k-512x512.py'


def _load(name: str) -> Config:
    cfg = Config.fromfile(str(config(name)))
    assert cfg.custom_imports['imports'] == ['swin_backbone']
    return cfg


def _check_backbone(cfg: Config, arch: str, drop_path: float) -> None:
    bb = cfg.model.backbone
    assert bb.type == 'swin_backbone.SwinTransformerV2'
    assert (bb.arch, bb.window_size, bb.pretrained_window_size) == (arch, 16, 8)
    assert bb.drop_path_rate == drop_path
    assert bb.init_cfg.checkpoint == CKPT.format(arch)


def _build(cfg: Config):
    cfg.model.backbone.init_cfg = None
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, swin_backbone.SwinTransformerV2)
    return model


@pytest.mark.parametrize('size', ['t', 's', 'b'])
def test_cascade_mask_rcnn_3x_recipe(size: str) -> None:
    cfg = _load(DET_CFG.format(size))
    _check_backbone(cfg, *DET[size])
    assert cfg.model.type == 'CascadeRCNN' and cfg.model.roi_head.num_stages == 3
    assert [h.loss_bbox.type for h in cfg.model.roi_head.bbox_head] == ['GIoULoss'] * 3
    assert [r.assigner.pos_iou_thr for r in cfg.model.train_cfg.rcnn] == [0.5, 0.6, 0.7]
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    scales = cfg.train_pipeline[3].transforms[0][0].scales
    assert (min(s[0] for s in scales), max(s[0] for s in scales)) == (480, 800)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.lr, optimizer.weight_decay) == (1e-4, 0.05)
    model = _build(cfg)
    assert model.neck.lateral_convs[0].conv.in_channels == model.backbone.embed_dims
    build_optim_wrapper(model, cfg.optim_wrapper)


@pytest.mark.parametrize('size', ['t', 's', 'b'])
def test_upernet_layer_decay_160k_recipe(size: str) -> None:
    cfg = _load(SEG_CFG.format(size))
    _check_backbone(cfg, *SEG[size])
    assert cfg.optim_wrapper.constructor == 'swin_backbone.LayerDecayOptimWrapperConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.decay_rate == 0.95
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) >= {
        'norm', 'relative_position_bias_table', 'logit_scale', 'cpb_mlp'}
    assert cfg.train_cfg.max_iters == 160000 and cfg.crop_size == (512, 512)
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    model = _build(cfg)
    assert model.decode_head.in_channels[0] == model.backbone.embed_dims
    assert model.auxiliary_head.in_channels == model.backbone.embed_dims * 4
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer  # through the registry
    num_layers = sum(model.backbone.depths)
    assert len(optimizer.param_groups) == 2 * (num_layers + 2)
    patch_embed = [g for g in optimizer.param_groups if g['layer_id'] == 0]
    assert patch_embed[0]['lr'] == pytest.approx(6e-5 * 0.95 ** (num_layers + 1))
