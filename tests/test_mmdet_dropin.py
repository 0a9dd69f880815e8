"""MMDetection's and MMSegmentation's own Swin configs with only ``type`` changed: same
arguments, same outputs from the same checkpoint, and their whole-model zoo checkpoints load
through ``load_from`` / ``load_checkpoint``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint, save_checkpoint

import mmdet
import mmseg
from swin_backbone import SwinTransformer

MMDET_SWIN = (Path(mmdet.__file__).parent / '.mim/configs/swin/'
              'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
MMSEG_SWIN = (Path(mmseg.__file__).parent / '.mim/configs/swin/'
              'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
# Every stage larger than the window (128x161 .. 16x21), where mmdet is faithful: it shifts
# even where a stage is a single window, which the official model and ours do not.
SIZE = (509, 643)


def _config(path: Path, ours: bool, checkpoint: str | None) -> Config:
    cfg = Config.fromfile(str(path))
    backbone = cfg.model.backbone
    backbone.init_cfg = None if checkpoint is None else dict(type='Pretrained',
                                                             checkpoint=checkpoint)
    cfg.model.pop('pretrained', None)
    if ours:
        backbone.type = 'swin_backbone.SwinTransformer'  # the only change a user makes
    init_default_scope(cfg.default_scope)
    return cfg


@torch.no_grad()
def _features(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    model.eval()  # mmdet's Swin.train() returns None: no chaining
    return model(x)


def test_mmdet_swin_config_builds_ours_and_matches_mmdet_from_the_official_checkpoint(
        official_v1):
    mmdet_model = MODELS.build(_config(MMDET_SWIN, False, str(official_v1)).model)
    ours_model = MODELS.build(_config(MMDET_SWIN, True, str(official_v1)).model)
    assert isinstance(ours_model.backbone, SwinTransformer)
    for model in (mmdet_model, ours_model):
        model.backbone.init_weights()  # mmdet's convert_weights=True path and ours
    # The one difference: mmdet's converter leaves the official final `norm` unused (norm3
    # keeps its initialisation); ours loads it into norm3.
    final_norm = torch.load(official_v1, weights_only=True)['model']['norm.weight']
    assert torch.equal(ours_model.backbone.norm3.weight, final_norm)
    assert torch.equal(mmdet_model.backbone.norm3.weight, torch.ones(768))
    ours_model.backbone.norm3.load_state_dict(mmdet_model.backbone.norm3.state_dict())
    diffs = [float((a - b).abs().max())
             for a, b in zip(_features(ours_model.backbone), _features(mmdet_model.backbone))]
    assert len(diffs) == 4 and max(diffs) <= 1e-4, diffs


def test_mmdet_zoo_detector_checkpoint_loads_through_load_from(tmp_path):
    """A whole Mask R-CNN saved by mmdet (its backbone in mmdet's layout) loads into the
    same detector with our backbone: every tensor found, same features."""
    mmdet_model = MODELS.build(_config(MMDET_SWIN, False, None).model)
    mmdet_model.init_weights()
    path = tmp_path / 'mask_rcnn_swin_t_mmdet.pth'
    save_checkpoint({'meta': {}, 'state_dict': mmdet_model.state_dict()}, str(path))
    ours_model = MODELS.build(_config(MMDET_SWIN, True, None).model)
    load_checkpoint(ours_model, str(path), strict=True)
    diffs = [float((a - b).abs().max())
             for a, b in zip(_features(ours_model.backbone), _features(mmdet_model.backbone))]
    assert max(diffs) <= 1e-4, diffs
    for name, tensor in mmdet_model.state_dict().items():
        if not name.startswith('backbone.'):
            assert torch.equal(ours_model.state_dict()[name], tensor), name


def test_mmseg_swin_config_builds_ours():
    model = MODELS.build(_config(MMSEG_SWIN, True, None).model)
    assert isinstance(model.backbone, SwinTransformer)
    assert [o.shape[1] for o in _features(model.backbone)] == [96, 192, 384, 768]


@pytest.mark.parametrize('arguments, named', [
    (dict(use_abs_pos_embed=True), 'use_abs_pos_embed=True'),
    (dict(strides=(4, 2, 2, 1)), 'strides=(4, 2, 2, 1)'),
    (dict(patch_norm=False), 'patch_norm=False'),
    (dict(qk_scale=0.5), 'qk_scale=0.5'),
    (dict(act_cfg=dict(type='ReLU')), 'act_cfg'),
    (dict(norm_cfg=dict(type='BN')), 'norm_cfg'),
    (dict(arch='small', embed_dims=96), 'not both'),
    (dict(pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='y.pth')),
     'init_cfg and pretrained')])
def test_mmdet_arguments_that_cannot_be_honoured_are_named(arguments, named):
    with pytest.raises(ValueError, match=named.replace('(', r'\(').replace(')', r'\)')):
        SwinTransformer(**arguments)


def test_mmdet_arguments_that_are_honoured():
    model = SwinTransformer(embed_dims=64, depths=[2, 2, 2, 2], num_heads=[2, 4, 8, 16],
                            qk_scale=32 ** -0.5, strides=(4, 2, 2, 2), patch_norm=True,
                            pretrain_img_size=384, convert_weights=True,
                            norm_cfg=dict(type='LN', requires_grad=True), pretrained='w.pth')
    assert (model.embed_dims, model.depths, model.num_heads) == (64, [2, 2, 2, 2], [2, 4, 8, 16])
    assert model.init_cfg == dict(type='Pretrained', checkpoint='w.pth')
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['windowsize'\]"):
        SwinTransformer(windowsize=7)
