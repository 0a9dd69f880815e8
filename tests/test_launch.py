"""swin_backbone.engine.launch: the gloo process group the CPU tools start and close."""
from __future__ import annotations

import torch.distributed as dist

from swin_backbone.engine.launch import close_distributed
from toy_runs import free_port


def test_close_distributed_destroys_the_group_and_is_a_no_op_without_one() -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{free_port()}',
                            rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        close_distributed()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    close_distributed()  # nothing left to close: must not raise
    assert not dist.is_initialized()
