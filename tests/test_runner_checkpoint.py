"""Runner checkpoints: weights_only loading with a minimal allow-list, atomic writes, resume
after SIGKILL with the same losses as an uninterrupted run (issue 4 point 3, issue 7 points 3-4).

The Runner here is tests/runner_utils.py's linear model: real mmengine checkpoints in
milliseconds. Each check that depends on process-wide state (torch's allow-list, copyreg)
runs in a subprocess.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from swin_backbone.runner_checkpoint import (RUNNER_CHECKPOINT_GLOBALS,
                                             allow_runner_checkpoints, atomic_save_checkpoint,
                                             is_complete_checkpoint, latest_complete_checkpoint)

REPO = Path(__file__).resolve().parents[1]
RUNNER = [sys.executable, str(REPO / 'tests' / 'runner_utils.py')]


def _losses(stdout: str) -> dict[int, float]:
    return {int(i): float(v) for _, i, v in
            (line.split() for line in stdout.splitlines() if line.startswith('loss '))}


_ABLATION = """
import json, sys, torch
sys.path.insert(0, {repo!r})
from swin_backbone.runner_checkpoint import RUNNER_CHECKPOINT_GLOBALS as ALLOWED
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
    subprocess.run([*RUNNER, str(tmp_path), '2', '--no-allow-list'], check=True,
                   capture_output=True)
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
from swin_backbone.runner_checkpoint import atomic_save_checkpoint
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
    checkpoint, and compare every later loss with a run that was never interrupted."""
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
    for i in got:
        assert got[i] == pytest.approx(expected[i], rel=1e-6, abs=1e-7), i
