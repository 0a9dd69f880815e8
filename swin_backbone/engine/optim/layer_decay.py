"""Layer-wise learning-rate decay for detectors and segmentors with our Swin backbones.

The SwinV2 paper fine-tunes UPerNet on ADE20K with layer-wise lr decay 0.95 (arXiv
2111.09883, Table 1 and Appendix A1). MMDetection's and MMSegmentation's
``LearningRateDecayOptimizerConstructor`` only know ConvNeXt / BEiT / MAE parameter names;
this constructor knows ours (``swin_backbone.models``).

Layer ids (``L = sum(depths)`` blocks, counted through all stages), as the backbones'
``get_layer_depth`` gives them (:mod:`swin_backbone.models.layer_depth`):

* ``patch_embed.*`` -> 0;
* ``stages.{s}.blocks.{j}.*`` -> ``sum(depths[:s]) + j + 1`` (1 .. L);
* ``stages.{s}.downsample.*`` (the patch merging at the end of stage ``s``, which feeds
  stage ``s + 1``) -> the id of the block that follows it, ``sum(depths[:s + 1]) + 1``;
* ``norm{s}.*`` (the output norm of stage ``s``) -> the id of the last block of stage ``s``,
  ``sum(depths[:s + 1])``;
* every parameter outside the backbone (neck, heads) -> ``L + 1``.

Learning rate ``lr * decay_rate ** (L + 1 - layer_id)``: 1 for the heads, ``decay_rate``
for the last block, ``decay_rate ** (L + 1)`` for the patch embedding.

Where the convention comes from:

* BEiT (microsoft/unilm ``beit/semantic_segmentation/mmcv_custom/
  layer_decay_optimizer_constructor.py``, ``get_num_layer_for_vit``), copied into
  ``mmseg/engine/optimizers/layer_decay_optimizer_constructor.py``: embeddings 0, block
  ``i`` -> ``i + 1``, the rest ``num_layers + 1``; scale
  ``decay_rate ** (num_layers + 1 - layer_id)``. Our formula is the same.
* Official Swin SimMIM fine-tuning (microsoft/Swin-Transformer ``optimizer.py``,
  ``get_swin_layer``): patch embedding 0, blocks counted through all stages from 1, the
  rest ``sum(depths) + 1``. It puts ``layers.{s}.downsample`` with the *last* block of stage
  ``s`` (``sum(depths[:s + 1])``) and the final classification norm with the head. We
  instead give each merging the id of the block that consumes its output (as mmseg does
  for ConvNeXt's ``downsample_layers``, ``get_layer_id_for_convnext``), and give each
  output norm, which feeds a dense-prediction neck rather than a classifier, its stage's
  last block. Both differ from the official choice by one layer, a factor ``decay_rate``.

Weight decay is *not* decided here: each parameter's lr multiplier and weight decay come
from mmengine's :class:`DefaultOptimWrapperConstructor` applied to the same
``paramwise_cfg`` (``custom_keys``, ``norm_decay_mult``, ``flat_decay_mult``, ...), so the
no-decay list stays in the configs, in one place (``configs/_base_/schedules/
swin_adamw_1x.py``: ``norm``, ``relative_position_bias_table``, ``logit_scale``,
``cpb_mlp``), whichever constructor a config picks. The one default this constructor adds
is ``flat_decay_mult=0.``: every 1-D parameter (LayerNorm / BatchNorm weights, all biases
including V2's ``q_bias`` / ``v_bias``) gets no decay, the rule of BEiT's and official
Swin's fine-tuning (``len(param.shape) == 1 or name.endswith('.bias')``). The layer scale
then multiplies the learning rate that rule produced.
"""
from __future__ import annotations

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ...models import SwinTransformer
from ...models.layer_depth import get_layer_id  # noqa: F401  (the rule's home, re-exported)
from ...registry import OPTIM_WRAPPER_CONSTRUCTORS

def find_swin_backbone(model: nn.Module) -> tuple[str, SwinTransformer]:
    """``(prefix, backbone)``: the model itself (prefix ``''``) or its ``.backbone``.

    Raises:
        TypeError: naming the type found when it is not ours.
    """
    if is_model_wrapper(model):
        model = model.module
    if isinstance(model, SwinTransformer):
        return '', model
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, SwinTransformer):
        return 'backbone.', backbone
    found = ('no `backbone` attribute' if backbone is None else
             f'backbone of type {type(backbone).__module__}.{type(backbone).__qualname__}')
    raise TypeError(
        'LayerDecayOptimWrapperConstructor assigns layer ids to swin_backbone.SwinTransformer'
        f' / SwinTransformerV2 backbones only; the model {type(model).__qualname__} has '
        f'{found}. Use type=\'swin_backbone.SwinTransformerV2\' (or SwinTransformer) in '
        "model.backbone, or mmseg / mmdet's LearningRateDecayOptimizerConstructor for "
        'ConvNeXt / BEiT.')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor times a per-layer lr scale for our Swin backbones.

    Config::

        optim_wrapper = dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=6e-5, weight_decay=0.01),
            constructor='swin_backbone.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(decay_rate=0.95, custom_keys={...}))

    ``paramwise_cfg`` keys: ``decay_rate`` (required, in ``(0, 1]``); ``num_layers``
    (optional, checked against the backbone's ``sum(depths)``, for configs written for
    mmseg's constructor); every key of :class:`DefaultOptimWrapperConstructor`
    (``custom_keys``, ``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult`` (default
    0 here), ...), with mmengine's meaning.

    Parameters are grouped by ``(layer id, lr, weight decay)``: usually two groups per layer
    id, ``layer_{id}_decay`` and ``layer_{id}_no_decay``, each with the extra keys
    ``group_name``, ``layer_id`` and ``lr_scale``. Groups are ordered from the top layer
    down, so the first group (whose lr mmengine logs) has the base lr. Frozen parameters
    (``requires_grad=False``, e.g. ``frozen_stages``) are left out, as mmengine does.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'decay_rate' not in paramwise_cfg:
            raise ValueError('LayerDecayOptimWrapperConstructor needs paramwise_cfg.decay_rate'
                             ' (e.g. 0.95, the SwinV2 paper\'s ADE20K setting)')
        self.decay_rate = float(paramwise_cfg.pop('decay_rate'))
        if not 0 < self.decay_rate <= 1:
            raise ValueError(f'decay_rate must be in (0, 1], got {self.decay_rate}')
        self.expected_num_layers = paramwise_cfg.pop('num_layers', None)
        paramwise_cfg.setdefault('flat_decay_mult', 0.)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.param_names: dict[str, list[str]] = {}  # group name -> parameter names
        if self.base_wd is None:
            raise ValueError('LayerDecayOptimWrapperConstructor needs '
                             'optimizer.weight_decay (the no-decay rule scales it)')

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: int | float | None = None) -> None:
        """Add ``module``'s parameters to ``params`` as layer-decay groups.

        mmengine's ``add_params`` recurses through ``self.add_params`` with a non-empty
        ``prefix``; those calls are mmengine's per-parameter rule, unchanged.
        """
        if prefix:
            super().add_params(params, module, prefix, is_dcn_module)
            return
        bb_prefix, backbone = find_swin_backbone(module)
        num_layers = sum(backbone.depths)
        if self.expected_num_layers is not None and self.expected_num_layers != num_layers:
            raise ValueError(f'paramwise_cfg.num_layers={self.expected_num_layers} but the '
                             f'backbone has sum(depths) = {num_layers} blocks')
        self.param_names = {}
        per_param: list[dict] = []
        super().add_params(per_param, module, prefix, is_dcn_module)  # mmengine's lr / wd
        names = {id(p): n for n, p in module.named_parameters()}
        groups: dict[tuple, dict] = {}
        for item in per_param:
            (param,) = item['params']
            name = names[id(param)]
            layer_id, _ = backbone.get_layer_depth(name, bb_prefix)
            scale = self.decay_rate ** (num_layers + 1 - layer_id)
            lr = item.get('lr', self.base_lr) * scale
            wd = item.get('weight_decay', self.base_wd)
            # custom_keys entries other than the multipliers become optimizer options
            extra = {k: v for k, v in item.items()
                     if k not in ('params', 'lr', 'weight_decay', 'lr_mult', 'decay_mult')}
            key = (layer_id, lr, wd, tuple(sorted(extra.items())))
            if key not in groups:
                group_name = f'layer_{layer_id}_{"decay" if wd else "no_decay"}'
                taken = sum(g['group_name'].startswith(group_name) for g in groups.values())
                group_name += f'_{taken}' if taken else ''  # e.g. a custom lr_mult
                groups[key] = dict(params=[], lr=lr, weight_decay=wd, group_name=group_name,
                                   layer_id=layer_id, lr_scale=scale, **extra)
            groups[key]['params'].append(param)
            self.param_names.setdefault(groups[key]['group_name'], []).append(name)
        ordered = sorted(groups.values(), key=lambda g: (-g['layer_id'], -g['weight_decay']))
        params.extend(ordered)
        print_log(f'LayerDecayOptimWrapperConstructor: decay_rate={self.decay_rate}, '
                  f'{num_layers} blocks, {len(ordered)} parameter groups', logger='current')
