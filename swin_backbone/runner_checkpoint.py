"""Checkpoints of the mmengine ``Runner``: safe to load, safe to write, safe to resume from.

Three problems with mmengine 0.10.7 under torch >= 2.6, each solved here without turning
off ``weights_only`` (a pickle checkpoint loaded with ``weights_only=False`` can run any
code on the user's machine):

* **Loading.** mmengine calls ``torch.load(f, map_location=...)``; since torch 2.6 that
  means ``weights_only=True``, whose unpickler refuses the few non-tensor types a Runner
  checkpoint holds: ``HistoryBuffer`` objects and numpy arrays / scalars in
  ``message_hub``, and ``builtins.getattr`` (how pickle spells the statistics functions
  a ``HistoryBuffer`` carries). :func:`allow_runner_checkpoints` allow-lists the first two
  and pickles ``HistoryBuffer`` without the functions, so ``getattr`` is never needed (found
  by saving a real Runner checkpoint and asking
  ``torch.serialization.get_unsafe_globals_in_checkpoint``; ``tests/test_runner_checkpoint.py``
  re-checks the list against fresh checkpoints).
* **Writing.** mmengine's ``LocalBackend.put`` opens the final file name and writes into
  it, so a process killed mid-write leaves a truncated ``iter_N.pth``.
  :func:`enable_atomic_checkpoints` routes the Runner's saves through
  :func:`atomic_save_checkpoint`: write ``<name>.tmp-<pid>``, fsync, ``os.replace``.
* **Resuming.** ``--resume`` without a path trusts the ``last_checkpoint`` text file;
  :func:`latest_complete_checkpoint` instead picks the newest checkpoint in the work dir
  that is a complete file.
"""
from __future__ import annotations

import copyreg
import importlib
import io
import os
import os.path as osp
import re
import zipfile
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'allow_runner_checkpoints', 'atomic_save_checkpoint',
           'enable_atomic_checkpoints', 'is_complete_checkpoint', 'latest_complete_checkpoint']


def _numpy_globals() -> list[Any]:
    """The numpy callables and classes a pickled ``ndarray`` / numpy scalar refers to.

    numpy 2 pickles ``numpy._core.multiarray._reconstruct`` / ``scalar`` and ``numpy.dtype``;
    files written with numpy 1 name ``numpy.core.multiarray``. Both spellings are listed
    (the tuple form tells torch under which name to accept the same function). A dtype is
    rebuilt through its class (``numpy.dtypes.Float64DType``...): those of the values a
    Runner logs, Python floats and ints, i.e. float64 and int64.
    """
    try:  # numpy 2, and numpy 1.26's forward-compatible alias of numpy.core
        multiarray = importlib.import_module('numpy._core.multiarray')
    except ImportError:
        multiarray = np.core.multiarray
    found: list[Any] = [np.ndarray, np.dtype]
    for name in ('_reconstruct', 'scalar'):
        func = getattr(multiarray, name)
        found += [(func, f'numpy._core.multiarray.{name}'),
                  (func, f'numpy.core.multiarray.{name}')]
    found += [type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    return found


#: Every global a Runner checkpoint needs besides torch's defaults (with
#: :func:`_reduce_history_buffer` registered when it was saved).
RUNNER_CHECKPOINT_GLOBALS: list[Any] = [HistoryBuffer, *_numpy_globals()]


def _reduce_history_buffer(buffer: HistoryBuffer) -> tuple:
    """Pickle a ``HistoryBuffer`` as ``HistoryBuffer(log_history, count_history, max_length)``.

    mmengine's own ``__getstate__`` also stores the class-wide table of statistics
    functions, which pickle writes as ``builtins.getattr(HistoryBuffer, 'min')``. Allow-listing
    ``getattr`` would let a crafted file reach any attribute of any object it can build
    (module ``__globals__`` included) and overwrite it with SETITEM, so the table is left out
    instead: it is class-level state that importing mmengine rebuilds anyway.
    """
    return HistoryBuffer, (buffer._log_history, buffer._count_history, buffer.max_length)


def allow_runner_checkpoints() -> None:
    """Make Runner checkpoints save and load under ``torch.load(weights_only=True)``.

    Allow-lists :data:`RUNNER_CHECKPOINT_GLOBALS` and registers :func:`_reduce_history_buffer`
    with ``copyreg`` (for the checkpoints this process saves). Idempotent; the allow-list is
    skipped on torch < 2.4, which has none (and loads with ``weights_only=False`` before 2.6).
    """
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(RUNNER_CHECKPOINT_GLOBALS)


def atomic_save_checkpoint(checkpoint: dict, filename: str, file_client_args: Any = None,
                           backend_args: Any = None) -> None:
    """Save like ``mmengine.runner.save_checkpoint``, but never leave a partial file behind.

    Local paths are written to ``<filename>.tmp-<pid>``, flushed to disk, then renamed over
    ``filename`` (``os.replace`` is atomic on POSIX and Windows): a reader, or a resume after
    SIGKILL, sees either the old file or the complete new one. Other backends (``s3://``,
    ``pavi://``) go to mmengine unchanged.
    """
    if file_client_args is not None or backend_args is not None or '://' in filename:
        _MMENGINE_SAVE(checkpoint, filename, file_client_args=file_client_args,
                       backend_args=backend_args)
        return
    os.makedirs(osp.dirname(osp.abspath(filename)), exist_ok=True)
    tmp = f'{filename}.tmp-{os.getpid()}'
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    try:
        with open(tmp, 'wb') as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _mmengine_save() -> Callable[..., None]:
    from mmengine.runner import checkpoint as mm_checkpoint
    return mm_checkpoint.save_checkpoint


_MMENGINE_SAVE = _mmengine_save()


def enable_atomic_checkpoints() -> None:
    """Make every checkpoint the Runner and its hooks save go through
    :func:`atomic_save_checkpoint`.

    mmengine imports ``save_checkpoint`` by name into ``mmengine.runner`` and
    ``mmengine.runner.runner`` (``Runner.save_checkpoint``) and ``CheckpointHook`` imports it
    from ``mmengine.runner`` when publishing, so the name is replaced in those modules.
    """
    import mmengine.runner as mm_runner_pkg
    from mmengine.runner import checkpoint as mm_checkpoint
    from mmengine.runner import runner as mm_runner
    for module in (mm_runner_pkg, mm_checkpoint, mm_runner):
        module.save_checkpoint = atomic_save_checkpoint


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` zip file (reads the central directory only).

    A file cut off mid-write has no central directory at its end, so opening it fails.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('data.pkl') for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _step_of(filename: str) -> int:
    match = re.fullmatch(r'(?:iter|epoch)_(\d+)\.pth', filename)
    return int(match.group(1)) if match else -1


def latest_complete_checkpoint(work_dir: str) -> str | None:
    """The checkpoint to resume from: ``last_checkpoint``'s target if complete, otherwise
    the complete ``iter_*.pth`` / ``epoch_*.pth`` in ``work_dir`` with the highest step.

    Returns None when there is none (a fresh run then starts from scratch).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            target = f.read().strip()
        if target and is_complete_checkpoint(target):
            return target
    if not osp.isdir(work_dir):
        return None
    candidates = sorted((name for name in os.listdir(work_dir) if _step_of(name) >= 0),
                        key=_step_of, reverse=True)
    for name in candidates:
        if is_complete_checkpoint(osp.join(work_dir, name)):
            return osp.join(work_dir, name)
    return None
