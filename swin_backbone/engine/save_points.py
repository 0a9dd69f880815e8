"""Where mmengine 0.10.7's ``CheckpointHook`` is about to save, known on every rank.

``Runner.save_checkpoint`` runs on rank 0 only, so anything a checkpoint needs from every
rank (the random states of :mod:`.hooks`, a ZeRO optimizer's shards in :mod:`.zero`) must be
collected beforehand, by a collective that every rank enters at the same step. These
predicates repeat ``CheckpointHook``'s own tests so that hooks of priority above
``VERY_LOW`` (CheckpointHook's) can run that collective exactly where a save follows.
"""
from __future__ import annotations

from mmengine.hooks import CheckpointHook


def checkpoint_hooks(runner) -> list[CheckpointHook]:
    """The runner's ``CheckpointHook`` instances (usually one)."""
    return [hook for hook in runner.hooks if isinstance(hook, CheckpointHook)]


def saves_after_iter(hooks: list[CheckpointHook], runner) -> bool:
    """Whether one of ``hooks`` saves in ``after_train_iter`` at this iteration."""
    return any(not hook.by_epoch and (
        hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
        or (hook.save_last and hook.is_last_train_iter(runner))) for hook in hooks)


def saves_after_epoch(hooks: list[CheckpointHook], runner) -> bool:
    """Whether one of ``hooks`` saves in ``after_train_epoch`` at this epoch."""
    return any(hook.by_epoch and (
        hook.every_n_epochs(runner, hook.interval, hook.save_begin)
        or (hook.save_last and hook.is_last_train_epoch(runner))) for hook in hooks)


def saves_after_val(hooks: list[CheckpointHook]) -> bool:
    """Whether one of ``hooks`` may save in ``after_val_epoch`` (``save_best``: the best
    checkpoint and, after a new best, the regular one again)."""
    return any(hook.save_best for hook in hooks)
