"""Interrupted detection training through tools/train.py (issue 7 point 4).

A Mask R-CNN + SwinV2 run killed with SIGKILL mid-epoch, and one killed while writing a
checkpoint, resume with ``tools/train.py --resume`` from the newest complete checkpoint and
then log the same loss at every iteration, bit for bit, as a run that was never interrupted.

The toy detection config, shrunk (:data:`_CONFIG`): 6 generated train images and 2 val images
resized to 64 px, batch 2 (3 iterations an epoch), 4 epochs, a checkpoint and a validation
every epoch, random flips, drop-path 0.3, ``randomness=dict(seed=0, deterministic=True)``.
Losses are read from ``vis_data/scalars.json`` (logger interval 1, log window 1: each
iteration's own loss). ``pytest -s`` prints the experiment record as markdown tables.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from paths import TOY_DETECTION_CONFIG
from projects.toy_demo.toy_coco import generate_toy_coco
from swin_backbone.checkpoint.runner import is_complete_checkpoint, latest_complete_checkpoint
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints

REPO = Path(__file__).resolve().parents[1]
ITERS_PER_EPOCH, EPOCHS = 3, 4
pytestmark = pytest.mark.slow

_CONFIG = """
_base_ = [{base!r}]
data_root = {data_root!r}
image_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
model = dict(backbone=dict(arch=dict(depths=[1, 1, 2, 1]), drop_path_rate=0.3))
train_cfg = dict(max_epochs={epochs}, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
    dict(type='CosineAnnealingLR', T_max={epochs}, eta_min=1e-5, by_epoch=True, begin=0,
         end={epochs}, convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
"""


@pytest.fixture(scope='module')
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('interrupted')
    generate_toy_coco(str(root / 'data'), num_train=2 * ITERS_PER_EPOCH, num_val=2, seed=1)
    path = root / 'config.py'
    path.write_text(_CONFIG.format(base=str(TOY_DETECTION_CONFIG),
                                   data_root=f'{root}/data/', epochs=EPOCHS))
    return path


def _train(args: list[str], kill_on: str | None = None) -> tuple[int, str, list[str]]:
    """Run ``args`` in the repo; SIGKILL it once an output line contains ``kill_on``.

    Returns:
        ``(returncode, the line it was killed after or '', all output lines)``.
    """
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, killed_after = [], ''
    for line in proc.stdout:
        lines.append(line)
        if kill_on is not None and kill_on in line:
            proc.send_signal(signal.SIGKILL)
            killed_after = line
            break
    proc.stdout.close()
    return proc.wait(), killed_after, lines


def _losses(work_dir: Path) -> dict[int, float]:
    """``{iteration: loss}`` of the latest run in ``work_dir`` (timestamped subfolders)."""
    latest = sorted(work_dir.glob('*/vis_data/scalars.json'))[-1]
    rows = [json.loads(line) for line in latest.read_text().splitlines()]
    return {row['iter']: row['loss'] for row in rows if 'loss' in row}


def _meta(path: str) -> dict:
    allow_runner_checkpoints()
    return torch.load(path, weights_only=True)['meta']


@pytest.fixture(scope='module')
def reference(config: Path, tmp_path_factory) -> dict[int, float]:
    work_dir = tmp_path_factory.mktemp('reference')
    code, _, out = _train(['tools/train.py', str(config), '--work-dir', str(work_dir)])
    assert code == 0, ''.join(out[-40:])
    losses = _losses(work_dir)
    assert sorted(losses) == list(range(1, EPOCHS * ITERS_PER_EPOCH + 1))
    return losses


_RECORD: list[dict] = []


@pytest.fixture(scope='module', autouse=True)
def _print_record() -> Iterator[None]:
    """After the module: the experiment record for the closing note (``pytest -s``)."""
    yield
    if not _RECORD:
        return
    print('\n| scenario | killed | resumed from | iterations compared | max abs loss diff |')
    print('|---|---|---|---|---|')
    for row in _RECORD:
        print(f"| {row['scenario']} | {row['killed']} | {row['resumed']} | "
              f"{min(row['got'])}-{max(row['got'])} | {row['diff']:.3g} |")
    print('\n| iteration | reference | ' + ' | '.join(r['scenario'] for r in _RECORD) + ' |')
    print('|---' * (len(_RECORD) + 2) + '|')
    for i in sorted(_RECORD[0]['ref']):
        cells = [f"{r['got'][i]:.7f}" if i in r['got'] else '' for r in _RECORD]
        print(f"| {i} | {_RECORD[0]['ref'][i]:.7f} | " + ' | '.join(cells) + ' |')


def _resume_and_compare(config: Path, work_dir: Path, reference: dict[int, float],
                        scenario: str, killed: str) -> None:
    """``--resume`` in ``work_dir``; every loss after the resumed checkpoint must equal the
    reference exactly."""
    start = latest_complete_checkpoint(str(work_dir))
    meta = _meta(start)
    code, _, out = _train(['tools/train.py', str(config), '--work-dir', str(work_dir),
                           '--resume'])
    assert code == 0, ''.join(out[-40:])
    assert f"resumed epoch: {meta['epoch']}, iter: {meta['iter']}" in ''.join(out)
    got = _losses(work_dir)
    assert sorted(got) == list(range(meta['iter'] + 1, EPOCHS * ITERS_PER_EPOCH + 1))
    diff = max(abs(got[i] - reference[i]) for i in got)
    _RECORD.append(dict(scenario=scenario, killed=killed, resumed=Path(start).name,
                        ref=reference, got=got, diff=diff))
    assert got == {i: reference[i] for i in got}, f'max abs diff {diff}'


def test_sigkill_mid_epoch_resumes_with_the_same_losses(config: Path, reference: dict,
                                                        tmp_path: Path) -> None:
    """Killed once iteration 5 (epoch 2, batch 2 of 3) is logged: resumes from epoch_1.pth."""
    work_dir = tmp_path / 'work'
    code, line, _ = _train(['tools/train.py', str(config), '--work-dir', str(work_dir)],
                           kill_on='Epoch(train) [2][2/3]')
    assert code == -signal.SIGKILL and line
    killed = _losses(work_dir)  # mmengine prints the log line before it writes the json
    assert sorted(killed) in (list(range(1, 5)), list(range(1, 6)))
    assert killed == {i: reference[i] for i in killed}  # the same run until it was killed
    assert latest_complete_checkpoint(str(work_dir)) == str(work_dir / 'epoch_1.pth')
    _resume_and_compare(config, work_dir, reference, 'SIGKILL mid-epoch',
                        'epoch 2, after iteration 5')


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_one(
        config: Path, reference: dict, tmp_path: Path) -> None:
    """Killed half-way through writing epoch_3.pth: epoch_2.pth (epoch_1.pth is deleted
    first by ``max_keep_ckpts=2``, as mmengine does) stays complete and is resumed from;
    the half-written temporary file is left behind and ignored."""
    work_dir = tmp_path / 'work'
    code, _, out = _train(['tests/kill_during_save.py', 'epoch_3.pth', 'tools/train.py',
                           str(config), '--work-dir', str(work_dir)])
    assert code == -signal.SIGKILL, ''.join(out[-40:])
    said = [line for line in out if line.startswith('kill_during_save:')]
    assert len(said) == 1
    partial = [p for p in work_dir.iterdir() if p.name.startswith('epoch_3.pth.tmp-')]
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    assert not is_complete_checkpoint(str(partial[0]))
    complete = sorted(p.name for p in work_dir.glob('*.pth') if is_complete_checkpoint(str(p)))
    assert complete == ['epoch_2.pth'] and not (work_dir / 'epoch_3.pth').exists()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'epoch_2.pth')
    assert _meta(str(work_dir / 'epoch_2.pth'))['iter'] == 2 * ITERS_PER_EPOCH
    nbytes = re.search(r'after (\d+) of (\d+) bytes', said[0]).groups()
    _resume_and_compare(config, work_dir, reference, 'SIGKILL while writing a checkpoint',
                        f'end of epoch 3, writing epoch_3.pth ({nbytes[0]} of {nbytes[1]} B)')
    assert partial[0].exists()  # not picked, not removed: another process may own it
