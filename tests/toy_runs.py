"""Shared pieces of the tests that train the toy detector end to end through subprocesses."""
from __future__ import annotations

import socket
from pathlib import Path

from projects.toy_demo.toy_coco import generate_toy_coco


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def toy_coco_options(root: Path) -> list[str]:
    """Generate 4 train / 2 val toy images under ``root`` and return the ``--cfg-options`` that
    point the toy detection config's dataloaders and evaluators at them."""
    generate_toy_coco(str(root), num_train=4, num_val=2, seed=1)
    val_ann = f'{root}/annotations/instances_val.json'
    return [f'{loader}.dataset.data_root={root}/' for loader in
            ('train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        f'val_evaluator.ann_file={val_ann}', f'test_evaluator.ann_file={val_ann}']
