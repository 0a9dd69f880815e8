"""Distributed training on CPU with mmengine 0.10's Runner (torchrun + gloo).

mmengine assumes a GPU per process when ``launcher='pytorch'``: ``init_dist`` calls
``torch.cuda.set_device(LOCAL_RANK)`` (an error on a CPU-only torch) and the DDP wrapper
gets ``device_ids=[LOCAL_RANK]`` (which ``DistributedDataParallel`` refuses for a module on
the CPU). :func:`setup_cpu_distributed` starts the gloo process group itself, so the
Runner skips ``init_dist``, and asks for the CPU form of DDP (``device_ids=None``).
With CUDA available it does nothing: GPUs go through mmengine's own path (nccl).
:func:`close_distributed` ends a run that succeeded: a gloo process left for the
interpreter's teardown can abort (``terminate called without an active exception``,
pytorch/pytorch#190489) and fail the launch after training finished.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` (and the process group) for a CPU run under ``launcher='pytorch'``.

    Reads the rendezvous from torchrun's environment (``MASTER_ADDR``, ``MASTER_PORT``,
    ``RANK``, ``WORLD_SIZE``). Keeps ``find_unused_parameters`` from the config (default
    False) and an explicit ``model_wrapper_cfg`` untouched.

    Returns:
        Whether a CPU process group is in use.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
        dist_cfg['backend'] = 'gloo'  # nccl needs GPUs
        dist.init_process_group(**dist_cfg)
    cfg.setdefault('model_wrapper_cfg', dict(
        type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    return True


def close_distributed() -> None:
    """Destroy the default process group (any backend) after a run that succeeded.

    The barrier keeps a rank from tearing its connections down while another is still
    in a collective. Call it only on success: a rank that raised must not wait in a
    barrier its peers may never reach.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
