"""swin_backbone.cpu.gemm_choice: the per-CPU, per-shape choice between oneDNN and MKL.

Timing is replaced by a scripted clock, so what is tested is the decision and the cache,
never this machine's speed.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch

from swin_backbone import SwinTransformerV2
from swin_backbone.cpu import accelerate, gemm_choice
from swin_backbone.cpu.linear import onednn_linear_available

pytestmark = pytest.mark.skipif(not onednn_linear_available(),
                                reason='this PyTorch build has no oneDNN linear kernels')


@pytest.fixture
def calibrating(tmp_path, monkeypatch):
    """The default policy with an empty cache directory and no in-memory choices."""
    monkeypatch.setenv('SWIN_BACKBONE_GEMM', 'calibrate')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    gemm_choice.forget()
    yield tmp_path
    gemm_choice.forget()


def scripted_clock(onednn_s: float, mkl_s: float):
    """A clock under which each oneDNN run takes ``onednn_s`` and each MKL run ``mkl_s``
    (timed_choice times oneDNN's 3 runs first, then MKL's)."""
    durations = [onednn_s] * 3 + [mkl_s] * 3
    ticks, now = [], 0.
    for d in durations:
        ticks += [now, now + d]
        now += d
    return iter(ticks).__next__


def test_rule_is_the_amd_measurement() -> None:
    assert gemm_choice.rule('weight_grad', 67200, 96, 288) == 'mkl'  # stage 1 qkv
    assert gemm_choice.rule('weight_grad', 67200, 384, 96) == 'onednn'  # stage 1 fc2
    assert gemm_choice.rule('weight_grad', 1050, 768, 3072) == 'onednn'  # few tokens
    assert gemm_choice.rule('forward', 67200, 96, 288) == 'onednn'


@pytest.mark.parametrize('op', gemm_choice.OPS)
def test_timed_choice_keeps_the_rule_unless_the_other_is_clearly_faster(op: str) -> None:
    m, k, n = 512, 32, 64  # rule: oneDNN for all four
    assert gemm_choice.timed_choice(op, m, k, n, clock=scripted_clock(1., .5)) == 'mkl'
    assert gemm_choice.timed_choice(op, m, k, n, clock=scripted_clock(1., .95)) == 'onednn'
    assert gemm_choice.timed_choice(op, m, k, n, clock=scripted_clock(.5, 1.)) == 'onednn'


def test_timed_choice_replaces_an_mkl_rule_only_when_onednn_is_clearly_faster() -> None:
    m, k, n = 1024, 8, 16  # many tokens into a narrow layer: the rule says MKL
    assert gemm_choice.rule('weight_grad', m, k, n) == 'mkl'
    choice = gemm_choice.timed_choice
    assert choice('weight_grad', m, k, n, clock=scripted_clock(.5, 1.)) == 'onednn'
    assert choice('weight_grad', m, k, n, clock=scripted_clock(.95, 1.)) == 'mkl'


@pytest.mark.parametrize('op', gemm_choice.OPS)
def test_timed_choice_runs_both_real_kernels(op: str, monkeypatch) -> None:
    """Each library's kernel runs a warm-up and three timed runs, on float32 inputs with the
    shapes asked for (the inference op on a prepacked weight)."""
    from swin_backbone.cpu import linear
    ran = []
    real_onednn, real_wg = linear.onednn_matmul, linear.weight_gradient_on

    def onednn(x, weight, bias=None):
        ran.append(('onednn', x.dtype, tuple(x.shape), weight.is_mkldnn))
        return real_onednn(x, weight, bias)

    def mkl_linear(x, weight, bias=None):
        ran.append(('mkl', x.dtype, tuple(x.shape), False))
        return x @ weight.t() + bias

    monkeypatch.setattr(linear, 'onednn_matmul', onednn)
    monkeypatch.setattr(torch.nn.functional, 'linear', mkl_linear)
    monkeypatch.setattr(linear, 'weight_gradient_on',
                        lambda lib, g, x: ran.append((lib, x.dtype, tuple(x.shape), False))
                        or real_wg(lib, g, x))
    torch.set_default_dtype(torch.float64)  # ignored: the kernels time float32
    try:
        assert gemm_choice.timed_choice(op, 256, 8, 16) in ('onednn', 'mkl')
    finally:
        torch.set_default_dtype(torch.float32)
    if op == 'input_grad':  # MKL's side is a plain mm
        assert [r[0] for r in ran] == ['onednn'] * 4
        assert {r[2] for r in ran} == {(256, 16)}
    else:
        assert [r[0] for r in ran] == ['onednn'] * 4 + ['mkl'] * 4
        assert {r[2] for r in ran} == {(256, 8)}
    assert {r[1] for r in ran} == {torch.float32}
    if op in ('inference', 'forward'):
        assert {r[3] for r in ran if r[0] == 'onednn'} == {op == 'inference'}


def test_timed_choice_rejects_an_unknown_op() -> None:
    with pytest.raises(ValueError, match='unknown GEMM op'):
        gemm_choice.timed_choice('outer', 256, 8, 8)


def test_bad_policy_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv('SWIN_BACKBONE_GEMM', 'fastest')
    with pytest.raises(ValueError, match='SWIN_BACKBONE_GEMM=.fastest.'):
        gemm_choice.choose('forward', 256, 8, 8)


def test_fixed_policies_never_time(monkeypatch) -> None:
    monkeypatch.setattr(gemm_choice, 'timed_choice', _must_not_time)
    for name in ('onednn', 'mkl'):
        monkeypatch.setenv('SWIN_BACKBONE_GEMM', name)
        assert gemm_choice.choose('weight_grad', 67200, 96, 288) == name
    monkeypatch.setenv('SWIN_BACKBONE_GEMM', 'rule')
    assert gemm_choice.choose('weight_grad', 67200, 96, 288) == 'mkl'


def _must_not_time(*args, **kwargs):
    raise AssertionError('timed although the choice was known')


def test_calibration_times_each_bucket_once_and_caches_it_on_disk(calibrating, monkeypatch) -> None:
    calls = []

    def fake(op, m, k, n):
        calls.append((op, m, k, n))
        return 'mkl'
    monkeypatch.setattr(gemm_choice, 'timed_choice', fake)
    assert gemm_choice.choose('forward', 60000, 96, 288) == 'mkl'
    assert gemm_choice.choose('forward', 40000, 96, 288) == 'mkl'  # same bucket: 65536
    assert gemm_choice.choose('forward', 1000, 96, 288) == 'onednn'  # too small to time
    assert calls == [('forward', 65536, 96, 288)]
    path = gemm_choice.cache_path()
    assert path.parent.parent == calibrating
    assert json.loads(path.read_text()) == {'forward:65536:96:288': 'mkl'}

    gemm_choice.forget()  # a new process: the file answers, nothing is timed
    monkeypatch.setattr(gemm_choice, 'timed_choice', _must_not_time)
    assert gemm_choice.choose('forward', 60000, 96, 288) == 'mkl'


@pytest.mark.parametrize('content', ['{not json', '[]', 'null', '{"input_grad:4096:192:576": 7}'])
def test_an_unusable_cache_file_is_re_timed(content: str, calibrating, monkeypatch) -> None:
    path = gemm_choice.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    monkeypatch.setattr(gemm_choice, 'timed_choice', lambda *a: 'onednn')
    assert gemm_choice.choose('input_grad', 3000, 192, 576) == 'onednn'
    assert json.loads(path.read_text()) == {'input_grad:4096:192:576': 'onednn'}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_entries_another_process_wrote_are_kept(calibrating, monkeypatch) -> None:
    monkeypatch.setattr(gemm_choice, 'timed_choice', lambda *a: 'mkl')
    assert gemm_choice.choose('forward', 60000, 96, 288) == 'mkl'
    path = gemm_choice.cache_path()
    other = json.loads(path.read_text())
    other['weight_grad:65536:96:288'] = 'onednn'  # written meanwhile by another process
    path.write_text(json.dumps(other))
    assert gemm_choice.choose('inference', 60000, 96, 288) == 'mkl'
    assert json.loads(path.read_text()) == {'forward:65536:96:288': 'mkl',
                                            'inference:65536:96:288': 'mkl',
                                            'weight_grad:65536:96:288': 'onednn'}


def test_choices_are_kept_per_thread_count(calibrating, monkeypatch) -> None:
    answers = iter(['mkl', 'onednn'])
    monkeypatch.setattr(gemm_choice, 'timed_choice', lambda *a: next(answers))
    threads = torch.get_num_threads()
    assert gemm_choice.choose('forward', 60000, 96, 288) == 'mkl'
    first = gemm_choice.cache_path()
    torch.set_num_threads(threads + 1)
    try:
        assert gemm_choice.cache_path() != first
        assert gemm_choice.choose('forward', 60000, 96, 288) == 'onednn'  # timed again
    finally:
        torch.set_num_threads(threads)
    assert gemm_choice.choose('forward', 60000, 96, 288) == 'mkl'
    assert json.loads(first.read_text()) == {'forward:65536:96:288': 'mkl'}


@pytest.mark.parametrize('library', ['onednn', 'mkl'])
def test_either_library_gives_the_reference_results(library: str, monkeypatch) -> None:
    """Forward and every gradient of the CPU layer, with all matmuls on one library."""
    monkeypatch.setenv('SWIN_BACKBONE_GEMM', library)
    torch.manual_seed(0)
    reference = SwinTransformerV2(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                  window_size=4, drop_path_rate=0.)
    ours = accelerate(copy.deepcopy(reference))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference.eval(), ours.eval()
        for a, b in zip(reference(x), ours(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    reference.train(), ours.train()
    sum(o.square().mean() for o in reference(x)).backward()
    sum(o.square().mean() for o in ours(x)).backward()
    for (name, p), q in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
