"""The FSDP auto-wrap policy a config names for mmengine's ``FSDPStrategy``: found through
the registry the way ``MMFullyShardedDataParallel`` looks it up, and wrapping exactly the
Swin blocks. (FSDP itself is not run: mmengine's strategy needs CUDA devices.)"""
from __future__ import annotations

from functools import partial

from mmengine.registry import FUNCTIONS

from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.models.blocks import SwinBlock


def test_policy_is_found_as_mmengines_fsdp_wrapper_looks_it_up() -> None:
    with FUNCTIONS.switch_scope_and_registry(None):  # as MMFullyShardedDataParallel does
        policy = FUNCTIONS.get('swin_backbone.swin_block_wrap_policy')
    from swin_backbone.engine.fsdp import swin_block_wrap_policy
    assert policy is swin_block_wrap_policy


def test_policy_wraps_every_block_and_nothing_else() -> None:
    from swin_backbone.engine.fsdp import swin_block_wrap_policy
    for model in (SwinTransformer(), SwinTransformerV2()):
        wrapped = [m for m in model.modules()
                   if swin_block_wrap_policy(m, recurse=False, nonwrapped_numel=0)]
        assert len(wrapped) == 12 and all(isinstance(m, SwinBlock) for m in wrapped)
        assert all(swin_block_wrap_policy(m, recurse=True, nonwrapped_numel=0)
                   for m in model.modules())
    # torch's keyword call, as FSDP's _recursive_wrap makes it
    assert partial(swin_block_wrap_policy)(module=model.stages[0].blocks[0], recurse=False,
                                           nonwrapped_numel=1)
