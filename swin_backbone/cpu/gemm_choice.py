"""Which library multiplies each float32 linear of the CPU layer: oneDNN or MKL, per shape.

Which one is faster depends on the CPU: on the AVX-512 AMD EPYC oneDNN wins the tall, thin
matmuls of a Swin backbone by 1.3-3x, while on the Intel Xeon with AMX MKL is as fast or
faster (README, "Per CPU family"), and on the AVX2-only EPYC MKL wins most weight
gradients. So instead of constants tuned on one CPU, every large matmul shape is timed
once on the machine that runs it, both ways, and the faster library is kept.

``SWIN_BACKBONE_GEMM`` selects the policy:

* ``calibrate`` (default): time each new ``(op, M bucket, K, N)`` of at least 2^26
  multiply-adds once, both libraries (best of 3 after a warm-up, on the caller's threads),
  keep the faster; the other library must be at least 10 % faster to replace the rule
  below (smaller matmuls take the rule: timing them would cost more than it could save).
  Results are cached in memory and in ``$XDG_CACHE_HOME/swin_backbone/gemm-<key>.json``
  (default ``~/.cache``), one file per CPU model, torch version and thread count, merged
  with what other processes wrote and replaced atomically; an unwritable cache only costs
  re-timing in the next process. Two runs share their kernels, and so their float32
  rounding, only when they read the same file: for bit-identical reruns on different
  machines or cold caches use ``rule``.
* ``rule``: no timing, no file: the rule measured on the AVX-512 AMD EPYC: oneDNN
  everywhere but the weight gradient of many tokens into a layer no wider than its output
  (MKL). The tests use it, so their kernel choice never depends on a timer.
* ``onednn`` / ``mkl``: one library for every shape, no timing, no file.

``op`` is ``'inference'`` (``x (M, K) @ W^T + b``, oneDNN with the weight prepacked),
``'forward'`` (the same with autograd: oneDNN reorders the plain weight in every call),
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
import threading
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ['OPS', 'POLICIES', 'bucket', 'cache_path', 'cached_choices', 'choose', 'cpu_model',
           'forget', 'policy', 'rule', 'timed_choice']

OPS = ('inference', 'forward', 'input_grad', 'weight_grad')
POLICIES = ('calibrate', 'rule', 'onednn', 'mkl')
_ENV = 'SWIN_BACKBONE_GEMM'
_MARGIN = 0.9  # the other library must take < 90 % of the rule's time to be chosen
_REPEATS = 3
_TIMED_ABOVE_MACS = 1 << 26  # smaller matmuls (< ~1 ms) take the rule
_LIBRARIES = ('onednn', 'mkl')
_choices: dict[Path, dict[str, str]] = {}  # per cache file: thread count, CPU, torch
_lock = threading.Lock()


def policy() -> str:
    """The policy ``SWIN_BACKBONE_GEMM`` names (``calibrate`` when unset)."""
    value = os.environ.get(_ENV, 'calibrate').strip().lower()
    if value not in POLICIES:
        raise ValueError(f'{_ENV}={value!r}: expected one of {", ".join(POLICIES)}')
    return value


def rule(op: str, m: int, k: int, n: int) -> str:
    """The AVX-512 AMD EPYC measurement as a rule (see
    :func:`swin_backbone.cpu.linear.weight_gradient_on`)."""
    if op == 'weight_grad' and k <= n and m > 16 * k:
        return 'mkl'
    return 'onednn'


def bucket(m: int) -> int:
    """M rounded up to a power of two, at least 256."""
    return max(256, 1 << (max(m, 1) - 1).bit_length())


def choose(op: str, m: int, k: int, n: int) -> str:
    """``'onednn'`` or ``'mkl'`` for one matmul shape under the current policy."""
    mode = policy()
    if mode in _LIBRARIES:
        return mode
    if mode == 'rule' or bucket(m) * k * n < _TIMED_ABOVE_MACS:
        return rule(op, m, k, n)
    key = f'{op}:{bucket(m)}:{k}:{n}'
    path = cache_path()
    choices = _choices.get(path)
    if choices is not None and key in choices:
        return choices[key]
    with _lock:  # one timing at a time: concurrent timings would skew each other
        choices = _choices.setdefault(path, _read(path))
        if key not in choices:
            choices[key] = timed_choice(op, bucket(m), k, n)
            _write(path, choices)
        return choices[key]


def timed_choice(op: str, m: int, k: int, n: int,
                 clock: Callable[[], float] = time.perf_counter) -> str:
    """Time ``op`` at ``(m, k, n)`` on both libraries; the rule's unless the other is clearly
    faster."""
    from .linear import onednn_matmul, weight_gradient_on
    if op not in OPS:
        raise ValueError(f'unknown GEMM op {op!r}: one of {", ".join(OPS)}')
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32, device='cpu')

    with torch.no_grad():
        weight, bias = rand(n, k), rand(n)
        if op in ('inference', 'forward'):
            x = rand(m, k)
            onednn_weight = (torch.ops.mkldnn._reorder_linear_weight(weight, None)
                             if op == 'inference' else weight)
            runs = {'onednn': lambda: onednn_matmul(x, onednn_weight, bias),
                    'mkl': lambda: torch.nn.functional.linear(x, weight, bias)}
        elif op == 'input_grad':
            grad = rand(m, n)
            runs = {'onednn': lambda: onednn_matmul(grad, weight.t()),
                    'mkl': lambda: grad.mm(weight)}
        else:
            x, grad = rand(m, k), rand(m, n)
            runs = {lib: (lambda lib=lib: weight_gradient_on(lib, grad, x)) for lib in _LIBRARIES}
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
    raw = f'{cpu_model()}-torch{torch.__version__}-{torch.get_num_threads()}threads'
    safe = ''.join(c if c.isalnum() or c in '.-' else '_' for c in raw)
    return root / f'gemm-{safe}.json'


def cpu_model() -> str:
    """``model name`` from ``/proc/cpuinfo``, else what ``platform`` says."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cached_choices() -> dict[str, str]:
    """What this machine's cache file holds: ``'op:M:K:N'`` -> ``'onednn'`` or ``'mkl'``."""
    return _read(cache_path())


def _read(path: Path) -> dict[str, str]:
    """The valid entries of a cache file; empty when it is missing or unreadable."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict):
        return {}
    return {k: v for k, v in stored.items() if isinstance(k, str) and v in _LIBRARIES}


def _write(path: Path, choices: dict[str, str]) -> None:
    """Merge ``choices`` into the file (another process may have added entries) and
    replace it atomically; a temporary file never outlives a failed write."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read(path), **choices}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
    except OSError:
        return
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(merged, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if not isinstance(exc, OSError):
            raise


def forget() -> None:
    """Drop the in-memory choices (the next :func:`choose` reads the cache file again)."""
    with _lock:
        _choices.clear()
