"""Install safe Runner checkpoints into mmengine 0.10.7 for the whole process.

Two problems under torch >= 2.6, solved without turning off ``weights_only`` (a pickle
loaded with ``weights_only=False`` can run any code on the user's machine); the file-level
pieces are in :mod:`swin_backbone.checkpoint.runner`:

* **Loading.** mmengine calls ``torch.load(f, map_location=...)``; since torch 2.6 that means
  ``weights_only=True``, whose unpickler refuses ``HistoryBuffer`` and numpy values in
  ``message_hub``, so ``--resume`` fails. :func:`allow_runner_checkpoints` allow-lists
  :data:`~swin_backbone.checkpoint.runner.RUNNER_CHECKPOINT_GLOBALS` and pickles
  ``HistoryBuffer`` without its statistics functions.
* **Writing.** :func:`enable_atomic_checkpoints` routes the Runner's saves through
  :func:`atomic_save_checkpoint`, so a killed run never leaves a truncated ``iter_N.pth``.
"""
from __future__ import annotations

import copyreg
from typing import Any

import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import checkpoint as mm_checkpoint

from ..checkpoint.runner import RUNNER_CHECKPOINT_GLOBALS, reduce_history_buffer, write_atomic

__all__ = ['allow_runner_checkpoints', 'atomic_save_checkpoint', 'enable_atomic_checkpoints']

_MMENGINE_SAVE = mm_checkpoint.save_checkpoint  # taken before enable_atomic_checkpoints replaces it


def allow_runner_checkpoints() -> None:
    """Make Runner checkpoints save and load under ``torch.load(weights_only=True)``.

    Allow-lists :data:`RUNNER_CHECKPOINT_GLOBALS` and registers ``reduce_history_buffer``
    with ``copyreg`` (for the checkpoints this process saves). Idempotent; the allow-list is
    skipped on torch < 2.4, which has none (and loads with ``weights_only=False`` before 2.6).
    """
    copyreg.pickle(HistoryBuffer, reduce_history_buffer)
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(RUNNER_CHECKPOINT_GLOBALS)


def atomic_save_checkpoint(checkpoint: dict, filename: str, file_client_args: Any = None,
                           backend_args: Any = None) -> None:
    """``mmengine.runner.save_checkpoint`` with local files written whole (``write_atomic``).

    Other backends (``s3://``, ``pavi://``, explicit backend arguments) go to mmengine
    unchanged.
    """
    if file_client_args is not None or backend_args is not None or '://' in filename:
        _MMENGINE_SAVE(checkpoint, filename, file_client_args=file_client_args,
                       backend_args=backend_args)
        return
    write_atomic(checkpoint, filename)


def enable_atomic_checkpoints() -> None:
    """Make every checkpoint the Runner and its hooks save go through
    :func:`atomic_save_checkpoint`.

    mmengine imports ``save_checkpoint`` by name into ``mmengine.runner`` and
    ``mmengine.runner.runner`` (``Runner.save_checkpoint``) and ``CheckpointHook`` imports it
    from ``mmengine.runner`` when publishing, so the name is replaced in those modules.
    """
    import mmengine.runner as mm_runner_pkg
    from mmengine.runner import runner as mm_runner
    for module in (mm_runner_pkg, mm_checkpoint, mm_runner):
        module.save_checkpoint = atomic_save_checkpoint
