"""When a CPU kernel may take a call: eager CPU tensors, never under an exporter or compiler.

The CPU layer's modules fall back to the reference modules (their base classes) for every
call these predicates refuse: CUDA and other devices, ``torch.compile``, ``torch.jit``
tracing and scripting, ONNX export. The shims keep them working on torch 2.1 - 2.3, which
lack ``torch.compiler.is_compiling`` and device-typed autocast queries.
"""
from __future__ import annotations

import torch

__all__ = ['cpu_autocast_dtype', 'eager', 'eager_cpu_float32']


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, 'is_compiling', None)  # torch >= 2.3
    if is_compiling is not None:
        return is_compiling()
    return torch._dynamo.is_compiling()


def cpu_autocast_dtype() -> torch.dtype | None:
    """The dtype of an active CPU autocast region, or None outside one."""
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        return torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def eager(*tensors: torch.Tensor) -> bool:
    """Whether these are CPU tensors in plain eager execution (not compiling, tracing or
    exporting)."""
    return (not _compiling() and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export()
            and all(t.device.type == 'cpu' for t in tensors))


def eager_cpu_float32(*tensors: torch.Tensor) -> bool:
    """:func:`eager`, float32 and outside autocast: where the training kernels apply."""
    return (eager(*tensors) and cpu_autocast_dtype() is None
            and all(t.dtype == torch.float32 for t in tensors))
