"""Every config under configs/ and the toy demo's parses and builds its model on CPU (pretrained
loading off); the shared no-decay keys of configs/_base_/schedules/swin_adamw_1x.py hit real
parameters and give them weight decay 0 in the optimizer the Runner would build."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope

import swin_backbone  # noqa: F401  (registers the backbones)
from paths import ALL_CONFIGS as CONFIGS
from paths import REPO, config

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
    assert {'mask_rcnn_swin_t.py', 'mask-rcnn_swinv2-toy-p4-w8_fpn_gn-head_2x_toy-coco-128x128.py',
            'mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py', 'mask-rcnn_swinv1-t-p4-w7_fpn_1x_coco.py',
            'mask-rcnn_swinv1-t-p4-w7_fpn_ms-crop-3x_coco.py',
            'mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py'} <= names


# {algorithm}_{backbone}-{size}-p{patch}-w{window}_{neck, schedule, ...}_{dataset}[-{crop}].py
CANONICAL = re.compile(r'(cascade-mask-rcnn|mask-rcnn|upernet)_swinv[12]-(t|s|b|toy)-p4-w\d+'
                       r'(_[a-z0-9]+(-[a-z0-9]+)*)+\.py')
ENTRY_POINTS = {'mask_rcnn_swin_t.py': 'detection/mask-rcnn_swinv2-t-p4-w16_fpn_1x_coco.py',
                'upernet_swin_t.py':
                    'segmentation/upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py'}


def test_every_config_but_the_entry_points_follows_one_naming_scheme() -> None:
    odd = [p.name for p in CONFIGS
           if p.name not in ENTRY_POINTS and not CANONICAL.fullmatch(p.name)]
    assert not odd
    assert {p.parent.name for p in CONFIGS if p.name not in ENTRY_POINTS} == \
        {'detection', 'segmentation', 'configs'}  # configs/: the toy demo's folder


@pytest.mark.parametrize('name', sorted(ENTRY_POINTS))
def test_entry_points_are_two_lines_inheriting_their_canonical_config(name: str) -> None:
    path = config(name)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith('# ')
    assert lines[1] == f"_base_ = './{ENTRY_POINTS[name]}'"
    assert Config.fromfile(str(path)).to_dict() == \
        Config.fromfile(str(path.parent / ENTRY_POINTS[name])).to_dict()


def test_the_config_table_lists_every_config() -> None:
    table = (REPO / 'configs' / 'README.md').read_text()
    for path in CONFIGS:
        listed = path.name if 'projects' in path.parts else \
            str(path.relative_to(REPO / 'configs'))
        assert f'`{listed}`' in table, listed


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds(path: Path) -> None:
    cfg, model = build_model(path)
    assert cfg.custom_imports == dict(imports=['swin_backbone'], allow_failed_imports=False)
    assert _detector(cfg.model).backbone.type.startswith('swin_backbone.')
    assert type(_detector(model).backbone).__module__.startswith('swin_backbone.')
    assert sum(p.numel() for p in model.parameters()) > 0


def test_main_config_is_the_issue_recipe() -> None:
    cfg = Config.fromfile(str(config('mask_rcnn_swin_t.py')))
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
