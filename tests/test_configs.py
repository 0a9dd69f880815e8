"""Every config under configs/ parses and builds its model on CPU (pretrained loading off);
the shared no-decay keys of configs/_base_/schedules/swin_adamw_1x.py hit real parameters
and give them weight decay 0 in the optimizer the Runner would build."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

import swin_backbone  # noqa: F401  (registers the backbones)

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py')
                 if '_base_' not in p.parts)
DETECTION = [p for p in CONFIGS if p.name.startswith('mask')]


def _detector(cfg_or_model):
    """The model inside a test-time-augmentation wrapper (``module=``), else the model."""
    if isinstance(cfg_or_model, torch.nn.Module):
        return getattr(cfg_or_model, 'module', cfg_or_model)
    return cfg_or_model.get('module', cfg_or_model)


def _no_pretrained(cfg: Config) -> None:
    """Switch off every pretrained download: the backbone's and the model's."""
    _detector(cfg.model).backbone.init_cfg = None
    _detector(cfg.model).pop('pretrained', None)


def build_model(path: Path) -> tuple[Config, torch.nn.Module]:
    cfg = Config.fromfile(str(path))
    _no_pretrained(cfg)
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


def test_configs_found() -> None:
    names = {p.name for p in CONFIGS}
    assert {'mask_rcnn_swin_t.py', 'mask_rcnn_swin_t_toy.py',
            'mask-rcnn_swinv1-t-p4-w7_fpn_1x_coco.py',
            'mask-rcnn_swinv1-t-p4-w7_fpn_ms-crop-3x_coco.py',
            'mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds(path: Path) -> None:
    cfg, model = build_model(path)
    assert cfg.custom_imports == dict(imports=['swin_backbone'], allow_failed_imports=False)
    assert _detector(cfg.model).backbone.type.startswith('swin_backbone.')
    assert type(_detector(model).backbone).__module__.startswith('swin_backbone.')
    assert sum(p.numel() for p in model.parameters()) > 0


def test_main_config_is_the_issue_recipe() -> None:
    cfg = Config.fromfile(str(CONFIG_DIR / 'mask_rcnn_swin_t.py'))
    backbone = cfg.model.backbone
    assert backbone.type == 'swin_backbone.SwinTransformerV2'
    assert (backbone.window_size, backbone.pretrained_window_size) == (16, 8)
    assert backbone.drop_path_rate == 0.2
    assert backbone.init_cfg.checkpoint.endswith('swinv2_tiny_patch4_window8_256.pth')
    assert cfg.model.neck.in_channels == [96, 192, 384, 768]
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == \
        (1e-4, 0.05)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'


@pytest.mark.parametrize('path', DETECTION, ids=lambda p: p.name)
def test_no_decay_keys_match_real_parameters(path: Path) -> None:
    cfg, model = build_model(path)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    names = [n for n, _ in model.named_parameters()]
    v2 = cfg.model.backbone.type == 'swin_backbone.SwinTransformerV2'
    expected = {'norm', 'relative_position_bias_table'} if not v2 else \
        {'norm', 'logit_scale', 'cpb_mlp'}
    for key in keys:
        matched = [n for n in names if key in n]
        assert bool(matched) == (key in expected), (key, matched[:3])
        assert all(n.startswith('backbone.') for n in matched), key

    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    no_decay = [n for n in names if any(k in n for k in keys)]
    assert no_decay and all(decay[id(params[n])] == 0 for n in no_decay)
    decayed = [n for n in names if n.endswith('attn.qkv.weight') or n.endswith('fc1.weight')]
    assert decayed and all(decay[id(params[n])] == pytest.approx(0.05) for n in decayed)
