"""Build the module to export from an MMDetection / MMSegmentation config."""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import nn

from .wrappers import DetectorFeatures, SegmentorLogits

__all__ = ['EXPORT_TARGETS', 'ExportTarget', 'build_export_target']

EXPORT_TARGETS = ('backbone', 'segmentor', 'detector-features')


class ExportTarget(NamedTuple):
    """What :func:`build_export_target` returns.

    Attributes:
        module: ``tensor -> tensor(s)``: the backbone, :class:`SegmentorLogits` or
            :class:`DetectorFeatures`.
        model: the whole OpenMMLab model (its ``data_preprocessor`` normalises images).
        output_names: one name per output of ``module``.
        default_shape: ``(H, W)`` to export or run at when none is given: 512 x 512 for
            segmentors, 800 x 1344 otherwise.
    """
    module: nn.Module
    model: nn.Module
    output_names: list[str]
    default_shape: tuple[int, int]


def build_export_target(config: str | os.PathLike, checkpoint: str | None, what: str,
                        cfg_options: dict | None = None) -> ExportTarget:
    """Build ``config``'s model on the CPU (``mmdet.apis.init_detector`` or
    ``mmseg.apis.init_model`` by its ``default_scope``), load ``checkpoint`` if given, and
    wrap the part named by ``what`` (one of :data:`EXPORT_TARGETS`). Without a checkpoint
    the weights are the initialisation's, seeded with 0: the same in every call."""
    from mmengine import Config
    if what not in EXPORT_TARGETS:
        raise ValueError(f'what must be one of {EXPORT_TARGETS}, got {what!r}')
    cfg = Config.fromfile(os.fspath(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    if what == 'segmentor' and scope != 'mmseg':
        raise ValueError(f"--what segmentor needs an MMSegmentation config (default_scope "
                         f"'mmseg'); {config} has default_scope {scope!r}")
    if what == 'detector-features' and scope != 'mmdet':
        raise ValueError(f"--what detector-features needs an MMDetection config (default_scope "
                         f"'mmdet'); {config} has default_scope {scope!r}")
    # Without a checkpoint the weights are random: seeded, so that the export and the run
    # tool build the same model.
    torch.manual_seed(0)
    if scope == 'mmseg':
        from mmseg.apis import init_model
        model = init_model(cfg, checkpoint, device='cpu')
    else:
        from mmdet.apis import init_detector
        model = init_detector(cfg, checkpoint, device='cpu')
    model.eval()
    if what == 'backbone':
        indices = getattr(model.backbone, 'out_indices', range(4))
        return ExportTarget(model.backbone, model, [f'stage{i}' for i in indices], (800, 1344))
    if what == 'segmentor':
        return ExportTarget(SegmentorLogits(model), model, ['logits'], (512, 512))
    levels = model.neck.num_outs if hasattr(model.neck, 'num_outs') else 5
    return ExportTarget(DetectorFeatures(model), model, [f'fpn{i}' for i in range(levels)],
                        (800, 1344))
