"""A minimal mmengine Runner (linear model, random data) that saves real checkpoints fast."""
from __future__ import annotations

import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset


class _Linear(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, mode: str = 'tensor'):
        """inputs (B, 4), targets (B, 1); 'loss' mode returns the MSE."""
        out = self.linear(inputs)
        if mode == 'loss':
            return {'loss': ((out - targets) ** 2).mean()}
        return out


class _Random(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {'inputs': torch.randn(4, generator=g), 'targets': torch.randn(1, generator=g)}


def tiny_runner(work_dir: str, max_iters: int = 2, **kwargs) -> Runner:
    """An iteration-based Runner saving ``iter_N.pth`` every iteration into ``work_dir``;
    the same weights, data order and losses in every process."""
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
        randomness=dict(seed=0), default_scope='mmengine', **kwargs)


def _main() -> None:
    """``python tests/runner_utils.py WORK_DIR MAX_ITERS [--resume] [--sleep S]
    [--no-allow-list]``: train the tiny runner through the tools' checkpoint handling and
    print one ``loss <iter> <value>`` line per iteration (for the kill / resume tests)."""
    import argparse
    import copyreg
    import time

    from mmengine.hooks import Hook
    from mmengine.logging import HistoryBuffer

    from swin_backbone import runner_checkpoint as rc

    parser = argparse.ArgumentParser()
    parser.add_argument('work_dir')
    parser.add_argument('max_iters', type=int)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--sleep', type=float, default=0.0)
    parser.add_argument('--no-allow-list', action='store_true',
                        help='only register the HistoryBuffer reducer, as a save-side check')
    args = parser.parse_args()
    if args.no_allow_list:
        copyreg.pickle(HistoryBuffer, rc._reduce_history_buffer)
    else:
        rc.allow_runner_checkpoints()
    rc.enable_atomic_checkpoints()

    class _Report(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            print(f'loss {runner.iter + 1} {outputs["loss"].item():.10f}', flush=True)
            time.sleep(args.sleep)

    resume_from = rc.latest_complete_checkpoint(args.work_dir) if args.resume else None
    runner = tiny_runner(args.work_dir, args.max_iters, custom_hooks=[_Report()],
                         resume=resume_from is not None, load_from=resume_from,
                         log_level='WARNING')
    runner.train()


if __name__ == '__main__':
    import os.path as osp
    import sys
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    _main()
