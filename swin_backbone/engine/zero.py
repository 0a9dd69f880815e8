"""ZeRO-1 (optimizer-state sharding) under mmengine's plain Runner, checkpoints included.

mmengine 0.10.7's ``ZeroRedundancyOptimizer`` shards the optimizer state over the ranks,
but its ``state_dict()`` starts with ``consolidate_state_dict()``, a collective every rank
must enter, and ``Runner.save_checkpoint`` calls it on rank 0 only: a 2-rank run hangs at its
first 'Saving checkpoint'. Here the two halves are split:

* :class:`ConsolidateOptimizerHook` consolidates the shards onto rank 0 on every rank,
  right where a ``CheckpointHook`` is about to save (:mod:`.save_points`);
* :class:`ZeroRedundancyOptimizer` (``type='swin_backbone.ZeroRedundancyOptimizer'``)
  returns that consolidated state from ``state_dict()`` on rank 0 alone, and refuses, by
  name, a ``state_dict()`` whose state was not consolidated since the last step, instead of
  hanging.

Resuming needs nothing more: the Runner loads the full state on every rank and each rank
keeps its own shard (``torch.distributed.optim.ZeroRedundancyOptimizer.load_state_dict``).
Config (``tools/train.py`` adds the hook when the optimizer is ZeRO)::

    optim_wrapper = dict(optimizer=dict(
        _delete_=True, type='swin_backbone.ZeroRedundancyOptimizer', optimizer_type='AdamW',
        lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
    custom_hooks = [dict(type='swin_backbone.ConsolidateOptimizerHook')]
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.optim import ZeroRedundancyOptimizer as MMEngineZeroRedundancyOptimizer

from ..registry import HOOKS, OPTIMIZERS
from .hooks import lists_hook
from .save_points import checkpoint_hooks, saves_after_epoch, saves_after_iter, saves_after_val

__all__ = ['ConsolidateOptimizerHook', 'ZeroRedundancyOptimizer', 'with_consolidate_hook']


@OPTIMIZERS.register_module()
class ZeroRedundancyOptimizer(MMEngineZeroRedundancyOptimizer):
    """mmengine's ZeRO-1 optimizer whose ``state_dict()`` is not a collective.

    Args:
        params: parameters or parameter groups (the layer-decay constructor's work too).
        optimizer_type: the ``torch.optim`` class each rank runs on its shard (``'AdamW'``).
        **kwargs: that optimizer's arguments.
    """

    def __init__(self, params, optimizer_type: str, **kwargs: Any) -> None:
        super().__init__(params, optimizer_type, **kwargs)
        self._consolidated = False

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard on rank ``to`` (a collective: call it on all ranks)."""
        super().consolidate_state_dict(to)
        self._consolidated = True

    def step(self, closure: Any = None, **kwargs: Any) -> Any:
        loss = super().step(closure, **kwargs)
        self._consolidated = False
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The full optimizer state on rank 0 (``{}`` elsewhere), as last consolidated.

        Raises:
            RuntimeError: with several ranks, when nothing was consolidated since the last
                step (a collective here would hang: the Runner saves on rank 0 only).
        """
        if not self._consolidated:
            if get_world_size() > 1:
                raise RuntimeError(
                    'ZeroRedundancyOptimizer.state_dict(): the optimizer shards were not '
                    'consolidated since the last step. Saving gathers them on every rank first: '
                    "add custom_hooks=[dict(type='swin_backbone.ConsolidateOptimizerHook')] "
                    '(tools/train.py adds it)')
            self.consolidate_state_dict()
        # torch's state_dict, skipping mmengine's, which would consolidate again
        return torch.distributed.optim.ZeroRedundancyOptimizer.state_dict(self) \
            if is_main_process() else {}


@HOOKS.register_module()
class ConsolidateOptimizerHook(Hook):
    """Consolidate a ZeRO optimizer's shards on every rank before each checkpoint save.

    Runs where ``CheckpointHook`` will save: after the training iterations (epochs) it saves
    at, and before validation when it keeps the best checkpoint. With another optimizer it
    does nothing; with mmengine's own ``ZeroRedundancyOptimizer`` and several ranks it stops
    the run before the first save would hang.
    """

    priority = 'LOW'  # after the optimizer step and other end-of-step work, before saving

    def before_train(self, runner) -> None:
        self._checkpoint_hooks = checkpoint_hooks(runner)
        optimizer = _zero_optimizer(runner)
        if (get_world_size() > 1 and optimizer is not None
                and not isinstance(optimizer, ZeroRedundancyOptimizer)):
            raise TypeError(
                f'{type(optimizer).__module__}.{type(optimizer).__name__}.state_dict() is a '
                'collective that Runner.save_checkpoint enters on rank 0 only: the run would '
                "hang at its first save. Use type='swin_backbone.ZeroRedundancyOptimizer'")

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if saves_after_iter(self._checkpoint_hooks, runner):
            self._consolidate(runner)

    def after_train_epoch(self, runner) -> None:
        if saves_after_epoch(self._checkpoint_hooks, runner):
            self._consolidate(runner)

    def before_val(self, runner) -> None:
        if saves_after_val(self._checkpoint_hooks):
            self._consolidate(runner)

    @staticmethod
    def _consolidate(runner) -> None:
        optimizer = _zero_optimizer(runner)
        if isinstance(optimizer, ZeroRedundancyOptimizer):
            optimizer.consolidate_state_dict(to=0)


def _zero_optimizer(runner) -> torch.optim.Optimizer | None:
    """The runner's optimizer if it is a ``ZeroRedundancyOptimizer`` (ours or torch's)."""
    optimizer = getattr(getattr(runner, 'optim_wrapper', None), 'optimizer', None)
    is_zero = isinstance(optimizer, torch.distributed.optim.ZeroRedundancyOptimizer)
    return optimizer if is_zero else None


def with_consolidate_hook(cfg) -> list:
    """``cfg.custom_hooks`` plus :class:`ConsolidateOptimizerHook` when the config's optimizer
    is a ``ZeroRedundancyOptimizer`` and the hook is not listed yet."""
    hooks = list(cfg.get('custom_hooks') or [])
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    kind = str(optimizer.get('type', '')) if isinstance(optimizer, dict) else ''
    if kind.endswith('ZeroRedundancyOptimizer') and not lists_hook(hooks,
                                                                   'ConsolidateOptimizerHook'):
        hooks.append(dict(type='swin_backbone.ConsolidateOptimizerHook'))
    return hooks
