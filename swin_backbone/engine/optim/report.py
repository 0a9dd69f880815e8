"""The per-layer learning-rate table of :class:`LayerDecayOptimWrapperConstructor`."""
from __future__ import annotations

import re
from copy import deepcopy

from torch import nn

from .layer_decay import LayerDecayOptimWrapperConstructor

_UNIT = re.compile(r'(patch_embed|stages\.\d+\.blocks\.\d+|stages\.\d+\.downsample|norm\d+)\.')


def _unit(name: str, prefix: str) -> str:
    """'backbone.stages.1.blocks.0.attn.qkv.weight' -> 'stages.1.blocks.0'; 'neck.x' -> 'neck'."""
    if prefix and not name.startswith(prefix):
        return name.split('.')[0]
    m = _UNIT.match(name[len(prefix):])
    return m[1] if m else name


def layer_decay_groups(model: nn.Module, optim_wrapper_cfg: dict) -> tuple[list[dict], dict]:
    """The parameter groups the constructor builds for ``model``, and their parameter names.

    Args:
        model: a detector / segmentor whose ``backbone`` is ours, or the backbone itself.
        optim_wrapper_cfg: a config's ``optim_wrapper`` (``optimizer``, ``paramwise_cfg``;
            ``constructor`` and the wrapper's own keys are ignored).

    Returns:
        ``(groups, names)``: the optimizer's param-group dicts, and group name -> names.
    """
    cfg = deepcopy(dict(optim_wrapper_cfg))
    cfg.pop('constructor', None)
    paramwise_cfg = cfg.pop('paramwise_cfg', None)
    constructor = LayerDecayOptimWrapperConstructor(cfg, paramwise_cfg)
    groups: list[dict] = []
    constructor.add_params(groups, model)
    return groups, constructor.param_names


def format_layer_decay_table(model: nn.Module, optim_wrapper_cfg: dict) -> str:
    """A Markdown table: one row per parameter group, top layer first."""
    groups, names = layer_decay_groups(model, optim_wrapper_cfg)
    prefix = '' if hasattr(model, 'patch_embed') else 'backbone.'
    rows = ['| group | layer id | lr scale | lr | weight decay | tensors | parameters | holds |',
            '|---|---:|---:|---:|---:|---:|---:|---|']
    for g in groups:
        members = list(dict.fromkeys(_unit(n, prefix) for n in names[g['group_name']]))
        numel = sum(p.numel() for p in g['params'])
        rows.append(f"| {g['group_name']} | {g['layer_id']} | {g['lr_scale']:.4f} | "
                    f"{g['lr']:.3e} | {g['weight_decay']:g} | {len(g['params'])} | {numel:,} | "
                    f"{', '.join(members)} |")
    total = sum(p.numel() for g in groups for p in g['params'])
    rows.append(f'\n{len(groups)} parameter groups, {total:,} trainable parameters.')
    return '\n'.join(rows)
