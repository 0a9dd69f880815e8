"""The segmentation configs, the UPerNet models they build, and the toy dataset generator.

CPU only; no downloads: every model is built with ``init_cfg`` off except where a test
loads a generated official checkpoint (conftest's ``official_v2``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from paths import ALL_CONFIGS, REPO, TOY_SEGMENTATION_CONFIG, config
from projects.toy_demo.toy_segmentation import CLASSES, PALETTE, make_sample
from swin_backbone.models import SwinTransformer, SwinTransformerV2

SEG_CONFIGS = [p for p in ALL_CONFIGS if p.name.startswith('upernet')]
V1 = 'upernet_swinv1-t-p4-w7_8xb2-160k_ade20k-512x512.py'
V2_TTA = 'upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512_ms-flip-tta.py'
FULL = {'upernet_swin_t.py': SwinTransformerV2, V1: SwinTransformer}


def build_model(path: Path | str, **backbone: object) -> torch.nn.Module:
    """Build the config's model (pretrained loading off unless ``init_cfg`` is given)."""
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    from mmseg.registry import MODELS
    inner = cfg.model.get('module', cfg.model)  # SegTTAModel wraps the segmentor
    inner.backbone.init_cfg = None
    inner.backbone.update(backbone)
    return MODELS.build(cfg.model)


def test_the_expected_configs_exist() -> None:
    names = {p.name for p in SEG_CONFIGS}
    assert {'upernet_swin_t.py', V1, V2_TTA, V1.replace('.py', '_ms-flip-tta.py'),
            TOY_SEGMENTATION_CONFIG.name} <= names


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_model_builds_with_our_backbone(path: Path) -> None:
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(imports=['swin_backbone'], allow_failed_imports=False)
    model = build_model(path)
    segmentor = getattr(model, 'module', model)
    backbone = segmentor.backbone
    assert type(backbone) in (SwinTransformer, SwinTransformerV2)
    channels = [backbone.embed_dims * 2 ** i for i in range(4)]
    assert segmentor.decode_head.in_channels == channels
    assert segmentor.auxiliary_head.in_channels == channels[2]
    expected = len(CLASSES) if 'toy' in path.name else 150
    assert segmentor.decode_head.num_classes == segmentor.auxiliary_head.num_classes == expected


def test_v2_config_states_the_issue_recipe() -> None:
    cfg = Config.fromfile(str(config('upernet_swin_t.py')))
    b = cfg.model.backbone
    assert (b.type, b.arch, b.window_size, b.pretrained_window_size, b.drop_path_rate) == (
        'swin_backbone.SwinTransformerV2', 'tiny', 16, 8, 0.3)
    assert b.init_cfg.checkpoint.endswith('v2.0.0/swinv2_tiny_patch4_window8_256.pth')
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 6e-5, 0.01)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.begin, poly.end) == (
        'LinearLR', 1500, 'PolyLR', 1500, 160000)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.crop_size == (512, 512)


def _unscoped(value: object) -> object:
    """``value`` without the ``_scope_`` keys that an ``mmseg::`` path adds."""
    if isinstance(value, dict):
        return {k: _unscoped(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [_unscoped(v) for v in value]
    return value


def test_v1_config_is_mmsegs_recipe_with_official_weights() -> None:
    ours = Config.fromfile(str(config(V1)))
    import mmseg as package
    mmseg = Config.fromfile(str(
        Path(package.__file__).parent / '.mim' / 'configs' / 'swin' /
        'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'))
    assert ours.model.backbone.init_cfg.checkpoint.endswith(
        'v1.0.0/swin_tiny_patch4_window7_224.pth')
    assert (ours.model.backbone.window_size, ours.model.backbone.drop_path_rate) == (7, 0.3)
    for key in ('optimizer', 'type'):
        assert _unscoped(ours.optim_wrapper[key]) == _unscoped(mmseg.optim_wrapper[key])
    for key in ('param_scheduler', 'train_cfg', 'train_dataloader', 'test_dataloader',
                'test_evaluator'):
        assert _unscoped(ours[key]) == _unscoped(mmseg[key]), key
    for key in ('decode_head', 'auxiliary_head', 'data_preprocessor', 'test_cfg'):
        assert _unscoped(ours.model[key]) == _unscoped(mmseg.model[key]), key


@pytest.mark.parametrize('name', ['upernet_swin_t.py', V1])
def test_no_decay_keys_are_detections_and_hit_real_parameters(name: str) -> None:
    detection = Config.fromfile(str(REPO / 'configs' / '_base_' / 'schedules' /
                                     'swin_adamw_1x.py'))
    cfg = Config.fromfile(str(config(name)))
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys == detection.optim_wrapper.paramwise_cfg.custom_keys
    model = build_model(config(name))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    names = dict(model.named_parameters())
    for key in keys:
        hit = [n for n in names if key in n]
        v2_only = key in ('logit_scale', 'cpb_mlp')
        if key != 'norm' and v2_only == (name == V1):
            assert not hit  # the other version's parameters (V2's bias table is derived)
            continue
        assert hit, f'{key} matches no parameter'
        assert all(decay[id(names[n])] == 0 for n in hit), key
    qkv = [n for n in names if n.endswith('attn.qkv.weight')]
    assert qkv and all(decay[id(names[n])] == 0.01 for n in qkv)


@pytest.mark.parametrize('name', sorted(FULL))
def test_upernet_logits_have_the_input_size_at_333x517(name: str) -> None:
    """333x517 is a multiple of neither the patch size nor any stage's window."""
    model = build_model(config(name)).eval()
    assert type(model.backbone) is FULL[name]
    from mmseg.structures import SegDataSample
    meta = dict(img_shape=(333, 517), ori_shape=(333, 517), pad_shape=(333, 517))
    with torch.no_grad():
        out = model.predict(torch.randn(1, 3, 333, 517), [SegDataSample(metainfo=meta)])
    logits = out[0].seg_logits.data
    assert logits.shape == (150, 333, 517)
    assert torch.isfinite(logits).all()
    assert out[0].pred_sem_seg.data.shape == (1, 333, 517)


def test_tta_config_wraps_the_single_scale_model_with_mmsegs_tta() -> None:
    single = Config.fromfile(str(config('upernet_swin_t.py')))
    tta = Config.fromfile(str(config(V2_TTA)))
    assert tta.model.type == 'SegTTAModel' and tta.model.module == single.model
    aug = tta.test_dataloader.dataset.pipeline[1]
    assert aug.type == 'TestTimeAug'
    scales = [t.scale_factor for t in aug.transforms[0]]
    flips = [t.prob for t in aug.transforms[1]]
    assert scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and flips == [0., 1.]


def test_tta_config_runs_end_to_end_on_an_odd_size_image(tmp_path: Path) -> None:
    """The ms-flip config's pipeline and SegTTAModel, as tools/test.py runs them."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    sample = make_sample(np.random.default_rng(0), sides=(96, 96))
    image = cv2.resize(sample.image, (75, 53))  # a size divisible by nothing
    label = cv2.resize(sample.label, (75, 53), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / 'img.jpg'), image)
    cv2.imwrite(str(tmp_path / 'img.png'), label)
    cfg = Config.fromfile(str(config(V2_TTA)))
    model = build_model(config(V2_TTA)).eval()
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    sample = pipeline(dict(img_path=str(tmp_path / 'img.jpg'), seg_map_path=str(tmp_path /
                           'img.png'), reduce_zero_label=True, seg_fields=[]))
    assert len(sample['inputs']) == 12  # 6 scales x 2 flips
    with torch.no_grad():
        (out,) = model.test_step(pseudo_collate([sample]))
    assert out.pred_sem_seg.data.shape == (1, 53, 75)
    assert out.gt_sem_seg.data.shape == (1, 53, 75)


def test_v2_config_loads_official_weights_through_init_weights(official_v2: Path) -> None:
    model = build_model(config('upernet_swin_t.py'),
                        init_cfg=dict(type='Pretrained', checkpoint=str(official_v2)))
    model.init_weights()
    weights = torch.load(official_v2, map_location='cpu', weights_only=True)['model']
    ours = model.backbone.state_dict()
    # The first patch-embedding conv is copied as is from the official checkpoint.
    conv = [k for k in ours if k.startswith('patch_embed') and ours[k].dim() == 4]
    assert len(conv) == 1
    assert torch.equal(ours[conv[0]], weights['patch_embed.proj.weight'])


def test_toy_config_names_the_generators_classes_and_colours() -> None:
    cfg = Config.fromfile(str(TOY_SEGMENTATION_CONFIG))
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        meta = cfg[split].dataset.metainfo
        assert tuple(meta['classes']) == CLASSES
        assert [tuple(c) for c in meta['palette']] == list(PALETTE)
    assert cfg.model.decode_head.num_classes == len(CLASSES)


def test_toy_config_validates_one_image_at_a_time_at_its_own_size() -> None:
    """Images of different sizes cannot share a batch (mmseg stacks them unpadded); the
    test pipeline does not resize, so IoU is counted on the annotated pixels as they are."""
    cfg = Config.fromfile(str(TOY_SEGMENTATION_CONFIG))
    assert cfg.val_dataloader.batch_size == cfg.test_dataloader.batch_size == 1
    steps = [t['type'] for t in cfg.test_dataloader.dataset.pipeline]
    assert steps == ['LoadImageFromFile', 'LoadAnnotations', 'PackSegInputs']
