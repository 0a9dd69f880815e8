"""What the benchmark's machine can do: CPU model, ISA flags and GEMM ceilings.

Ratios to the peers depend on the CPU's GEMM library (MKL is slow on the AMD EPYC, fast on
the Intel Xeon), so every backbone time is also reported as a share of this machine's own
ceiling: the best of several 4096x4096 matmuls on the benchmark's threads, in fp32 and bf16.
Beside it, the GEMMs a Swin-T backbone really runs at 800x1344 (``F.linear`` on its layer
shapes), which are tall and thin and fall short of the square ceiling.

Usage: ``python tools/analysis_tools/machine.py`` prints the table alone (about a minute).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from swin_backbone.cpu.gemm_choice import cpu_model  # noqa: E402  (the name its cache file uses)

#: /proc/cpuinfo flags that decide the GEMM kernels, and how the table names them.
ISA_FLAGS = {'avx2': 'AVX2', 'avx512f': 'AVX-512', 'avx512_bf16': 'AVX512_BF16',
             'amx_bf16': 'AMX-BF16', 'amx_tile': 'AMX'}


def isa_flags() -> dict[str, bool]:
    """Which of :data:`ISA_FLAGS` the CPU reports, by display name."""
    try:
        flags = set(next(line for line in Path('/proc/cpuinfo').read_text().splitlines()
                         if line.startswith('flags')).split(':', 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    return {name: flag in flags for flag, name in ISA_FLAGS.items()}


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s (2 m k n per product) of ``F.linear((m, k), (n, k))`` over ``repeats``
    runs after one warm-up, on the current thread count. bf16 runs on bf16 operands, as
    autocast hands them to oneDNN."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(n, k, generator=generator).to(dtype)
    best = float('inf')
    with torch.no_grad():
        F.linear(a, b)
        for _ in range(repeats):
            start = time.perf_counter()
            F.linear(a, b)
            best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def gemm_ceilings(repeats: int = 5) -> dict[str, float]:
    """``{'fp32': GFLOP/s, 'bf16': GFLOP/s}`` of 4096x4096x4096 products."""
    return {name: matmul_gflops(4096, 4096, 4096, dtype, repeats)
            for name, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16))}


def swin_t_layer_shapes(size: tuple[int, int] = (800, 1344)) -> list[tuple[str, int, int, int]]:
    """``(layer, tokens, in, out)`` of a Swin-T's qkv, fc1 and fc2 per stage on a ``size``
    image, batch 1: qkv sees the map padded to window-7 multiples, the MLP the map itself."""
    shapes = []
    for stage, (stride, dim) in enumerate(zip((4, 8, 16, 32), (96, 192, 384, 768))):
        h, w = (-(-s // stride) for s in size)
        padded = (-(-h // 7) * 7) * (-(-w // 7) * 7)
        shapes += [(f'stage {stage + 1} qkv', padded, dim, 3 * dim),
                   (f'stage {stage + 1} fc1', h * w, dim, 4 * dim),
                   (f'stage {stage + 1} fc2', h * w, 4 * dim, dim)]
    return shapes


def machine_table(repeats: int = 5) -> tuple[list[str], dict[str, float]]:
    """Markdown lines describing the machine, and its ceilings (GFLOP/s by dtype)."""
    ceilings = gemm_ceilings(repeats)
    flags = ', '.join(f'{name} {"yes" if on else "no"}' for name, on in isa_flags().items())
    lines = [f'CPU: {cpu_model()}; {flags}; {torch.get_num_threads()} threads, '
             f'torch {torch.__version__}.', '',
             '| GEMM (tokens x in -> out) | fp32 GFLOP/s | share of fp32 ceiling | '
             'bf16 GFLOP/s | share of bf16 ceiling |', '|---|---|---|---|---|',
             f'| 4096 x 4096 -> 4096 (the ceiling) | {ceilings["fp32"]:.0f} | 100 % | '
             f'{ceilings["bf16"]:.0f} | 100 % |']
    for name, m, k, n in swin_t_layer_shapes():
        fp32 = matmul_gflops(m, k, n, torch.float32, repeats)
        bf16 = matmul_gflops(m, k, n, torch.bfloat16, repeats)
        lines.append(f'| {name}: {m} x {k} -> {n} | {fp32:.0f} | '
                     f'{100 * fp32 / ceilings["fp32"]:.0f} % | {bf16:.0f} | '
                     f'{100 * bf16 / ceilings["bf16"]:.0f} % |')
    lines += ['', f'bf16 / fp32 ceiling ratio: {ceilings["bf16"] / ceilings["fp32"]:.2f}.']
    return lines, ceilings


def ceiling_share(gmacs: float, seconds: float, ceiling_gflops: float) -> float:
    """The share of ``ceiling_gflops`` a run of ``gmacs`` multiply-adds in ``seconds`` uses."""
    return 2 * gmacs / seconds / ceiling_gflops


if __name__ == '__main__':
    print('\n'.join(machine_table()[0]))
