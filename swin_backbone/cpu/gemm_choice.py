"""Which library multiplies each float32 linear of the CPU layer: oneDNN or MKL, per shape.

Which one is faster depends on the CPU: on the AMD EPYC machines oneDNN wins the tall, thin
matmuls of a Swin backbone by 1.3-3x, while on the Intel Xeon with AMX MKL is as fast or
faster (README, "Per CPU family"). So instead of constants tuned on one CPU, every matmul
shape is timed once on the machine that runs it, both ways, and the faster library is kept.

``SWIN_BACKBONE_GEMM`` selects the policy:

* ``calibrate`` (default): time each new ``(op, M bucket, K, N)`` once, both libraries (best
  of 3 after a warm-up, on the caller's threads), keep the faster; the other library must be
  at least 10 % faster to replace the rule below. Results are cached in memory and in
  ``$XDG_CACHE_HOME/swin_backbone/gemm-<key>.json`` (default ``~/.cache``), one file per CPU
  model, torch version and thread count, written atomically; an unwritable cache only costs
  re-timing in the next process.
* ``rule``: no timing, the rule measured on the AMD EPYC: oneDNN everywhere but the weight
  gradient of many tokens into a layer no wider than its output (MKL). The tests use it, so
  their kernel choice never depends on a timer.
* ``onednn`` / ``mkl``: one library for every shape.

``op`` is ``'forward'`` (``x (M, K) @ W^T``; oneDNN with the weight prepacked),
``'input_grad'`` (``grad (M, N) @ W``) or ``'weight_grad'`` (``grad^T @ x``, M tokens).
M is bucketed to the next power of two, so one calibration covers nearby image sizes.
Only float32 CPU linears of the CPU layer ask; GPUs, half precision, bf16 autocast and
exporters never reach this module.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ['POLICIES', 'choose', 'policy', 'rule', 'timed_choice']

POLICIES = ('calibrate', 'rule', 'onednn', 'mkl')
_ENV = 'SWIN_BACKBONE_GEMM'
_MARGIN = 0.9  # the other library must take < 90 % of the rule's time to be chosen
_REPEATS = 3
_choices: dict[str, str] = {}
_loaded_from: Path | None = None


def policy() -> str:
    """The policy ``SWIN_BACKBONE_GEMM`` names (``calibrate`` when unset)."""
    value = os.environ.get(_ENV, 'calibrate').strip().lower()
    if value not in POLICIES:
        raise ValueError(f'{_ENV}={value!r}: expected one of {", ".join(POLICIES)}')
    return value


def rule(op: str, m: int, k: int, n: int) -> str:
    """The AMD EPYC measurement as a rule (see :func:`swin_backbone.cpu.linear.weight_gradient`)."""
    if op == 'weight_grad' and k <= n and m > 16 * k:
        return 'mkl'
    return 'onednn'


def bucket(m: int) -> int:
    """M rounded up to a power of two, at least 256."""
    return max(256, 1 << (max(m, 1) - 1).bit_length())


def choose(op: str, m: int, k: int, n: int) -> str:
    """``'onednn'`` or ``'mkl'`` for one matmul shape under the current policy."""
    mode = policy()
    if mode in ('onednn', 'mkl'):
        return mode
    if mode == 'rule':
        return rule(op, m, k, n)
    key = f'{op}:{bucket(m)}:{k}:{n}'
    if key not in _choices:
        _load()
    if key not in _choices:
        _choices[key] = timed_choice(op, bucket(m), k, n)
        _save()
    return _choices[key]


def timed_choice(op: str, m: int, k: int, n: int,
                 clock: Callable[[], float] = time.perf_counter) -> str:
    """Time ``op`` at ``(m, k, n)`` on both libraries; the rule's unless the other is clearly
    faster."""
    from .linear import onednn_matmul, weight_gradient_on
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(m, k, generator=gen)
        weight = torch.randn(n, k, generator=gen)
        grad = torch.randn(m, n, generator=gen)
        if op == 'forward':
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            runs = {'onednn': lambda: onednn_matmul(x, packed, None),
                    'mkl': lambda: torch.nn.functional.linear(x, weight)}
        elif op == 'input_grad':
            runs = {'onednn': lambda: onednn_matmul(grad, weight.t()),
                    'mkl': lambda: grad.mm(weight)}
        elif op == 'weight_grad':
            runs = {lib: (lambda lib=lib: weight_gradient_on(lib, grad, x))
                    for lib in ('onednn', 'mkl')}
        else:
            raise ValueError(f'unknown GEMM op {op!r}: forward, input_grad or weight_grad')
        best = {}
        for lib, run in runs.items():
            run()
            times = []
            for _ in range(_REPEATS):
                start = clock()
                run()
                times.append(clock() - start)
            best[lib] = min(times)
    default = rule(op, m, k, n)
    other = 'mkl' if default == 'onednn' else 'onednn'
    return other if best[other] < _MARGIN * best[default] else default


def cache_path() -> Path:
    """This machine's cache file: CPU model, torch version and thread count in the name."""
    root = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'swin_backbone'
    raw = f'{_cpu_model()}-torch{torch.__version__}-{torch.get_num_threads()}threads'
    safe = ''.join(c if c.isalnum() or c in '.-' else '_' for c in raw)
    return root / f'gemm-{safe}.json'


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> None:
    global _loaded_from
    path = cache_path()
    if _loaded_from == path:
        return
    _loaded_from = path
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    _choices.update({k: v for k, v in stored.items() if v in ('onednn', 'mkl')})


def _save() -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            json.dump(_choices, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def forget() -> None:
    """Drop the in-memory choices (the next :func:`choose` reads the cache file again)."""
    global _loaded_from
    _choices.clear()
    _loaded_from = None
