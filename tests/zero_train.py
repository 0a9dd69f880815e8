"""``tools/train.py`` under torchrun, reporting what the ZeRO test compares.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/zero_train.py CONFIG
[tools/train.py arguments]``. Trains exactly as ``tools/train.py --launcher pytorch`` does and
prints, per rank, one ``rank<r> loss <iter> <value>`` line per iteration (the loss as a Python
float, every digit) and at the end ``rank<r> optimizer_state_bytes <n>``: the bytes of the
optimizer state tensors this rank holds (its shard under ZeRO, everything under DDP).
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'tools')]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from train import build_runner, parse_args  # noqa: E402

from swin_backbone.engine.launch import close_distributed  # noqa: E402
from swin_backbone.engine.zero import ZeroRedundancyOptimizer  # noqa: E402


def _say(line: str) -> None:
    """One write per line: the ranks of a torchrun share stdout (``print`` writes the text and
    the newline separately, and another rank's log line can land between them)."""
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


class _ReportLoss(Hook):
    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        loss = sum(v.item() for k, v in outputs.items() if 'loss' in k)
        _say(f'rank{dist.get_rank()} loss {runner.iter + 1} {loss!r}')


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    local = getattr(optimizer, 'optim', optimizer)  # ZeRO keeps this rank's shard in .optim
    return sum(t.numel() * t.element_size() for state in local.state.values()
               for t in state.values() if torch.is_tensor(t) and t.dim() > 0)


def main() -> None:
    runner = build_runner(parse_args([*sys.argv[1:], '--launcher', 'pytorch']))
    runner.register_hook(_ReportLoss())
    runner.train()
    optimizer = runner.optim_wrapper.optimizer
    _say(f'rank{dist.get_rank()} optimizer_state_bytes {_state_bytes(optimizer)}')
    if isinstance(optimizer, ZeroRedundancyOptimizer):  # a save without consolidating first
        optimizer._consolidated = False
        try:
            optimizer.state_dict()
        except RuntimeError as exc:
            _say(f'rank{dist.get_rank()} refused: {exc}')
    close_distributed()


if __name__ == '__main__':
    main()
