"""Run exported ONNX files in ONNX Runtime (CPU) and OpenVINO (CPU).

Inputs and outputs are numpy arrays or torch tensors (converted on the way in); outputs come
back as float32 numpy arrays in the graph's output order.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import require

__all__ = ['differences_to_eager', 'onnxruntime_session', 'openvino_bf16_available',
           'openvino_model', 'run_onnxruntime', 'run_openvino']


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def onnxruntime_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime ``InferenceSession`` on the CPU provider (all graph optimisations),
    with ``threads`` intra-op threads (default: the runtime's choice)."""
    ort = require('onnxruntime', 'Running an ONNX file in ONNX Runtime')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), options, providers=['CPUExecutionProvider'])


def run_onnxruntime(session: Any, x: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """Outputs of an :func:`onnxruntime_session` (or a path to one) for input ``x``."""
    if isinstance(session, (str, os.PathLike)):
        session = onnxruntime_session(session)
    name = session.get_inputs()[0].name
    return session.run(None, {name: _as_numpy(x)})


def openvino_bf16_available() -> bool:
    """Whether OpenVINO's CPU plugin offers bf16 inference on this CPU."""
    ov = require('openvino', 'OpenVINO inference')
    return 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


def openvino_model(path: str | os.PathLike, precision: str = 'f32',
                   threads: int | None = None) -> Any:
    """An OpenVINO ``CompiledModel`` of an ONNX file on the CPU plugin.

    Args:
        precision: ``'f32'``, or ``'bf16'`` (raises where the CPU lacks it, see
            :func:`openvino_bf16_available`).
        threads: inference threads (default: the plugin's choice).
    """
    ov = require('openvino', 'OpenVINO inference')
    if precision not in ('f32', 'bf16'):
        raise ValueError(f"precision must be 'f32' or 'bf16', got {precision!r}")
    if precision == 'bf16' and not openvino_bf16_available():
        raise RuntimeError('OpenVINO offers no bf16 inference on this CPU '
                           '(OPTIMIZATION_CAPABILITIES lacks BF16)')
    config: dict[str, Any] = {'INFERENCE_PRECISION_HINT': precision}
    if threads:
        config['INFERENCE_NUM_THREADS'] = threads
    core = ov.Core()
    return core.compile_model(core.read_model(os.fspath(path)), 'CPU', config)


def run_openvino(compiled: Any, x: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """Outputs of an :func:`openvino_model` for input ``x``, in the graph's order."""
    result = compiled(_as_numpy(x))
    return [np.asarray(result[output], dtype=np.float32) for output in compiled.outputs]


def differences_to_eager(eager: torch.Tensor | Sequence[torch.Tensor],
                         got: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """Per output, ``(max |got - eager|, max |eager|)``; ``eager`` is what the PyTorch module
    returned (a tensor or a tuple of them), ``got`` a runtime's outputs in the same order.

    Raises:
        ValueError: the output counts or an output's shape differ.
    """
    eager = (eager,) if isinstance(eager, torch.Tensor) else tuple(eager)
    if len(eager) != len(got):
        raise ValueError(f'the file gives {len(got)} outputs, eager {len(eager)}')
    rows = []
    for i, (want, have) in enumerate(zip(eager, got)):
        want = _as_numpy(want)
        if np.shape(have) != want.shape:
            raise ValueError(f'output {i}: the file gives {np.shape(have)}, eager {want.shape}')
        rows.append((float(np.abs(want - have).max()), float(np.abs(want).max())))
    return rows
