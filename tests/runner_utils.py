"""A minimal mmengine Runner (linear model, random data) that saves real checkpoints fast.

Its training draws from every generator ``RandomStateHook`` restores, as a detector's does:
dropout (torch, like drop-path), noise from numpy's global generator (like ``RandomFlip``) and
a scale from Python's ``random``.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset


class _Linear(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.dropout = nn.Dropout(0.5)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, mode: str = 'tensor'):
        """inputs (B, 4), targets (B, 1); 'loss' mode returns the MSE."""
        out = self.linear(self.dropout(inputs))
        if mode == 'loss':
            return {'loss': ((out - targets) ** 2).mean()}
        return out


class _Random(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        noise = torch.from_numpy(np.random.normal(0, 0.1, 4).astype(np.float32))
        inputs = torch.randn(4, generator=g) * random.uniform(0.9, 1.1) + noise
        return {'inputs': inputs, 'targets': torch.randn(1, generator=g)}


def tiny_runner(work_dir: str, max_iters: int = 2, diff_rank_seed: bool = False,
                **kwargs) -> Runner:
    """An iteration-based Runner saving ``iter_N.pth`` every iteration into ``work_dir``;
    the same weights, data order and losses in every process (and, with ``diff_rank_seed``,
    other random draws on each rank)."""
    torch.manual_seed(0)  # the model is built before the Runner seeds anything
    return Runner(
        model=_Linear(), work_dir=work_dir,
        train_dataloader=dict(dataset=_Random(), sampler=dict(type='InfiniteSampler'),
                              collate_fn=dict(type='default_collate'), batch_size=2,
                              num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0, diff_rank_seed=diff_rank_seed), default_scope='mmengine',
        **kwargs)


def _main() -> None:
    """``python tests/runner_utils.py WORK_DIR MAX_ITERS [--resume] [--sleep S]
    [--no-rng-hook] [--launcher pytorch]``: train the tiny runner through the tools'
    checkpoint handling (``swin_backbone.engine``: atomic saves, the allow-list, and
    ``RandomStateHook``) and print
    one ``loss <iter> <value>`` line per iteration, ``rank<r> loss <iter> <value>`` under
    torchrun (gloo, each rank with its own seed)."""
    import argparse
    import sys
    import time

    import torch.distributed as dist
    from mmengine.hooks import Hook

    import swin_backbone.engine  # noqa: F401  (installs what tools/train.py installs)
    from swin_backbone.checkpoint.runner import latest_complete_checkpoint
    from swin_backbone.engine.hooks import RandomStateHook

    parser = argparse.ArgumentParser()
    parser.add_argument('work_dir')
    parser.add_argument('max_iters', type=int)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--sleep', type=float, default=0.0)
    parser.add_argument('--no-rng-hook', action='store_true',
                        help='without RandomStateHook (plain mmengine resume)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    args = parser.parse_args()
    extra = {}
    prefix = ''
    if args.launcher == 'pytorch':
        dist.init_process_group('gloo')
        extra = dict(launcher='pytorch', diff_rank_seed=True, cfg=dict(model_wrapper_cfg=dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)))
        prefix = f'rank{dist.get_rank()} '

    class _Report(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            # one write per line: the ranks of a torchrun share stdout
            sys.stdout.write(f'{prefix}loss {runner.iter + 1} {outputs["loss"].item()!r}\n')
            sys.stdout.flush()
            time.sleep(args.sleep)

    hooks = [_Report()] if args.no_rng_hook else [_Report(), RandomStateHook()]
    resume_from = latest_complete_checkpoint(args.work_dir) if args.resume else None
    runner = tiny_runner(args.work_dir, args.max_iters, custom_hooks=hooks,
                         resume=resume_from is not None, load_from=resume_from,
                         log_level='WARNING', **extra)
    runner.train()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    import os.path as osp
    import sys
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    _main()
