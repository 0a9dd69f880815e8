"""The switch between the fast CPU kernels and the plain PyTorch reference path.

The backbone's hand-written fast paths (:mod:`.linear`, :mod:`.recompute`) only ever apply
to float32 CPU tensors in eager mode. :func:`plain_path` turns all of them off for the
calling thread, so that tests (and anyone debugging a difference) can run the same model
through plain ``F.linear`` / autograd and compare.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ['eager_cpu_float32', 'plain_path', 'plain_path_enabled']

_state = threading.local()


@contextlib.contextmanager
def plain_path() -> Iterator[None]:
    """Within this context (per thread) every fast path falls back to plain PyTorch."""
    previous = getattr(_state, 'plain', False)
    _state.plain = True
    try:
        yield
    finally:
        _state.plain = previous


def plain_path_enabled() -> bool:
    """Whether the calling thread is inside :func:`plain_path`."""
    return getattr(_state, 'plain', False)


def eager_cpu_float32(*tensors: torch.Tensor) -> bool:
    """Whether a fast path may take these tensors: float32 on CPU, eager (not compiling,
    not tracing), outside :func:`plain_path` and outside autocast."""
    return (not plain_path_enabled() and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.is_autocast_enabled('cpu')
            and all(t.device.type == 'cpu' and t.dtype == torch.float32 for t in tensors))
