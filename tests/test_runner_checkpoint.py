"""Runner checkpoints: weights_only loading with a minimal allow-list, atomic writes, resume
after SIGKILL with the same losses as an uninterrupted run (issue 4 point 3, issue 7 points 3-4).

The Runner here is tests/runner_utils.py's linear model: real mmengine checkpoints in
milliseconds, an ``IterBasedTrainLoop`` (mmengine fast-forwards its dataloader on resume) and
draws from torch, numpy and Python's generators, which ``RandomStateHook`` restores. Each
check that depends on process-wide state (torch's allow-list, copyreg) runs in a subprocess.
tests/test_interrupted_training.py does the same with a detector through tools/train.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from swin_backbone.checkpoint.runner import (RUNNER_CHECKPOINT_GLOBALS, is_complete_checkpoint,
                                             latest_complete_checkpoint)
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints, atomic_save_checkpoint
from toy_runs import free_port

REPO = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, str(REPO / 'tests' / 'runner_utils.py')]


def _losses(stdout: str, rank: int | None = None) -> dict[int, float]:
    """``{iteration: loss}`` from ``loss <iter> <value>`` lines, or under torchrun from rank
    ``rank``'s ``rank<r> loss <iter> <value>``."""
    pattern = r'^loss (\d+) (\S+)$' if rank is None else rf'rank{rank} loss (\d+) ([\d.e-]+)\n'
    return {int(i): float(v) for i, v in re.findall(pattern, stdout, flags=re.M)}


_ABLATION = """
import json, sys, torch
sys.path.insert(0, {repo!r})
from swin_backbone.checkpoint.runner import RUNNER_CHECKPOINT_GLOBALS as ALLOWED
loads = []
for i in range(-1, len(ALLOWED)):
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([g for j, g in enumerate(ALLOWED) if j != i])
    try:
        torch.load(sys.argv[1], weights_only=True)
        loads.append(True)
    except Exception:
        loads.append(False)
print(json.dumps(loads))
"""


def test_allow_list_is_exactly_what_a_runner_checkpoint_needs(tmp_path: Path) -> None:
    """A real Runner checkpoint loads with the allow-list, and without any one entry of it
    it does not; the only entries a fresh file does not use are the numpy 1 spellings."""
    subprocess.run([*RUNNER, str(tmp_path), '2'], check=True, capture_output=True)
    allow_runner_checkpoints()
    assert len(torch.load(tmp_path / 'iter_2.pth', weights_only=True)['rng_states']) == 1
    out = subprocess.run([sys.executable, '-c', _ABLATION.format(repo=str(REPO)),
                          str(tmp_path / 'iter_2.pth')],
                         check=True, capture_output=True, text=True).stdout
    full, *without = json.loads(out.strip().splitlines()[-1])
    assert full, 'a Runner checkpoint does not load with the allow-list'
    names = [g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}'
             for g in RUNNER_CHECKPOINT_GLOBALS]
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in names
    for name, loads in zip(names, without):
        assert loads == name.startswith('numpy.core.'), name


def test_plain_mmengine_checkpoint_still_rejected_for_getattr(tmp_path: Path) -> None:
    """Without our reducer, mmengine pickles functions through builtins.getattr: loading
    such a file must fail rather than allow getattr (which reaches module globals)."""
    script = ('import sys; sys.path.insert(0, "tests"); from runner_utils import tiny_runner; '
              f'tiny_runner({str(tmp_path)!r}, 1, log_level="WARNING").train()')
    subprocess.run([sys.executable, '-c', script], cwd=REPO, check=True, capture_output=True)
    allow_runner_checkpoints()
    with pytest.raises(Exception, match='getattr'):
        torch.load(tmp_path / 'iter_1.pth', weights_only=True)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_code_in_a_checkpoint_does_not_run(tmp_path: Path) -> None:
    allow_runner_checkpoints()
    marker = tmp_path / 'pwned'
    torch.save({'state_dict': {}, 'meta': _Exploit(marker)}, tmp_path / 'evil.pth')
    with pytest.raises(Exception, match='system'):
        torch.load(tmp_path / 'evil.pth')  # torch >= 2.6: weights_only=True by default
    assert not marker.exists()


def test_atomic_save_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / 'iter_1.pth'
    atomic_save_checkpoint({'state_dict': {'w': torch.ones(3)}}, str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_1.pth']
    assert torch.load(target)['state_dict']['w'].tolist() == [1, 1, 1]


_WRITER = '''
import sys, torch
sys.path.insert(0, {repo!r})
from swin_backbone.engine.runner_checkpoint import atomic_save_checkpoint
big = {{'state_dict': {{'w': torch.randn(32, 1024, 1024)}}}}  # 128 MiB: slow to write
for step in range(100):
    print('writing', step, flush=True)
    atomic_save_checkpoint(dict(big, step=step), sys.argv[1])
'''


def test_sigkill_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / 'latest.pth'
    proc = subprocess.Popen([sys.executable, '-c', _WRITER.format(repo=str(REPO)), str(target)],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the first save has completed once the second starts
        if line.startswith('writing 1'):
            break
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert is_complete_checkpoint(str(target))
    assert torch.load(target, weights_only=True)['step'] in (0, 1)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != 'latest.pth']
    assert all('.tmp-' in name for name in leftovers), leftovers


def test_latest_complete_checkpoint_skips_truncated_files(tmp_path: Path) -> None:
    atomic_save_checkpoint({'x': torch.zeros(1000)}, str(tmp_path / 'iter_2.pth'))
    data = (tmp_path / 'iter_2.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(data[:len(data) // 2])  # a crash mid-write
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert not is_complete_checkpoint(str(tmp_path / 'iter_4.pth'))
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text('')  # a crash while writing the pointer
    assert latest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    assert latest_complete_checkpoint(str(tmp_path / 'missing')) is None


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    """Kill a run (SIGKILL) after a few iterations, resume it from the newest complete
    checkpoint, and compare every later loss with a run that was never interrupted: equal to
    the bit, dropout, numpy noise and Python's random scale included."""
    iters = 8
    reference = subprocess.run([*RUNNER, str(tmp_path / 'ref'), str(iters)], check=True,
                               capture_output=True, text=True)
    expected = _losses(reference.stdout)
    assert sorted(expected) == list(range(1, iters + 1))

    work = tmp_path / 'killed'
    proc = subprocess.Popen([*RUNNER, str(work), str(iters), '--sleep', '0.3'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith('loss 4 '):  # iteration 4 done; its checkpoint may be mid-write
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = latest_complete_checkpoint(str(work))
    assert resumed_from is not None
    allow_runner_checkpoints()
    start = torch.load(resumed_from, weights_only=True)['meta']['iter']
    assert 3 <= start <= 4

    resumed = subprocess.run([*RUNNER, str(work), str(iters), '--resume'], check=True,
                             capture_output=True, text=True)
    got = _losses(resumed.stdout)
    assert sorted(got) == list(range(start + 1, iters + 1))
    assert got == {i: expected[i] for i in got}


def test_resume_without_random_state_hook_draws_other_numbers(tmp_path: Path) -> None:
    """The control: plain mmengine re-seeds on resume, so the same resume gives other losses
    (the test above would catch a hook that restored nothing)."""
    reference = subprocess.run([*RUNNER, str(tmp_path / 'ref'), '6', '--no-rng-hook'],
                               check=True, capture_output=True, text=True)
    (tmp_path / 'resumed').mkdir()
    shutil.copy(tmp_path / 'ref' / 'iter_3.pth', tmp_path / 'resumed')
    resumed = subprocess.run([*RUNNER, str(tmp_path / 'resumed'), '6', '--resume',
                              '--no-rng-hook'], check=True, capture_output=True, text=True)
    expected, got = _losses(reference.stdout), _losses(resumed.stdout)
    assert sorted(got) == [4, 5, 6]
    assert all(got[i] != expected[i] for i in got), (got, expected)


def _torchrun(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', str(free_port()), *RUNNER[1:], *args, '--launcher', 'pytorch'],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_two_processes_resume_each_with_its_own_states(tmp_path: Path) -> None:
    """2 gloo processes with their own seeds (``diff_rank_seed``): rank 0's checkpoint holds
    both ranks' states, each rank gets its own back; resuming on 1 process warns and keeps the
    fresh seed instead."""
    expected = _torchrun(str(tmp_path / 'ref'), '6')
    allow_runner_checkpoints()
    states = torch.load(tmp_path / 'ref' / 'iter_3.pth', weights_only=True)['rng_states']
    assert len(states) == 2 and not torch.equal(states[0]['torch'], states[1]['torch'])
    for work in ('two', 'one'):
        (tmp_path / work).mkdir()
        shutil.copy(tmp_path / 'ref' / 'iter_3.pth', tmp_path / work)
    got = _torchrun(str(tmp_path / 'two'), '6', '--resume')
    for rank in (0, 1):
        reference = _losses(expected, rank)
        assert sorted(reference) == list(range(1, 7))
        assert _losses(got, rank) == {i: reference[i] for i in (4, 5, 6)}, rank
    one = subprocess.run([*RUNNER, str(tmp_path / 'one'), '6', '--resume'], check=True,
                         capture_output=True, text=True)
    assert 'random states of 2 processes, this run has 1: not restored' in one.stdout + one.stderr
    assert sorted(_losses(one.stdout)) == [4, 5, 6]
