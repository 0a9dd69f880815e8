"""FSDP auto-wrap policy for mmengine's ``FSDPStrategy`` (``FlexibleRunner``).

mmengine's ``MMFullyShardedDataParallel`` looks ``auto_wrap_policy`` up in its ``FUNCTIONS``
registry; nothing is registered there by default, and torch's
``transformer_auto_wrap_policy`` needs the block classes, which a config cannot name. This
policy makes every Swin block (V1 and V2) one FSDP unit, the granularity at which FSDP
gathers and frees parameters::

    runner_type = 'FlexibleRunner'
    strategy = dict(type='FSDPStrategy', model_wrapper=dict(
        auto_wrap_policy=dict(type='swin_backbone.swin_block_wrap_policy')))

Not run on this project's CPU machines: mmengine 0.10.7's ``FSDPStrategy`` wraps the model
with ``device_id=LOCAL_RANK``, a CUDA device index (docs/memory.md).
"""
from __future__ import annotations

from torch import nn

from ..models.blocks import SwinBlock
from ..registry import FUNCTIONS

__all__ = ['swin_block_wrap_policy']


@FUNCTIONS.register_module()
def swin_block_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """torch's auto-wrap policy protocol: with ``recurse``, whether to look inside
    ``module`` (always); otherwise whether to wrap it (a ``SwinBlock`` / ``SwinBlockV2``)."""
    return True if recurse else isinstance(module, SwinBlock)
