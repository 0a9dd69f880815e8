"""What the installed torch can do on the CPU, for tests whose premise needs it.

The backbone's floor is torch 2.1 (``tests/test_torch_floor.py`` runs the suite's backbone
tests there). Its CPU build lacks float16 kernels (``addmm``, ``conv2d``) and fp16 CPU
autocast, and ``AdamW(fused=True)`` on CPU tensors (torch >= 2.4): tests that exercise those
say so through these flags instead of failing on a missing kernel.
"""
from __future__ import annotations

import torch


def _cpu_float16() -> bool:
    try:
        x = torch.ones(1, 1, 2, 2, dtype=torch.float16)
        torch.nn.functional.conv2d(x, x[:, :, :1, :1])
        with torch.autocast('cpu', dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except RuntimeError:
        return False
    return True


def _cpu_fused_adamw() -> bool:
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except RuntimeError:
        return False
    return True


CPU_FLOAT16 = _cpu_float16()
CPU_FUSED_ADAMW = _cpu_fused_adamw()
