"""Trace a model on fake CUDA tensors on a CPU-only torch build: what would run on a GPU.

``trace_fake_cuda(model, (2, 3, 800, 1344))`` copies ``model`` (built on CPU, any
``nn.Module``), turns every parameter and registered buffer into a *fake* CUDA tensor (a
``torch._subclasses.fake_tensor.FakeTensor``: shape, dtype, strides and device propagate,
nothing is allocated or computed), runs the forward (and, with ``train=True``, a backward
of the sum of the outputs' means) and returns a :class:`FakeCudaTrace`: the
``F.scaled_dot_product_attention`` calls, the GEMMs and every other aten op a CUDA run
would dispatch, the CPU tensors it would create, the tensors the model keeps in its
attributes afterwards, and the peak of the live CUDA tensor bytes.

How it works, and what had to be worked around on this CPU-only build (torch 2.13+cpu):

* ``FakeTensorMode`` accepts ``device='cuda'``. No aten op fails on fake CUDA tensors;
  what fails ("PyTorch is not linked with support for cuda devices") are the Python
  bindings and autograd code that construct a ``c10::DeviceGuard`` for the tensor's device
  *before* dispatching: ``Tensor.__getitem__`` / ``__setitem__``, ``.contiguous()``,
  ``.copy_()``, ``~`` (``__invert__``), ``.to('cuda')`` (a device without an index;
  ``.to(torch.device('cuda', 0))`` and ``.to(dtype)`` work), ``.cuda()``,
  ``.new_tensor()``, ``Module.to('cuda')`` of real tensors, and the creation of every
  autograd node (``InputMetadata`` asks the CUDA guard for the current stream; that throws
  inside a ``noexcept`` path and aborts the whole process). ``FakeTensorMode.__enter__``
  calls ``torch._C._ensureCUDADeviceGuardSet()``, but in this version that installs a fake
  guard only where a CUDA guard is already registered (a CUDA build without a device),
  not on a CPU-only build. A ``TorchDispatchMode`` never sees these failures (no op has
  been dispatched yet); a ``TorchFunctionMode`` does.
* So, by default (``guard='auto'``), this module compiles 20 lines of C++ (``c++``, the
  c10 headers shipped with torch, ~2 s, cached under ``~/.cache/fake_cuda_guard``) that
  store ``c10::impl::FakeGuardImpl<CUDA>`` in c10's device-guard registry for the duration
  of a trace, and remove it afterwards. Real CUDA tensors still cannot be created (there
  is no CUDA allocator); only fake ones work, and they now work everywhere: indexing,
  ``.to``, autograd.
* ``guard='reissue'`` (or ``'auto'`` without a compiler) does without C++: a
  ``TorchFunctionMode`` catches the RuntimeError of the methods listed above and re-issues
  them as the equivalent aten ops (``select`` / ``slice`` / ``unsqueeze`` / ``index`` /
  ``index_put_`` / ``copy_`` / ``fill_``, ``clone``, ``copy_``, ``bitwise_not``,
  ``_to_copy``, ``torch.tensor``). Forward only, under ``torch.no_grad()`` (autograd nodes
  cannot be created), and only for calls made directly by the model (a TorchFunctionMode
  is popped while it handles a call, so calls made *inside* a Python-level
  ``torch.nn.functional`` function are not seen).
* The backward is not run by the C++ autograd engine: on fake CUDA tensors its stream
  bookkeeping calls ``at::accelerator::getCurrentStream``, which needs CUDA hooks this
  build does not have. :func:`_run_backward` walks the graph itself instead: every node is
  called directly, in the engine's order (dependencies first, then the latest-created
  node), with the engine's reduction of broadcast gradients to their input's shape and
  dtype; the incoming gradients of a node are summed; ``AccumulateGrad`` is emulated
  (steal the gradient when its strides match the parameter's, else copy it into them).
  On real CPU tensors this gives the engine's gradients and GEMMs
  (``tests/test_fake_cuda_helper.py``). Not reproduced: the engine's stream
  synchronisation, hooks registered on tensors or nodes (not run), and a reentrant
  backward (``torch.utils.checkpoint(use_reentrant=True)`` calls the engine: fails).
* SDPA on fake CUDA tensors of this build runs its math decomposition (``bmm``, softmax,
  ``bmm``, and in training the saved ``(B, h, L, S)`` attention weights), which is not
  what a GPU runs. Each call is therefore counted at the torch-function level (a
  ``TorchFunctionMode``, plus ``torch.nn.functional.scaled_dot_product_attention``
  patched for the calls made inside ``torch.nn.functional`` itself) and replaced by an
  opaque autograd function: the forward still runs the math path (so shapes are checked)
  under ``no_grad``; its aten ops go to ``FakeCudaTrace.sdpa_ops``, not ``ops`` or
  ``gemms`` (so do autocast's casts of its inputs); memory is accounted as a fused
  kernel's (the output plus a float32 ``(..., L)`` log-sum-exp); the backward returns
  gradients of the inputs' shapes (including ``attn_mask``'s when it requires grad, as the
  memory-efficient kernel does) and is recorded as an ``SdpaCall`` of phase 'backward'.

Everything is measured on the dispatch of a fake run; numbers that depend on the GPU's
own choices (which SDPA kernel, cuBLAS workspaces, the caching allocator's rounding) are
not modelled.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import ctypes
import dataclasses
import hashlib
import heapq
import importlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ['FakeCudaTrace', 'GemmCall', 'SdpaCall', 'RetainedTensor', 'trace_fake_cuda',
           'fake_cuda_guard', 'GEMM_OPS']

aten = torch.ops.aten

#: aten overload packets counted as GEMMs (every overload: ``.default``, ``.out``, ...).
GEMM_OPS: frozenset[str] = frozenset(
    {'mm', 'addmm', 'bmm', 'baddbmm', 'addbmm', 'mv', 'addmv', '_scaled_mm', '_int_mm'})

_NOT_LINKED = 'not linked with support for cuda'
_SDPA = torch._C._nn.scaled_dot_product_attention
_SDPA_ARGS = ('query', 'key', 'value', 'attn_mask', 'dropout_p', 'is_causal', 'scale',
              'enable_gqa')
#: top-level ``torch.nn.functional`` callables -> their name, for ``FakeCudaTrace.nn_calls``.
_NN_NAMES: dict[int, str] = {id(getattr(F, n)): n for n in dir(F)
                             if not n.startswith('_') and callable(getattr(F, n))
                             and not isinstance(getattr(F, n), type)}

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GemmCall:
    """One GEMM dispatched outside SDPA.

    ``shapes`` are the tensor arguments' shapes in call order, e.g. ``addmm``:
    ``((N,), (M, K), (K, N))``; ``bmm``: ``((B, M, K), (B, K, N))``.
    """
    op: str                 # e.g. 'aten.addmm.default'
    phase: str              # 'forward', 'loss' or 'backward'
    shapes: tuple[Shape, ...]
    dtype: torch.dtype

    @property
    def flops(self) -> int:
        """``2 * M * N * K`` (times the batch for ``bmm`` / ``baddbmm``); 0 if unknown."""
        mats = [s for s in self.shapes if len(s) >= 2]
        if len(mats) < 2:
            return 0
        a, b = mats[-2], mats[-1]
        batch = a[0] if len(a) == 3 else 1
        return 2 * batch * a[-2] * a[-1] * b[-1]


@dataclass(frozen=True)
class SdpaCall:
    """One ``F.scaled_dot_product_attention`` call: ``query`` ``(B, h, L, E)``, ``key``
    ``(B, h_kv, S, E)``, ``value`` ``(B, h_kv, S, Ev)``, ``attn_mask`` broadcastable to
    ``(B, h, L, S)`` or None."""
    phase: str
    query: Shape
    key: Shape
    value: Shape
    attn_mask: Shape | None
    dtype: torch.dtype
    mask_dtype: torch.dtype | None
    dropout_p: float
    is_causal: bool


@dataclass(frozen=True)
class RetainedTensor:
    """A tensor reachable from a module attribute that is neither a parameter nor a
    registered buffer; ``nbytes`` is its whole storage's size."""
    path: str               # e.g. 'stages.0.blocks.1.attn._cache[0]'
    shape: Shape
    dtype: torch.dtype
    device: str
    nbytes: int


@dataclass
class FakeCudaTrace:
    """What a trace on fake CUDA tensors dispatched.

    Op names are ``str(OpOverload)``, e.g. ``'aten.addmm.default'``; ``prim`` ops
    (``prim.device``, ...) are not counted. "Outside SDPA" means not inside an
    ``F.scaled_dot_product_attention`` call (see the module docstring).
    """
    guard: str                                  # 'compiled', 'native' or 'reissue'
    train: bool
    sdpa_calls: int                             # F.scaled_dot_product_attention calls (forward)
    forward_gemms: int                          # GEMMs of the forward, outside SDPA
    backward_gemms: int                         # GEMMs of the backward (0 unless train)
    gemm_shapes: list[GemmCall]                 # every GEMM counted above, in order
    sdpa_shapes: list[SdpaCall]
    ops: collections.Counter                    # forward aten op -> count, outside SDPA
    backward_ops: collections.Counter           # backward aten op -> count, outside SDPA
    loss_ops: collections.Counter               # ops of the loss (train only)
    sdpa_ops: collections.Counter               # aten ops inside SDPA (the math path)
    meta_ops: collections.Counter               # ops without tensor outputs (no kernel), all phases
    nn_calls: collections.Counter               # torch.nn.functional name -> direct calls
    cpu_ops: collections.Counter                # op -> outputs on CPU with > 1 element
    real_tensor_inputs: collections.Counter     # op -> non-fake (CPU) inputs with > 1 element
    reissued: collections.Counter               # method -> re-issued calls (guard='reissue')
    retained_bytes: int                         # attribute tensors after the run (see RetainedTensor)
    retained: list[RetainedTensor]              # largest first
    retained_bytes_before: int                  # the same, before the run
    param_bytes: int
    buffer_bytes: int
    forward_peak_bytes: int | None              # peak of live CUDA storage bytes in the forward
    peak_bytes: int | None                      # the same over the whole run
    outputs: list[tuple[Shape, torch.dtype, str]]
    params_without_grad: list[str] = field(default_factory=list)  # train: no .grad after backward

    @property
    def gemms(self) -> int:
        """All GEMMs outside SDPA, forward + loss + backward."""
        return len(self.gemm_shapes)

    @property
    def cpu_tensors_created(self) -> int:
        """Ops whose output is a CPU tensor of more than one element (0 for a clean CUDA model)."""
        return sum(self.cpu_ops.values())

    @property
    def backward_sdpa_calls(self) -> int:
        return sum(1 for s in self.sdpa_shapes if s.phase == 'backward')

    def summary(self, top: int = 12) -> str:
        """A human-readable report."""
        mib = 2 ** 20
        lines = [
            f'guard={self.guard} train={self.train}',
            f'outputs: {self.outputs}',
            f'sdpa_calls={self.sdpa_calls} forward_gemms={self.forward_gemms} '
            f'backward_gemms={self.backward_gemms} '
            f'gemm GFLOP fwd={sum(g.flops for g in self.gemm_shapes if g.phase == "forward") / 1e9:.1f} '
            f'bwd={sum(g.flops for g in self.gemm_shapes if g.phase == "backward") / 1e9:.1f}',
            f'nn_calls (top): {self.nn_calls.most_common(top)}',
            f'forward ops: {sum(self.ops.values())} total; top: {self.ops.most_common(top)}',
        ]
        if self.train:
            lines.append(f'backward ops: {sum(self.backward_ops.values())} total; top: '
                         f'{self.backward_ops.most_common(top)}')
            lines.append(f'params without grad: {self.params_without_grad}')
        lines += [
            f'ops inside SDPA (math path, not counted above): {dict(self.sdpa_ops)}',
            f'ops without tensor outputs (not counted above): {dict(self.meta_ops)}',
            f'cpu_tensors_created={self.cpu_tensors_created} {dict(self.cpu_ops)}; '
            f'real (non-fake) tensor inputs: {dict(self.real_tensor_inputs)}',
            f'params {self.param_bytes / mib:.1f} MiB, buffers {self.buffer_bytes / mib:.1f} MiB',
            f'retained from attributes: {self.retained_bytes / mib:.1f} MiB in '
            f'{len(self.retained)} tensors (before the run: {self.retained_bytes_before / mib:.1f} MiB)',
        ]
        lines += [f'  {r.path} {tuple(r.shape)} {r.dtype} {r.device} {r.nbytes / mib:.2f} MiB'
                  for r in self.retained[:top]]
        if self.peak_bytes is not None:
            lines.append(f'peak live CUDA tensors: forward {self.forward_peak_bytes / mib:.1f} MiB, '
                         f'whole run {self.peak_bytes / mib:.1f} MiB')
        if self.reissued:
            lines.append(f're-issued methods: {dict(self.reissued)}')
        return '\n'.join(lines)


# ---------------------------------------------------------------------------------------
# A fake CUDA device guard for CPU-only builds
# ---------------------------------------------------------------------------------------

_GUARD_SOURCE = r'''
// Stores c10::impl::FakeGuardImpl<CUDA> in c10's device-guard registry (compiled by
// tests/fake_cuda.py). Only where no CUDA guard is registered, i.e. a CPU-only build.
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace {
c10::impl::FakeGuardImpl<c10::DeviceType::CUDA> fake_cuda_guard;
constexpr auto kCuda = static_cast<size_t>(c10::DeviceType::CUDA);
}

// 1: installed (or already ours), 0: a real CUDA guard is registered, left alone.
extern "C" int fake_cuda_guard_install() {
  const c10::impl::DeviceGuardImplInterface* expected = nullptr;
  if (c10::impl::device_guard_impl_registry[kCuda].compare_exchange_strong(expected, &fake_cuda_guard))
    return 1;
  return expected == &fake_cuda_guard ? 1 : 0;
}

// Removes the guard if it is ours.
extern "C" void fake_cuda_guard_uninstall() {
  const c10::impl::DeviceGuardImplInterface* expected = &fake_cuda_guard;
  c10::impl::device_guard_impl_registry[kCuda].compare_exchange_strong(expected, nullptr);
}
'''

_guard_lock = threading.Lock()
_guard_lib: ctypes.CDLL | None = None
_guard_depth = 0


def _guard_library() -> ctypes.CDLL:
    """Compile (once per torch install, cached) and load the fake CUDA guard library.

    Raises RuntimeError (with the compiler's output) if it cannot be built.
    """
    global _guard_lib
    if _guard_lib is not None:
        return _guard_lib
    torch_dir = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    key = hashlib.sha256(f'{_GUARD_SOURCE}{torch.__version__}{torch_dir}{abi}'.encode()).hexdigest()[:16]
    cache = Path(os.environ.get('FAKE_CUDA_GUARD_CACHE')
                 or Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'fake_cuda_guard')
    lib_path = cache / f'fake_cuda_guard-{key}.so'
    if not lib_path.exists():
        cxx = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
        if cxx is None:
            raise RuntimeError('no C++ compiler (c++, g++ or $CXX) to build the fake CUDA guard')
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src, out = Path(tmp) / 'guard.cpp', Path(tmp) / 'guard.so'
            src.write_text(_GUARD_SOURCE)
            cmd = [cxx, '-O1', '-std=c++17', '-shared', '-fPIC', f'-D_GLIBCXX_USE_CXX11_ABI={abi}',
                   '-I', str(torch_dir / 'include'), str(src), '-L', str(torch_dir / 'lib'),
                   '-lc10', f'-Wl,-rpath,{torch_dir / "lib"}', '-o', str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f'building the fake CUDA guard failed: {" ".join(cmd)}\n'
                                   f'{proc.stdout}{proc.stderr}')
            os.replace(out, lib_path)  # atomic: concurrent builders race harmlessly
    lib = ctypes.CDLL(str(lib_path))
    lib.fake_cuda_guard_install.restype = ctypes.c_int
    lib.fake_cuda_guard_uninstall.restype = None
    _guard_lib = lib
    return lib


@contextlib.contextmanager
def fake_cuda_guard(guard: str = 'auto') -> Iterator[str]:
    """Make fake CUDA tensors usable everywhere for the duration of the block.

    Args:
        guard: ``'auto'``: nothing on a CUDA build, else the compiled guard, else
            ``'reissue'`` (with a warning); ``'compiled'``: the compiled guard or an error;
            ``'reissue'``: no guard (see the module docstring).

    Yields:
        ``'native'`` (a CUDA build: torch's own guard), ``'compiled'`` or ``'reissue'``.
    """
    global _guard_depth
    if guard not in ('auto', 'compiled', 'reissue'):
        raise ValueError(f"guard must be 'auto', 'compiled' or 'reissue', not {guard!r}")
    if guard == 'reissue':
        yield 'reissue'
        return
    if guard == 'auto' and torch.cuda._is_compiled():
        yield 'native'
        return
    try:
        lib = _guard_library()
    except (RuntimeError, OSError) as e:
        if guard == 'compiled':
            raise
        warnings.warn(f'fake CUDA guard unavailable ({e}); re-issuing methods instead, '
                      'forward only', RuntimeWarning, stacklevel=3)
        yield 'reissue'
        return
    with _guard_lock:
        installed = lib.fake_cuda_guard_install()
        _guard_depth += installed
    try:
        yield 'compiled' if installed else 'native'
    finally:
        with _guard_lock:
            _guard_depth -= installed
            if installed and _guard_depth == 0:
                lib.fake_cuda_guard_uninstall()


# ---------------------------------------------------------------------------------------
# Re-issuing the methods whose Python bindings need a CUDA guard (guard='reissue')
# ---------------------------------------------------------------------------------------

def _index_args(x: torch.Tensor, index: Any) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Apply the basic part of ``x[index]`` with aten view ops, as torch's C++ indexing does
    (ints select, slices slice, None unsqueezes, ``...`` skips).

    Returns the view and the advanced indices (one entry per view dim, None where basic),
    for ``aten.index.Tensor`` / ``aten.index_put_``.
    """
    index = index if isinstance(index, tuple) else (index,)
    index = tuple(torch.tensor(i, device=x.device) if isinstance(i, (list, bool)) else i
                  for i in index)

    def consumed(i: Any) -> int:
        if i is None or i is Ellipsis:
            return 0
        if isinstance(i, torch.Tensor) and i.dtype == torch.bool:
            return max(i.dim(), 1)
        return 1

    out, dim, adv = x, 0, []
    for i in index:
        if i is Ellipsis:
            n = x.dim() - sum(consumed(j) for j in index)
            adv += [None] * n
            dim += n
        elif i is None:
            out = aten.unsqueeze.default(out, dim)
            adv.append(None)
            dim += 1
        elif isinstance(i, (int, torch.SymInt)):
            out = aten.select.int(out, dim, i)
        elif isinstance(i, slice):
            out = aten.slice.Tensor(out, dim, i.start, i.stop, 1 if i.step is None else i.step)
            adv.append(None)
            dim += 1
        elif isinstance(i, torch.Tensor):
            if i.dtype == torch.bool and i.dim() == 0:
                out = aten.unsqueeze.default(out, dim)
                i = i.unsqueeze(0)
            adv.append(i)
            dim += consumed(i)
            adv += [None] * (consumed(i) - 1) if i.dtype == torch.bool else []
        else:
            raise TypeError(f'fake_cuda: unsupported index {i!r}')
    while adv and adv[-1] is None:
        adv.pop()
    return out, adv


def _getitem(self: torch.Tensor, index: Any) -> torch.Tensor:
    view, adv = _index_args(self, index)
    return aten.index.Tensor(view, adv) if adv else view


def _setitem(self: torch.Tensor, index: Any, value: Any) -> None:
    view, adv = _index_args(self, index)
    if adv:
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(value, dtype=self.dtype, device=self.device)
        aten.index_put_.default(view, adv, value)
    elif isinstance(value, torch.Tensor):
        aten.copy_.default(view, value)
    else:
        aten.fill_.Scalar(view, value)


def _to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    # to(dtype | tensor | device [, dtype], non_blocking=False, copy=False, memory_format=...)
    primary = 2 if (len(args) > 1 and not isinstance(args[0], (torch.Tensor, torch.dtype))
                    and isinstance(args[1], torch.dtype)) else min(len(args), 1)
    flags = list(args[primary:]) + [None, None]
    non_blocking = kwargs.pop('non_blocking', flags[0] or False)
    copy_ = kwargs.pop('copy', flags[1] or False)
    device, dtype, _, memory_format = torch._C._nn._parse_to(*args[:primary], **kwargs)
    device = torch.device(device) if device is not None else self.device
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', 0)
    dtype = dtype or self.dtype
    memory_format = memory_format or torch.preserve_format
    if not copy_ and device == self.device and dtype == self.dtype \
            and memory_format is torch.preserve_format:
        return self
    return aten._to_copy.default(self, dtype=dtype, device=device, non_blocking=non_blocking,
                                 memory_format=memory_format)


def _cuda(self: torch.Tensor, device: Any = None, non_blocking: bool = False,
          memory_format: torch.memory_format = torch.preserve_format) -> torch.Tensor:
    device = torch.device('cuda', device) if isinstance(device, int) else device or 'cuda'
    return _to(self, device, non_blocking=non_blocking, memory_format=memory_format)


def _new_tensor(self: torch.Tensor, data: Any, dtype: torch.dtype | None = None,
                device: Any = None, requires_grad: bool = False) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        data = data.detach()
    return torch.tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                        requires_grad=requires_grad)


def _contiguous(self: torch.Tensor,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    if self.is_contiguous(memory_format=memory_format):
        return self
    return aten.clone.default(self, memory_format=memory_format)


def _type(self: torch.Tensor, dtype: Any = None, non_blocking: bool = False) -> Any:
    if isinstance(dtype, torch.dtype):
        return _to(self, dtype, non_blocking=non_blocking)
    raise RuntimeError(f'fake_cuda: Tensor.type({dtype!r}) is not re-issued')


_B = torch._C.TensorBase
_REISSUE: dict[Any, tuple[str, Callable[..., Any]]] = {
    _B.__getitem__: ('__getitem__', _getitem),
    _B.__setitem__: ('__setitem__', _setitem),
    _B.contiguous: ('contiguous', _contiguous),
    _B.copy_: ('copy_', lambda self, src, non_blocking=False:
               aten.copy_.default(self, src, non_blocking)),
    _B.__invert__: ('__invert__', lambda self: aten.bitwise_not.default(self)),
    _B.to: ('to', _to),
    _B.cuda: ('cuda', _cuda),
    _B.new_tensor: ('new_tensor', _new_tensor),
    _B.type: ('type', _type),
}


# ---------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------

class _Memory:
    """Live CUDA storage bytes, tracked by storage (views are free), swept lazily."""

    def __init__(self) -> None:
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.total = 0      # upper bound: may include storages freed since the last sweep
        self.peak = 0

    def add(self, t: torch.Tensor) -> None:
        if t.device.type != 'cuda':
            return
        try:
            s = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # no storage (sparse, ...): not tracked
            return
        key = s._cdata
        old = self.live.get(key)
        if old is not None and not old[0].expired():
            return
        if old is not None:
            self.total -= old[1]
        n = s.nbytes()
        self.live[key] = (StorageWeakRef(s), n)
        self.total += n
        if self.total > self.peak:
            self.sweep()
            self.peak = max(self.peak, self.total)

    def sweep(self) -> None:
        for key, (ref, n) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.total -= n


class _State:
    """Everything the modes record; ``phase`` is set by the tracer."""

    def __init__(self, reissue: bool, track_memory: bool) -> None:
        self.phase = 'forward'
        self.reissue = reissue
        self.sdpa_depth = 0
        self.ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.sdpa_ops: collections.Counter = collections.Counter()
        self.meta_ops: collections.Counter = collections.Counter()
        self.nn_calls: collections.Counter = collections.Counter()
        self.cpu_ops: collections.Counter = collections.Counter()
        self.real_inputs: collections.Counter = collections.Counter()
        self.reissued: collections.Counter = collections.Counter()
        self.gemms: list[GemmCall] = []
        self.sdpa_calls: list[SdpaCall] = []
        self.memory = _Memory() if track_memory else None
        self.forward_peak: int | None = None

    # The opaque SDPA (see the module docstring).
    def sdpa(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        bound = dict(zip(_SDPA_ARGS, args))
        bound.update(kwargs)
        q, k, v = bound.pop('query'), bound.pop('key'), bound.pop('value')
        mask = bound.pop('attn_mask', None)
        self.sdpa_calls.append(SdpaCall(
            self.phase, tuple(q.shape), tuple(k.shape), tuple(v.shape),
            None if mask is None else tuple(mask.shape), q.dtype,
            None if mask is None else mask.dtype, float(bound.get('dropout_p', 0.)),
            bool(bound.get('is_causal', False))))
        return _OpaqueSdpa.apply(self, bound, q, k, v, mask)


class _OpaqueSdpa(torch.autograd.Function):
    """SDPA whose forward runs the math path for its output (ops -> ``sdpa_ops``) and whose
    backward only makes gradients of the inputs' shapes; memory as a fused kernel's."""

    @staticmethod
    def forward(ctx: Any, state: _State, kwargs: dict[str, Any], q: torch.Tensor,
                k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        state.sdpa_depth += 1
        try:
            out = _SDPA(q, k, v, attn_mask=mask, **kwargs)
            lse = torch.empty(out.shape[:-1], dtype=torch.float32, device=out.device)
        finally:
            state.sdpa_depth -= 1
        if state.memory is not None:
            state.memory.add(out)
            state.memory.add(lse)
        ctx.state = state
        ctx.save_for_backward(q, k, v, mask, out, lse)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        state = ctx.state
        q, k, v, mask, _, _ = ctx.saved_tensors
        state.sdpa_depth += 1
        try:
            grads = [torch.empty_like(t) if need and t is not None else None
                     for t, need in zip((q, k, v, mask), ctx.needs_input_grad[2:])]
        finally:
            state.sdpa_depth -= 1
        if state.memory is not None:
            for g in grads:
                if g is not None:
                    state.memory.add(g)
        state.sdpa_calls.append(SdpaCall(
            'backward', tuple(q.shape), tuple(k.shape), tuple(v.shape),
            None if mask is None else tuple(mask.shape), q.dtype,
            None if mask is None else mask.dtype, 0., False))
        return (None, None, *grads)


class _FunctionRecorder(TorchFunctionMode):
    """Counts SDPA (replacing it by ``_OpaqueSdpa``) and direct ``torch.nn.functional``
    calls; with ``state.reissue``, re-issues the methods of ``_REISSUE`` that fail."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        st = self.state
        if func is _SDPA and st.sdpa_depth == 0:
            st.nn_calls['scaled_dot_product_attention'] += 1
            return st.sdpa(*args, **kwargs)
        name = _NN_NAMES.get(id(func))
        if name is not None and st.sdpa_depth == 0:
            st.nn_calls[name] += 1
        if not st.reissue:
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except RuntimeError as e:
            if _NOT_LINKED not in str(e) or func not in _REISSUE:
                raise
            method, impl = _REISSUE[func]
            st.reissued[method] += 1
            return impl(*args, **kwargs)


class _DispatchRecorder(TorchDispatchMode):
    """Counts aten ops by phase (those inside SDPA apart), GEMMs with their shapes, CPU
    outputs, non-fake inputs, and tracks live CUDA storage bytes."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.namespace == 'prim':
            return out
        st = self.state
        name = str(func)
        if st.sdpa_depth:
            st.sdpa_ops[name] += 1
            return out
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs and func._schema.returns and not func._schema.is_mutable:
            st.meta_ops[name] += 1  # no tensor out, nothing mutated: no kernel (promote_types)
            return out
        st.ops[st.phase][name] += 1
        inputs = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        for a in inputs:
            if not isinstance(a, FakeTensor) and a.numel() > 1:
                st.real_inputs[name] += 1
        if func.namespace == 'aten' and func._overloadpacket.__name__ in GEMM_OPS:
            mats = [a for a in inputs if a.dim() >= 2] or inputs
            st.gemms.append(GemmCall(name, st.phase, tuple(tuple(a.shape) for a in inputs),
                                     mats[0].dtype))
        for t in outs:
            if t.device.type == 'cpu' and t.numel() > 1:
                st.cpu_ops[name] += 1
            if st.memory is not None:
                st.memory.add(t)
        return out


@contextlib.contextmanager
def _patched_sdpa(state: _State) -> Iterator[None]:
    """``torch.nn.functional.scaled_dot_product_attention`` -> ``state.sdpa``, so that the
    calls made inside ``torch.nn.functional`` (``multi_head_attention_forward``) count too."""
    def sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        if state.sdpa_depth:
            return _SDPA(*args, **kwargs)
        state.nn_calls['scaled_dot_product_attention'] += 1
        return state.sdpa(*args, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = _SDPA


@contextlib.contextmanager
def _cuda_autocast_allowed() -> Iterator[None]:
    """Let ``torch.autocast('cuda', ...)`` enable itself (the model's own calls included): on a
    CPU-only build it warns "CUDA is not available" and disables itself. Autocast's CUDA
    dispatch key works on fake CUDA tensors."""
    common = torch.cuda.amp.common
    saved = common.amp_definitely_not_available, torch.cuda.is_bf16_supported
    common.amp_definitely_not_available = lambda: False
    torch.cuda.is_bf16_supported = lambda including_emulation=True: True
    try:
        yield
    finally:
        common.amp_definitely_not_available, torch.cuda.is_bf16_supported = saved


# ---------------------------------------------------------------------------------------
# Backward without the C++ engine
# ---------------------------------------------------------------------------------------

def _call_node(node: Any, grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Call one autograd node; returns one gradient (or None) per ``node.next_functions``."""
    edges = node.next_functions
    if isinstance(node, torch.autograd.function.BackwardCFunction):  # a custom Function
        # As the engine does unless ctx.set_materialize_grads(False) (a flag Python cannot
        # read back): missing gradients become zeros.
        grads = [g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
                 for g, m in zip(grads, node._input_metadata)]
        res = node.apply(*grads)
        res = res if isinstance(res, tuple) else (res,)
        # backward returns one value per forward argument; next_functions has one edge per
        # tensor argument, non-None exactly for those that required grad.
        wanted = [i for i, need in enumerate(node.needs_input_grad) if need]
        live = [j for j, (fn, _) in enumerate(edges) if fn is not None]
        if len(wanted) != len(live):
            raise RuntimeError(f'fake_cuda: cannot map the outputs of {node.name()}')
        outs: list[torch.Tensor | None] = [None] * len(edges)
        for i, j in zip(wanted, live):
            outs[j] = res[i] if i < len(res) else None
        return outs
    if type(node).__name__ == 'AccumulateGrad':
        _accumulate_grad(node.variable, grads[0])
        return []
    res = node(*grads)
    res = res if isinstance(res, tuple) else (res,)
    return list(res) + [None] * (len(edges) - len(res))


def _accumulate_grad(variable: torch.Tensor, grad: torch.Tensor) -> None:
    """``AccumulateGrad``'s ops. Called from Python, the node would always clone the incoming
    gradient (Python holds references to it); the engine steals it when it obeys the
    parameter's layout (same strides), as done here, and clones it into the parameter's
    strides otherwise. An existing ``.grad`` gets an in-place add."""
    if variable.grad is None:
        if grad.stride() != variable.stride():
            grad = torch.empty_strided(variable.shape, variable.stride(), dtype=grad.dtype,
                                       device=grad.device).copy_(grad)
        variable.grad = grad
    else:
        variable.grad += grad


def _run_backward(root: Any, grad: torch.Tensor) -> None:
    """``loss.backward()`` without the C++ engine (see the module docstring).

    Args:
        root: ``loss.grad_fn``; the caller must drop its own references to the graph's
            tensors (``loss``, the outputs) so that nodes and their saved tensors are freed
            as the walk passes them, as the engine frees them.
        grad: the root's incoming gradient, ``ones_like(loss)``.
    """
    with torch.no_grad():  # the engine runs with grad mode = create_graph
        _walk_graph(root, grad)


def _walk_graph(root: Any, grad: torch.Tensor) -> None:
    deps: dict[Any, int] = {}
    seen, stack = {root}, [root]
    while stack:
        node = stack.pop()
        for fn, _ in node.next_functions:
            if fn is None:
                continue
            deps[fn] = deps.get(fn, 0) + 1
            if fn not in seen:
                seen.add(fn)
                stack.append(fn)
    del seen, stack
    buffers: dict[Any, list[torch.Tensor | None]] = {root: [grad]}
    del grad
    order = itertools.count()
    # The engine runs the ready node created last first (AccumulateGrad: UINT64_MAX).
    ready = [(-root._sequence_nr(), next(order), root)]
    del root
    while ready:
        node = heapq.heappop(ready)[2]
        grads = buffers.pop(node, None)
        if grads is not None and any(g is not None for g in grads):
            try:
                outs = _call_node(node, grads)
            except RuntimeError as e:
                if 'accelerator' in str(e):
                    raise RuntimeError(f'fake_cuda: {node.name()} ran the C++ autograd engine '
                                       '(a reentrant backward?), which needs CUDA hooks') from e
                raise
        else:
            outs = [None] * len(node.next_functions)
        del grads
        for (fn, nr), g in zip(node.next_functions, outs):
            if fn is None:
                continue
            if g is not None:
                # The engine's validate_outputs: a broadcast input's gradient is summed back
                # to its shape, and cast to its dtype.
                meta = fn._input_metadata[nr]
                if tuple(g.shape) != tuple(meta.shape):
                    g = g.sum_to_size(meta.shape)
                if g.dtype != meta.dtype:
                    g = g.to(meta.dtype)
                buf = buffers.get(fn)
                if buf is None:
                    buf = buffers[fn] = [None] * len(fn._input_metadata)
                buf[nr] = g if buf[nr] is None else buf[nr] + g
            deps[fn] -= 1
            if deps[fn] == 0:
                del deps[fn]
                heapq.heappush(ready, (-fn._sequence_nr(), next(order), fn))
        del node, outs


# ---------------------------------------------------------------------------------------
# Model conversion and the attribute walk
# ---------------------------------------------------------------------------------------

def _fake_cuda_copy(model: nn.Module, fake_mode: FakeTensorMode,
                    dtype: torch.dtype | None) -> nn.Module:
    """A deep copy of ``model`` whose parameters and registered buffers are fake CUDA
    tensors of the same shapes and strides (floating ones cast to ``dtype`` if given),
    with ties kept. Weights are not copied; other tensor attributes are copied as they are
    (``Module.cuda()`` does not move them either). Overrides of ``Module._apply`` are not
    run."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device='meta')
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    fake = copy.deepcopy(model, memo)
    converted: dict[int, torch.Tensor] = {}

    def convert(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in converted:
            dt = dtype if dtype is not None and t.dtype.is_floating_point else t.dtype
            with fake_mode:
                f = torch.empty_strided(t.shape, t.stride(), dtype=dt, device='cuda')
            converted[id(t)] = nn.Parameter(f, t.requires_grad) if isinstance(t, nn.Parameter) else f
        return converted[id(t)]

    for module in fake.modules():
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is not None:
                    table[name] = convert(t)
    return fake


def _storage_key(t: torch.Tensor) -> int:
    """The storage's identity (the tensor's own for tensors without one: mkldnn, sparse)."""
    try:
        return t.untyped_storage()._cdata
    except (NotImplementedError, RuntimeError):
        return id(t)


def _storage_nbytes(t: torch.Tensor) -> int:
    """The whole storage's size (``numel * element_size`` for tensors without one)."""
    try:
        return t.untyped_storage().nbytes()
    except (NotImplementedError, RuntimeError):
        return t.numel() * t.element_size()


def _retained_tensors(model: nn.Module, max_depth: int = 8) -> list[RetainedTensor]:
    """Tensors reachable from every module's ``__dict__`` (through tuples, lists, dicts,
    sets, NamedTuples, dataclasses and plain objects' ``__dict__``), except parameters,
    registered buffers and storages shared with them; one entry per storage, largest
    first."""
    owned = {_storage_key(t) for t in itertools.chain(model.parameters(), model.buffers())}
    seen_ids: set[int] = set()
    found: list[RetainedTensor] = []

    def walk(obj: Any, path: str, depth: int) -> None:
        if depth > max_depth or id(obj) in seen_ids:
            return
        if isinstance(obj, torch.Tensor):
            seen_ids.add(id(obj))
            key = _storage_key(obj)
            if key not in owned:
                owned.add(key)
                found.append(RetainedTensor(path, tuple(obj.shape), obj.dtype, str(obj.device),
                                            _storage_nbytes(obj)))
            return
        if isinstance(obj, (nn.Module, type, types.ModuleType, str, bytes, int, float, bool)) \
                or obj is None:
            return
        seen_ids.add(id(obj))
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f'{path}[{k!r}]', depth + 1)
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            for i, v in enumerate(obj):
                walk(v, f'{path}[{i}]', depth + 1)
        elif dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name, None), f'{path}.{f.name}', depth + 1)
        elif hasattr(obj, '__dict__') and not callable(obj):
            for k, v in vars(obj).items():
                walk(v, f'{path}.{k}', depth + 1)

    for mod_name, module in model.named_modules():
        for attr, value in vars(module).items():
            if attr in ('_parameters', '_buffers', '_modules'):
                continue
            walk(value, f'{mod_name}.{attr}' if mod_name else attr, 0)
    return sorted(found, key=lambda r: -r.nbytes)


# ---------------------------------------------------------------------------------------
# The tracer
# ---------------------------------------------------------------------------------------

def _float_leaves(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def trace_fake_cuda(model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]], *,
                    train: bool = False, dtype: torch.dtype | None = torch.float32,
                    autocast_dtype: torch.dtype | None = None, guard: str = 'auto',
                    track_memory: bool = True) -> FakeCudaTrace:
    """Run ``model`` on fake CUDA tensors and report what a GPU run would dispatch.

    Args:
        model: any ``nn.Module``, on CPU, with real weights; it is not modified (a copy
            with fake CUDA parameters runs). Its mode (``train()`` / ``eval()``) is kept
            unless ``train=True``.
        input_shape: one shape, e.g. ``(2, 3, 800, 1344)``, or a sequence of shapes, one
            per positional input; inputs are fake CUDA tensors of ``dtype``.
        train: ``model.train()``, forward under grad mode, loss = the sum of the means of
            the floating outputs (in float32), backward. Otherwise the forward runs under
            ``torch.no_grad()``.
        dtype: dtype of the inputs and of the floating parameters and buffers (None: keep
            the parameters' dtypes, inputs float32).
        autocast_dtype: if given, the forward (and loss) run under
            ``torch.autocast('cuda', dtype=autocast_dtype)``.
        guard: see :func:`fake_cuda_guard`; ``train=True`` needs a guard.
        track_memory: track live CUDA storage bytes (``peak_bytes``); costs time
            quadratic in the number of live tensors, turn off for very large graphs.

    Returns:
        A :class:`FakeCudaTrace`.
    """
    shapes = [tuple(input_shape)] if all(isinstance(d, int) for d in input_shape) \
        else [tuple(s) for s in input_shape]
    in_dtype = dtype or torch.float32
    with fake_cuda_guard(guard) as kind:
        if train and kind == 'reissue':
            raise RuntimeError('fake_cuda: train=True needs the fake CUDA guard (autograd nodes '
                               'on fake CUDA tensors need it); see fake_cuda_guard()')
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        fmodel = _fake_cuda_copy(model, fake_mode, dtype)
        if train:
            fmodel.train()
        param_bytes = sum(p.untyped_storage().nbytes() for p in fmodel.parameters())
        buffer_bytes = sum(b.untyped_storage().nbytes() for b in fmodel.buffers())
        retained_before = sum(r.nbytes for r in _retained_tensors(fmodel))
        state = _State(reissue=kind == 'reissue', track_memory=track_memory)
        with fake_mode:
            xs = [torch.empty(s, dtype=in_dtype, device='cuda') for s in shapes]
        if state.memory is not None:
            for t in itertools.chain(fmodel.parameters(), fmodel.buffers(), xs):
                state.memory.add(t)
        params_without_grad: list[str] = []
        with _cuda_autocast_allowed(), fake_mode, _patched_sdpa(state), \
                _FunctionRecorder(state), _DispatchRecorder(state):
            amp = (torch.autocast('cuda', dtype=autocast_dtype) if autocast_dtype is not None
                   else contextlib.nullcontext())
            with torch.set_grad_enabled(train):
                with amp:
                    out = fmodel(*xs)
                if state.memory is not None:
                    state.memory.sweep()
                    state.forward_peak = state.memory.peak
                outputs = [(tuple(t.shape), t.dtype, str(t.device)) for t in tree_leaves(out)
                           if isinstance(t, torch.Tensor)]
                if train:
                    state.phase = 'loss'
                    with amp:
                        loss = sum(t.float().mean() for t in _float_leaves(out))
                    del out, xs
                    state.phase = 'backward'
                    if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
                        raise RuntimeError('fake_cuda: the outputs do not require grad')
                    root, grad = loss.grad_fn, torch.ones_like(loss)
                    del loss
                    _run_backward(root, grad)
                    del root, grad
                    params_without_grad = [n for n, p in fmodel.named_parameters()
                                           if p.requires_grad and p.grad is None]
                else:
                    del out, xs
        if state.memory is not None:
            state.memory.sweep()
        retained = _retained_tensors(fmodel)
        del fmodel
    gemms = state.gemms
    return FakeCudaTrace(
        guard=kind, train=train,
        sdpa_calls=sum(1 for s in state.sdpa_calls if s.phase == 'forward'),
        forward_gemms=sum(1 for g in gemms if g.phase == 'forward'),
        backward_gemms=sum(1 for g in gemms if g.phase == 'backward'),
        gemm_shapes=gemms, sdpa_shapes=state.sdpa_calls,
        ops=state.ops['forward'], backward_ops=state.ops['backward'], loss_ops=state.ops['loss'],
        sdpa_ops=state.sdpa_ops, meta_ops=state.meta_ops, nn_calls=state.nn_calls, cpu_ops=state.cpu_ops,
        real_tensor_inputs=state.real_inputs, reissued=state.reissued,
        retained_bytes=sum(r.nbytes for r in retained), retained=retained,
        retained_bytes_before=retained_before, param_bytes=param_bytes,
        buffer_bytes=buffer_bytes, forward_peak_bytes=state.forward_peak,
        peak_bytes=None if state.memory is None else state.memory.peak,
        outputs=outputs, params_without_grad=params_without_grad)


def main(argv: Sequence[str] | None = None) -> None:
    """``python tests/fake_cuda.py MODULE:CLASS [--kwargs "a=1, b='x'"] --shape 2,3,224,224
    [--train] [--autocast float16] [--no-memory]``: build ``CLASS(**kwargs)`` on CPU (in
    eval mode unless ``--train``), trace it and print the summary."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('model', help='module:Class, e.g. torchvision.models:resnet18')
    parser.add_argument('--kwargs', default='', help="constructor kwargs, e.g. \"arch='tiny'\"")
    parser.add_argument('--shape', required=True, help='input shape, e.g. 2,3,224,224')
    parser.add_argument('--train', action='store_true')
    parser.add_argument('--autocast', default=None, help='float16 or bfloat16')
    parser.add_argument('--no-memory', action='store_true', help='skip peak tracking')
    args = parser.parse_args(argv)
    module_name, _, cls_name = args.model.partition(':')
    cls = getattr(importlib.import_module(module_name), cls_name)
    kwargs = eval(f'dict({args.kwargs})')  # noqa: S307 - a developer's command line
    model = cls(**kwargs)
    if not args.train:
        model.eval()
    trace = trace_fake_cuda(model, tuple(int(d) for d in args.shape.split(',')),
                            train=args.train, track_memory=not args.no_memory,
                            autocast_dtype=getattr(torch, args.autocast) if args.autocast else None)
    print(trace.summary())


if __name__ == '__main__':
    main()
