"""Layer ids of backbone parameters for layer-wise learning-rate decay.

The rule, with ``L = sum(depths)`` blocks counted through all stages (its sources and the
choices made are in :mod:`swin_backbone.engine.optim.layer_decay`):

* ``patch_embed.*`` -> 0;
* ``stages.{s}.blocks.{j}.*`` -> ``sum(depths[:s]) + j + 1`` (1 .. L);
* ``stages.{s}.downsample.*`` -> the id of the block that consumes its output,
  ``sum(depths[:s + 1]) + 1``;
* ``norm{s}.*`` -> the id of stage ``s``'s last block, ``sum(depths[:s + 1])``;
* anything outside the backbone -> ``L + 1``.

:meth:`SwinTransformer.get_layer_depth` returns it in mmpretrain's protocol,
``(layer_id, num_layers)`` with ``num_layers = L + 2``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

_BLOCK = re.compile(r'stages\.(\d+)\.blocks\.(\d+)\.')
_MERGE = re.compile(r'stages\.(\d+)\.downsample\.')
_NORM = re.compile(r'norm(\d+)\.')


def get_layer_id(name: str, depths: Sequence[int]) -> int:
    """The layer id of a backbone parameter (see this module's docstring).

    Args:
        name: the parameter's name relative to the backbone, e.g.
            ``'stages.1.blocks.0.attn.qkv.weight'``.
        depths: blocks per stage, e.g. ``[2, 2, 6, 2]``.

    Returns:
        An int in ``[0, sum(depths) + 1]``.

    Raises:
        ValueError: for a name that is not one of our backbone's parameters, so that a
            renamed parameter fails loudly instead of silently getting the head's lr.
    """
    num_layers = sum(depths)
    if name.startswith('patch_embed.'):
        return 0
    if m := _BLOCK.match(name):
        stage, block = int(m[1]), int(m[2])
        return sum(depths[:stage]) + block + 1
    if m := _MERGE.match(name):
        return min(sum(depths[:int(m[1]) + 1]) + 1, num_layers + 1)
    if m := _NORM.match(name):
        return sum(depths[:int(m[1]) + 1])
    raise ValueError(f'no layer id for backbone parameter {name!r}: expected patch_embed.*, '
                     'stages.S.blocks.J.*, stages.S.downsample.* or normS.*')
