"""Time our Swin V1 / V2 backbones against the peers installed here, in one process.

Usage: python tools/analysis_tools/benchmark.py [--out results/benchmark] [--repeats 5] [--quick]
       [--deployment-only | --end-to-end-only | --memory-only]

"ours" is the backbone with the CPU layer (``swin_backbone.cpu.accelerate``); "ours ...
reference" is the same weights on the reference model alone (what runs on a GPU).
Peers: mmdet 3.3's ``SwinTransformer`` (V1) and timm's Swin / SwinV2 (V1, V2), Swin-T size,
same window, identical weights (one generated official-layout checkpoint, loaded by each
through its own converter). Before anything is timed, outputs are compared (fp32, through
the same output norms): a speed-up can never come from computing something else. Runs are
interleaved after warm-up (the warm-up also calibrates the CPU layer's GEMM choice on a cold
cache, ``swin_backbone/cpu/gemm_choice.py``); medians, spreads (min-max) and ratios are
reported. Writes ``benchmark.md`` and ``scaling.png`` to ``--out`` (``deployment.md`` /
``end_to_end.md`` with the ``-only`` flags) and prints the table.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / 'tests')]  # reference.py, synthetic.py: test scaffolding

from reference import (max_abs_diffs, mmdet_swin_from_official,  # noqa: E402
                       timm_stage_outputs, timm_swin_from_official)
from synthetic import save_official  # noqa: E402

from swin_backbone import SwinTransformer, SwinTransformerV2  # noqa: E402
from swin_backbone.checkpoint import load_pretrained  # noqa: E402
from swin_backbone.cpu import accelerate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory  # noqa: E402
from end_to_end import end_to_end_cases  # noqa: E402
from machine import ceiling_share, cpu_model, isa_flags, machine_table  # noqa: E402
from named_backbone import Backbone  # noqa: E402

PARITY_TOL = 1e-4


def build_backbones(ckpt_dir: Path, size: tuple[int, int]) -> dict[int, list[Backbone]]:
    """Ours and the peers for V1 and V2, each loaded from the same official checkpoint."""
    groups: dict[int, list[Backbone]] = {}
    for version, window in ((1, 7), (2, 8)):
        path = ckpt_dir / f'v{version}.pth'
        save_official(path, version, window)
        reference = (SwinTransformerV2 if version == 2 else SwinTransformer)(drop_path_rate=0.)
        load_pretrained(reference, path)
        reference.eval()
        ours = accelerate(copy.deepcopy(reference))
        norms = [getattr(ours, f'norm{i}') for i in range(4)]

        def with_our_norms(maps: list[torch.Tensor], norms: list = norms) -> list[torch.Tensor]:
            return [n(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for n, m in zip(norms, maps)]

        peer = timm_swin_from_official(version, str(path), size)
        group = [Backbone(f'ours V{version}', ours, lambda x, m=ours: list(m(x))),
                 Backbone(f'timm V{version}', peer,
                          lambda x, m=peer, f=with_our_norms: f(timm_stage_outputs(m, x)))]
        if version == 1:
            mm = mmdet_swin_from_official(str(path))
            for i, norm in enumerate(norms):
                getattr(mm, f'norm{i}').load_state_dict(norm.state_dict())
            group.append(Backbone('mmdet V1', mm, lambda x, m=mm: list(m(x))))
        group.append(Backbone(f'ours V{version} reference', reference,
                              lambda x, m=reference: list(m(x))))
        groups[version] = group
    return groups


def cpu_name() -> str:
    """The CPU model, with AMX or not."""
    return f'{cpu_model()} ({"AMX" if isa_flags()["AMX"] else "no AMX"})'


def check_parity(groups: dict[int, list[Backbone]], size: tuple[int, int]) -> list[str]:
    """Rows ``| model | size | max diff per stage |``; raises if a peer disagrees."""
    rows = []
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for group in groups.values():
            ours = group[0].features(x)
            for peer in group[1:]:
                diffs = max_abs_diffs(ours, peer.features(x))
                rows.append(f'| {group[0].name} vs {peer.name} | {size[0]}x{size[1]} | '
                            + ' / '.join(f'{d:.1e}' for d in diffs) + ' |')
                if max(diffs) > PARITY_TOL:
                    raise SystemExit(f'{peer.name} disagrees with {group[0].name} at {size}: '
                                     f'{diffs}; refusing to time different computations')
    return rows


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Warm each up once, then time them round-robin ``repeats`` times."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def inference_fn(backbone: Backbone, x: torch.Tensor, bf16: bool) -> Callable[[], object]:
    def run() -> object:
        ctx = torch.autocast('cpu', dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return backbone.features(x)
    return run


def train_step_fn(backbone: Backbone, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        backbone.module.train()
        loss = sum(o.float().square().mean() for o in backbone.features(x))
        loss.backward()
        backbone.module.zero_grad(set_to_none=True)
        return loss
    return run


def summarise(title: str, times: dict[str, list[float]], ours: str,
              extra: dict[str, str] | None = None,
              work: tuple[float, float] | None = None) -> list[str]:
    """Table rows; ``work`` = (GMACs of the computation, the ceiling in GFLOP/s) adds each
    median's share of the ceiling (every model computes the same multiply-adds)."""
    base = statistics.median(times[ours])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = f'{med / base:.2f}x' if name != ours else '1.00x'
        share = f'{100 * ceiling_share(work[0], med, work[1]):.0f} %' if work else ''
        rows.append(f'| {title} | {name} | {med * 1000:.0f} | {min(ts) * 1000:.0f}-'
                    f'{max(ts) * 1000:.0f} | {ratio} | {share} | {(extra or {}).get(name, "")} |')
    return rows


def forward_gmacs(module: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-adds of one forward (mmengine.analysis, with the attention handle)."""
    from mmengine.analysis import FlopAnalyzer

    from swin_backbone.engine.flops import SDPA_OP, sdpa_flop_jit
    analyzer = FlopAnalyzer(module, (torch.randn(*shape),)).set_op_handle(SDPA_OP, sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.total() / 1e9


def bf16_against_fp32(groups: dict[int, list[Backbone]], size: tuple[int, int],
                      repeats: int) -> list[str]:
    """Rows ``| model | size | fp32 ms | bf16 ms | speed-up | max|bf16 - fp32| / std |``:
    our backbones with and without bf16 autocast, interleaved, on generated weights; then
    each peer's bf16 error against its own fp32 (same weights, not timed again)."""
    rows = []
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))

    def errors(backbone: Backbone) -> str:
        ref, low = inference_fn(backbone, x, False)(), inference_fn(backbone, x, True)()
        return ' / '.join(f'{100 * ((b.float() - a).abs().max() / a.std()).item():.1f} %'
                          for a, b in zip(ref, low))

    for version, group in sorted(groups.items(), reverse=True):
        ours = group[0]
        fns = {'fp32': inference_fn(ours, x, False), 'bf16': inference_fn(ours, x, True)}
        times = {k: statistics.median(v) for k, v in interleaved(fns, repeats).items()}
        rows.append(f'| {ours.name} | {size[0]}x{size[1]} | {times["fp32"] * 1000:.0f} | '
                    f'{times["bf16"] * 1000:.0f} | {times["fp32"] / times["bf16"]:.2f}x | '
                    f'{errors(ours)} |')
    for _, group in sorted(groups.items(), reverse=True):
        for peer in group[1:]:
            rows.append(f'| {peer.name} | {size[0]}x{size[1]} | | | | {errors(peer)} |')
    return rows


def scaling(groups: dict[int, list[Backbone]], sizes: list[int], repeats: int,
            out: Path) -> list[str]:
    """Time against pixels for ours, and mmdet's V1 as a reference for what this machine
    does to any model (allocator, caches); fit ``time ~ pixels ** k`` from 512 up; plot.
    All sizes and models are interleaved in every repeat, so drifts hit each point alike."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    models = [groups[1][0], groups[2][0]] + [b for b in groups[1] if b.name == 'mmdet V1']
    inputs = {s: torch.randn(1, 3, s, s) for s in sizes}
    fns = {(b.name, s): inference_fn(b, inputs[s], False) for b in models for s in sizes}
    times = interleaved(fns, repeats)
    rows, fig = [], plt.figure(figsize=(6, 4))
    for backbone in models:
        medians = [statistics.median(times[backbone.name, s]) for s in sizes]
        pixels = np.array(sizes, dtype=float)**2
        fit = pixels >= 512**2
        k = np.polyfit(np.log(pixels[fit]), np.log(medians)[fit], 1)[0]
        rows.append(f'| {backbone.name} | ' + ' / '.join(f'{s}: {m:.2f}s' for s, m in
                                                         zip(sizes, medians)) + f' | {k:.3f} |')
        plt.loglog(pixels, medians, 'o-', label=f'{backbone.name} (exponent {k:.2f}, 512-1536)')
    plt.xlabel('pixels per image')
    plt.ylabel('forward time, s (fp32, batch 1)')
    plt.legend()
    plt.grid(True, which='both', alpha=.3)
    fig.tight_layout()
    fig.savefig(out / 'scaling.png', dpi=120)
    return rows


def flops_and_params(groups: dict[int, list[Backbone]], size: tuple[int, int]) -> list[str]:
    from mmengine.analysis import parameter_count

    rows = []
    for version in (1, 2):
        ours = groups[version][0].module
        rows.append(f'| ours V{version} | {size[0]}x{size[1]} | '
                    f'{forward_gmacs(ours, (1, 3, *size)):.1f} | '
                    f'{parameter_count(ours)[""] / 1e6:.1f} |')
    return rows


def deployment(groups: dict[int, list[Backbone]], size: tuple[int, int], repeats: int,
               tmp: Path) -> list[str]:
    """Rows timing the exported reference model (dynamic batch, H, W) in ONNX Runtime and
    OpenVINO (fp32; bf16 where the CPU plugin offers it) against our and timm's eager fp32,
    each with its outputs' largest difference to our eager reference."""
    from swin_backbone.deploy import (differences_to_eager, export_onnx, onnxruntime_session,
                                      openvino_bf16_available, openvino_model, run_onnxruntime,
                                      run_openvino)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    rows = []
    for version in (2, 1):
        named = {b.name: b for b in groups[version]}
        reference = named[f'ours V{version} reference'].module
        start = time.perf_counter()
        path = export_onnx(reference, tmp / f'v{version}.onnx', x)
        export_s = time.perf_counter() - start
        session = onnxruntime_session(path, threads)
        fns: dict[str, Callable[[], object]] = {
            name: inference_fn(named[name], x, False) for name in (f'ours V{version}',
                                                                   f'timm V{version}')}
        fns['ONNX Runtime fp32'] = lambda s=session: run_onnxruntime(s, x)
        precisions = ['f32'] + (['bf16'] if openvino_bf16_available() else [])
        for precision in precisions:
            compiled = openvino_model(path, precision, threads)
            fns[f'OpenVINO {precision}'] = lambda c=compiled: run_openvino(c, x)
        with torch.no_grad():
            want = reference(x)
        notes = {}
        for name, fn in fns.items():
            got = [np.asarray(t) for t in fn()]
            diff = max(d for d, _ in differences_to_eager(want, got))
            notes[name] = f'max abs diff {diff:.1e}'
        notes[f'ours V{version}'] += f'; export {export_s:.0f} s, {path.stat().st_size >> 20} MiB'
        rows += summarise(f'V{version} deployed {size[0]}x{size[1]}', interleaved(fns, repeats),
                          f'ours V{version}', notes)
    if 'bf16' not in precisions:
        rows.append('| | OpenVINO bf16 | - | - | - | | not offered on this CPU '
                    '(OPTIMIZATION_CAPABILITIES) |')
    return rows


def deployment_section(groups: dict[int, list[Backbone]], repeats: int, tmp: Path) -> list[str]:
    return ['', '## Deployment: the exported file (dynamic batch, H, W) in ONNX Runtime and '
            'OpenVINO, batch 1 (median ms, min-max, time over our eager fp32)', '',
            '| case | model | median ms | spread | vs ours | | note |',
            '|---|---|---|---|---|---|---|', *deployment(groups, (800, 1344), repeats, tmp)]


def end_to_end_section(groups_800: dict[int, list[Backbone]],
                       groups_512: dict[int, list[Backbone]], repeats: int) -> list[str]:
    rows = ['', '## End to end (median ms; mmdet / mmseg Swin-T configs, the same necks and '
            'heads for every backbone; bf16: the backbone under autocast, heads fp32)', '',
            '| case | model | median ms | spread | vs ours | | note |',
            '|---|---|---|---|---|---|---|']
    for title, fns, ours in end_to_end_cases(groups_800, groups_512):
        rows += summarise(title, interleaved(fns, repeats), ours)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='results/benchmark', type=Path)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--quick', action='store_true', help='fewer sizes and repeats')
    only = parser.add_mutually_exclusive_group()
    only.add_argument('--deployment-only', action='store_true',
                        help='the machine, the parity check and the deployment section only')
    only.add_argument('--end-to-end-only', action='store_true',
                        help='the machine, the parity check and the Mask R-CNN / UPerNet '
                             'forwards only')
    only.add_argument('--memory-only', action='store_true',
                        help='peak memory at high resolution, ours and timm, each case in a '
                             'fresh process (memory.py); --quick: training at 1024 only')
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.memory_only:
        memory.report(args.out, args.quick)
        return
    repeats = 2 if args.quick else args.repeats
    lines = [f'Machine: {cpu_name()}, '
             f'{torch.get_num_threads()} threads, torch {torch.__version__}. '
             'Command: `python tools/analysis_tools/benchmark.py'
             f'{" --quick" if args.quick else ""}'
             f'{" --deployment-only" if args.deployment_only else ""}'
             f'{" --end-to-end-only" if args.end_to_end_only else ""}`.', '']
    machine, ceilings = machine_table(repeats=3 if args.quick else 5)
    lines += ['## The machine: GEMM ceilings and a Swin-T\'s real GEMMs at 800x1344', '',
              *machine, '']
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_dir = Path(tmp)
        # timm fixes its windows from img_size and is only faithful at window multiples
        # (it rolls before it pads, timm#2438): parity is checked at 448 (V1) / 512 (V2)
        # and against mmdet at 800x1344; timing uses the same models.
        groups = build_backbones(ckpt_dir, (800, 1344))
        lines += ['## Parity before timing (fp32 max abs diff per stage, same weights)', '',
                  '| pair | input | stages 1 / 2 / 3 / 4 |', '|---|---|---|']
        v1_only = {1: [b for b in groups[1] if b.name != 'timm V1']}
        lines += check_parity(v1_only, (800, 1344))
        if args.deployment_only or args.end_to_end_only:
            if args.deployment_only:
                lines += deployment_section(groups, repeats, ckpt_dir)
            else:
                lines += end_to_end_section(groups, build_backbones(ckpt_dir, (512, 512)),
                                            repeats)
            text = '\n'.join(lines) + '\n'
            name = 'deployment.md' if args.deployment_only else 'end_to_end.md'
            (args.out / name).write_text(text)
            print(text)
            return
        small = build_backbones(ckpt_dir, (448, 448))
        lines += check_parity({1: small[1]}, (448, 448))
        small = build_backbones(ckpt_dir, (512, 512))
        lines += check_parity({2: small[2]}, (512, 512))

        lines += ['', '## Speed (median ms, min-max, time over ours, share of the GEMM ceiling '
                  'of its dtype for the multiply-adds computed)', '',
                  '| case | model | median ms | spread | vs ours | share of ceiling | note |',
                  '|---|---|---|---|---|---|---|']
        for size in ([(800, 1344)] if args.quick else [(512, 512), (800, 1344)]):
            peers = build_backbones(ckpt_dir, size) if size != (800, 1344) else groups
            x = torch.randn(1, 3, *size)
            gmacs = {v: forward_gmacs(peers[v][0].module, (1, 3, *size)) for v in (2, 1)}
            for bf16 in (False, True):
                for version in (2, 1):
                    fns = {b.name: inference_fn(b, x, bf16) for b in peers[version]}
                    title = f'V{version} forward {size[0]}x{size[1]} {"bf16" if bf16 else "fp32"}'
                    work = (gmacs[version], ceilings['bf16' if bf16 else 'fp32'])
                    lines += summarise(title, interleaved(fns, repeats), f'ours V{version}',
                                       work=work)
        train_groups = build_backbones(ckpt_dir, (512, 512))
        x = torch.randn(2, 3, 512, 512)
        for version in (2, 1):
            fns = {b.name: train_step_fn(b, x) for b in train_groups[version]}
            saved = {b.name: f'{memory.saved_activation_bytes(fns[b.name]) / 2**20:.0f} MiB '
                     'saved for backward' for b in train_groups[version]}
            # backward ~ twice the forward's multiply-adds (input and weight gradients)
            work = (3 * forward_gmacs(train_groups[version][0].module, (2, 3, 512, 512)),
                    ceilings['fp32'])
            lines += summarise(f'V{version} train step 2x512x512 fp32',
                               interleaved(fns, repeats), f'ours V{version}', saved, work)
        lines += end_to_end_section(groups, train_groups, repeats)
        lines += ['', '## bf16 autocast against our fp32 (forward, batch 1; error per stage)',
                  '', '| model | input | fp32 ms | bf16 ms | speed-up | max abs diff / fp32 std |',
                  '|---|---|---|---|---|---|']
        lines += bf16_against_fp32(groups, (800, 1344), repeats)

        sizes = [256, 512, 1024, 1536] if args.quick else [256, 512, 768, 1024, 1280, 1536]
        lines += ['', '## Time against image size (fp32, batch 1; exponent of time ~ pixels^k '
                  'fitted from 512 to 1536; mmdet V1 as reference)', '', '| model | medians | k |',
                  '|---|---|---|']
        lines += scaling(groups, sizes, repeats, args.out)
        lines += ['', '## FLOPs and parameters (mmengine.analysis; GFLOPs = multiply-adds)', '',
                  '| model | input | GFLOPs | params (M) |', '|---|---|---|---|']
        lines += flops_and_params(groups, (800, 1344))
        lines += deployment_section(groups, repeats, ckpt_dir)
    text = '\n'.join(lines) + '\n'
    (args.out / 'benchmark.md').write_text(text)
    print(text)
    print(f'wrote {args.out / "benchmark.md"} and {args.out / "scaling.png"}')


if __name__ == '__main__':
    main()
