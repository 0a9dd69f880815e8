"""mmengine Runner checkpoint files: what they pickle, how to write one whole, which is whole.

Pure functions and data, no global state (the mmengine integration that installs them for a
run is :mod:`swin_backbone.engine.runner_checkpoint`):

* :data:`RUNNER_CHECKPOINT_GLOBALS`: the few non-tensor types a Runner checkpoint holds
  beyond what ``torch.load(weights_only=True)`` accepts: ``HistoryBuffer`` objects and numpy
  arrays / scalars in ``message_hub``. A ``HistoryBuffer`` pickled by mmengine also names
  ``builtins.getattr`` (the statistics functions it carries); pickled through
  :func:`reduce_history_buffer` it does not, so ``getattr`` never needs allowing (found by
  saving a real Runner checkpoint and asking
  ``torch.serialization.get_unsafe_globals_in_checkpoint``; ``tests/test_runner_checkpoint.py``
  re-checks the list against fresh checkpoints).
* :func:`write_atomic`: write ``<name>.tmp-<pid>``, fsync, ``os.replace``, so a process killed
  mid-write never leaves a truncated ``iter_N.pth`` (mmengine's ``LocalBackend.put`` writes
  into the final name).
* :func:`latest_complete_checkpoint`: the checkpoint to resume from, checked to be a whole
  file rather than trusted from the ``last_checkpoint`` text file.
"""
from __future__ import annotations

import importlib
import io
import os
import os.path as osp
import re
import zipfile
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'is_complete_checkpoint', 'latest_complete_checkpoint',
           'reduce_history_buffer', 'write_atomic']


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
#: :func:`reduce_history_buffer` registered when it was saved).
RUNNER_CHECKPOINT_GLOBALS: list[Any] = [HistoryBuffer, *_numpy_globals()]


def reduce_history_buffer(buffer: HistoryBuffer) -> tuple:
    """Pickle a ``HistoryBuffer`` as ``HistoryBuffer(log_history, count_history, max_length)``.

    mmengine's own ``__getstate__`` also stores the class-wide table of statistics
    functions, which pickle writes as ``builtins.getattr(HistoryBuffer, 'min')``. Allow-listing
    ``getattr`` would let a crafted file reach any attribute of any object it can build
    (module ``__globals__`` included) and overwrite it with SETITEM, so the table is left out
    instead: it is class-level state that importing mmengine rebuilds anyway.
    """
    return HistoryBuffer, (buffer._log_history, buffer._count_history, buffer.max_length)


def write_atomic(checkpoint: dict, filename: str) -> None:
    """``torch.save`` ``checkpoint`` to the local path ``filename``, never leaving a partial file.

    Written to ``<filename>.tmp-<pid>``, flushed to disk, then renamed over ``filename``
    (``os.replace`` is atomic on POSIX and Windows): a reader, or a resume after SIGKILL, sees
    either the old file or the complete new one.
    """
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
