"""Smoke tests of ``tests/fake_cuda.py`` on hand-made modules (no swin_backbone code)."""
from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from fake_cuda import _run_backward, trace_fake_cuda

STASH_BYTES = 2 * 2 ** 20


class AttendAndStash(nn.Module):
    """``(B, N, 8)`` -> the same: one SDPA over 2 heads of 4 (q = k = v, no weights), and
    keeps a 2 MiB float32 tensor and a view of its output in attributes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = x.view(b, n, 2, c // 2).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, q, q)
        self.stash = torch.empty(STASH_BYTES // 4, device=x.device)
        self.views = {'out': [out[0]]}  # shares the output's storage, counted once
        return out.transpose(1, 2).reshape(b, n, c)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8), AttendAndStash())


def test_forward_counts_and_retained_bytes():
    model = tiny_model().eval()
    trace = trace_fake_cuda(model, (2, 5, 8))
    assert trace.gemms == trace.forward_gemms == 2
    assert trace.ops['aten.addmm.default'] == 2
    assert trace.sdpa_calls == 1
    assert trace.sdpa_shapes[0].query == (2, 2, 5, 4)
    assert trace.sdpa_ops['aten.bmm.default'] == 2  # the math path, kept apart
    assert trace.nn_calls['linear'] == 2
    assert trace.outputs == [((2, 5, 8), torch.float32, 'cuda:0')]
    assert trace.cpu_tensors_created == 0 and not trace.real_tensor_inputs
    stash = STASH_BYTES + 2 * 5 * 8 * 4  # + the output's storage, viewed in `views`
    assert trace.retained_bytes == stash and trace.retained_bytes_before == 0
    assert trace.retained[0].path == '3.stash' and trace.retained[0].nbytes == STASH_BYTES
    assert trace.peak_bytes >= STASH_BYTES
    # The caller's model is untouched.
    assert not hasattr(model[3], 'stash')
    assert all(type(p) is nn.Parameter and p.device.type == 'cpu' for p in model.parameters())


def test_training_step_and_autocast():
    trace = trace_fake_cuda(tiny_model(), (2, 5, 8), train=True)
    # Backward: the second linear's input and weight gradients, the first one's weight
    # gradient (its input does not require grad).
    assert (trace.forward_gemms, trace.backward_gemms, trace.gemms) == (2, 3, 5)
    assert trace.sdpa_calls == 1 and trace.backward_sdpa_calls == 1
    assert trace.params_without_grad == []
    assert trace.backward_ops['aten.mm.default'] == 3
    half = trace_fake_cuda(tiny_model(), (2, 5, 8), train=True, autocast_dtype=torch.float16)
    assert half.backward_gemms == 3
    assert {g.dtype for g in half.gemm_shapes} == {torch.float16}
    assert half.sdpa_shapes[0].dtype == torch.float16


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: float, unused: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.k = k
        return x * x * k

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, = ctx.saved_tensors
        return 2 * ctx.k * x * grad, None, None


class CountMm(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _graph(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    h = F.linear(x, w, b)                        # broadcast bias
    a, c = h.split(8, dim=-1)                    # two outputs, one node
    y = Square.apply(a, 3.0, torch.ones(1)) + c.sigmoid() * a  # a used twice
    return y.mean()


def test_backward_walker_matches_the_engine():
    """On real CPU tensors, ``_run_backward`` gives the engine's gradients and GEMMs."""
    torch.manual_seed(0)
    w, b = torch.randn(16, 4, requires_grad=True), torch.randn(16, requires_grad=True)
    x = torch.randn(3, 5, 4)
    with CountMm() as engine:
        _graph(w, b, x).backward()
    expected = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None
    loss = _graph(w, b, x)
    root, grad = loss.grad_fn, torch.ones_like(loss)
    del loss
    with CountMm() as walker:
        _run_backward(root, grad)
    torch.testing.assert_close((w.grad, b.grad), expected)
    assert walker.ops['mm'] == engine.ops['mm'] == 1  # weight grad only: x needs none


class Indexing(nn.Module):
    """Every method whose binding needs a CUDA device guard."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).transpose(0, 1).contiguous()   # (N, B, 8)
        keep = ~(y[..., :1] > 0)
        y[0] = 0.
        z = torch.empty_like(y).copy_(y)
        z = z[:, None, 1:] * keep.to(z.dtype)[:, None]
        return z.to('cuda', torch.float16).cuda()


@pytest.mark.parametrize('guard', ['auto', 'reissue'])
def test_guards_agree(guard):
    trace = trace_fake_cuda(Indexing().eval(), (2, 5, 8), guard=guard)
    assert trace.outputs == [((5, 1, 2, 8), torch.float16, 'cuda:0')]
    assert trace.gemms == 1
    if guard == 'reissue':
        assert trace.guard == 'reissue'
        assert {'contiguous', '__invert__', '__getitem__', '__setitem__', 'copy_',
                'to'} <= set(trace.reissued)
    else:
        assert not trace.reissued
    if trace.guard == 'compiled':  # the guard is removed again after the trace
        with FakeTensorMode(), pytest.raises(RuntimeError, match='not linked with support for cuda'):
            torch.empty(3, device='cuda')[0]


class MakesCpuTensors(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(x.shape[-1], dtype=x.dtype).to(x.device)


def test_cpu_tensors_are_reported():
    trace = trace_fake_cuda(MakesCpuTensors(), (2, 8))
    assert trace.cpu_ops['aten.arange.start_step'] + trace.cpu_ops['aten.arange.default'] >= 1
    assert trace.cpu_tensors_created >= 1
    assert trace.outputs == [((2, 8), torch.float32, 'cuda:0')]
