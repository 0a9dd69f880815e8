"""Whole dense-prediction forwards with each backbone: Mask R-CNN at 800x1333, UPerNet at 512x512.

The detector and the segmentor are built once from mmdet's / mmseg's own Swin-T configs
(random head weights); every backbone of the benchmark is put in the same model's backbone
slot in turn, so the necks and heads are the very same modules for all of them. A row
"heads only" replays one backbone's maps: the part of the time no backbone can change.

bf16 rows run the backbone under bfloat16 autocast and hand float32 maps to the heads,
which stay float32: under a whole-model autocast mmcv 2.1's CPU NMS raises
``expected scalar type Float but found BFloat16``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from named_backbone import Backbone


class BackboneSlot(torch.nn.Module):
    """Fills an mmdet / mmseg ``backbone`` attribute with a benchmark backbone.

    ``forward(x: (B, 3, H, W))`` returns the backbone's four maps ``(B, C_i, H / s_i, W / s_i)``
    in float32; with ``bf16`` the backbone runs under CPU bfloat16 autocast.
    """

    def __init__(self, backbone: Backbone, bf16: bool) -> None:
        super().__init__()
        self.module = backbone.module.eval()  # a training step before may have left it in train
        self._features = backbone.features
        self.bf16 = bf16

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
            maps = self._features(x)
        return tuple(m.float() for m in maps)


class ReplayedMaps(torch.nn.Module):
    """A backbone slot that returns maps computed beforehand (times the rest of the model)."""

    def __init__(self, maps: tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.maps


def _mim_config(package: str, relative: str):
    from mmengine.config import Config
    module = __import__(package)
    return Config.fromfile(Path(module.__file__).parent / '.mim' / 'configs' / relative)


def build_mask_rcnn() -> torch.nn.Module:
    """mmdet's ``swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py`` in eval mode, random weights.

    ``test_cfg.rcnn.score_thr = 0``: with random heads every class score is about 1 / 81,
    under the config's 0.05, and the mask head would never run; at 0 it gets its 100
    detections per image, as with trained weights.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = _mim_config('mmdet', 'swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg.rcnn.score_thr = 0.
    return MODELS.build(cfg.model).eval()


def build_upernet() -> torch.nn.Module:
    """mmseg's ``swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py``
    in eval mode, random weights."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _mim_config('mmseg', 'swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
                               'ade20k-512x512.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.pretrained = None
    return MODELS.build(cfg.model).eval()


class Batch:
    """One image and the ``metainfo`` its data sample carries (a fresh sample per call:
    ``predict`` writes its results into the sample)."""

    def __init__(self, x: torch.Tensor, sample_type: type, metainfo: dict) -> None:
        self.x, self.sample_type, self.metainfo = x, sample_type, metainfo

    def predict(self, model: torch.nn.Module) -> object:
        with torch.no_grad():
            return model.predict(self.x, [self.sample_type(metainfo=self.metainfo)])


def mask_rcnn_batch() -> Batch:
    """One 800x1333 image, padded to 800x1344 as mmdet's data preprocessor pads (32)."""
    from mmdet.structures import DetDataSample
    x = torch.nn.functional.pad(torch.randn(1, 3, 800, 1333), (0, 11))
    return Batch(x, DetDataSample, dict(
        img_shape=(800, 1333), ori_shape=(800, 1333), batch_input_shape=(800, 1344),
        pad_shape=(800, 1344), scale_factor=(1., 1.)))


def upernet_batch() -> Batch:
    """One 512x512 image, predicted with the config's ``mode='whole'``."""
    from mmseg.structures import SegDataSample
    return Batch(torch.randn(1, 3, 512, 512), SegDataSample, dict(
        img_shape=(512, 512), ori_shape=(512, 512), pad_shape=(512, 512),
        batch_input_shape=(512, 512), padding_size=[0, 0, 0, 0]))


def in_slot(model: torch.nn.Module, slot: torch.nn.Module, batch: Batch) -> Callable[[], object]:
    """A timed call: ``model.predict`` on ``batch`` with ``slot`` as the model's backbone."""
    def run() -> object:
        model.backbone = slot
        return batch.predict(model)
    return run


def end_to_end_fns(model: torch.nn.Module, batch: Batch, backbones: list[Backbone],
                   label: str, bf16: bool) -> dict[str, Callable[[], object]]:
    """``{'<label> + <backbone>': run}`` for every backbone, plus ``'<label> heads only'``."""
    fns = {f'{label} + {b.name}': in_slot(model, BackboneSlot(b, bf16), batch)
           for b in backbones}
    with torch.no_grad():
        maps = BackboneSlot(backbones[0], bf16)(batch.x)
    fns[f'{label} heads only'] = in_slot(model, ReplayedMaps(maps), batch)
    return fns


def end_to_end_cases(groups_800: dict[int, list[Backbone]],
                     groups_512: dict[int, list[Backbone]],
                     ) -> Iterator[tuple[str, dict[str, Callable[[], object]], str]]:
    """``(title, {model name: run}, our model's name)`` for Mask R-CNN (800x1333) and
    UPerNet (512x512), V2 and V1 backbones, fp32 and bf16."""
    for label, build, make_batch, groups, size in (
            ('Mask R-CNN', build_mask_rcnn, mask_rcnn_batch, groups_800, '800x1333'),
            ('UPerNet', build_upernet, upernet_batch, groups_512, '512x512')):
        model, batch = build(), make_batch()
        for bf16 in (False, True):
            for version in (2, 1):
                yield (f'{label} V{version} forward {size} {"bf16" if bf16 else "fp32"}',
                       end_to_end_fns(model, batch, groups[version], label, bf16),
                       f'{label} + ours V{version}')
