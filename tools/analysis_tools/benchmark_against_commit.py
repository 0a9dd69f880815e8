"""Time this tree's backbones against those of another commit, interleaved in one process.

Usage: python tools/analysis_tools/benchmark_against_commit.py COMMIT [--repeats 7] [--reference]

The package of ``COMMIT`` is extracted with ``git archive`` into a temporary folder as
``swin_backbone_at_<commit>`` (its registry scope renamed likewise, so both register), both
models get the same weights, outputs are compared, then forward (fp32, bf16 autocast) and
training-step times are interleaved. Ours runs with the CPU layer
(``swin_backbone.cpu.accelerate``) unless ``--reference``; the old commit runs as it was.
Prints medians and ratios (old over new: > 1 means this tree is faster).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))

from benchmark import cpu_name, inference_fn, interleaved, train_step_fn, Backbone  # noqa: E402
from swin_backbone import SwinTransformer, SwinTransformerV2  # noqa: E402
from swin_backbone.cpu import accelerate  # noqa: E402


def import_commit(commit: str, into: Path) -> object:
    """``swin_backbone`` as of ``commit``, importable as ``swin_backbone_at_<commit>``."""
    name = f'swin_backbone_at_{commit[:7]}'
    archive = subprocess.run(['git', 'archive', commit, 'swin_backbone'], cwd=REPO,
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter='data')
    package = into / name
    (into / 'swin_backbone').rename(package)
    for path in package.rglob('*.py'):
        text = path.read_text()
        text = text.replace("'swin_backbone", f"'{name}")  # scope and registry locations
        text = text.replace('from swin_backbone', f'from {name}')
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('commit')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--reference', action='store_true',
                        help="time this tree's reference model instead of the CPU layer")
    args = parser.parse_args()
    commit = subprocess.run(['git', 'rev-parse', '--short', args.commit], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    print(f'{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; '
          f'this tree ({"reference" if args.reference else "CPU layer"}) against {commit}')
    print('| case | model | median ms | spread | old / new |\n|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as tmp:
        old = import_commit(commit, Path(tmp))
        for version, cls, old_cls in ((2, SwinTransformerV2, old.SwinTransformerV2),
                                      (1, SwinTransformer, old.SwinTransformer)):
            torch.manual_seed(0)
            new = cls(arch='tiny', drop_path_rate=0.)
            for p in new.parameters():  # generic weights, V2's zero post-norms included
                torch.nn.init.normal_(p, 0., 0.02 if p.ndim > 1 else 0.5)
            then = old_cls(arch='tiny', drop_path_rate=0.)
            then.load_state_dict(new.state_dict())
            if not args.reference:
                new = accelerate(copy.deepcopy(new))
            models = {f'V{version} this tree': new.eval(), f'V{version} {commit}': then.eval()}
            x = torch.randn(1, 3, 800, 1344)
            with torch.no_grad():
                outs = [m(x) for m in models.values()]
            diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(*outs))
            print(f'| V{version} outputs | max diff / max | {diff:.1e} | | |')
            cases = {f'V{version} forward 800x1344 fp32': (x, False, False),
                     f'V{version} forward 800x1344 bf16': (x, True, False),
                     f'V{version} train step 2x512x512 fp32': (torch.randn(2, 3, 512, 512),
                                                               False, True)}
            for title, (inp, bf16, train) in cases.items():
                fns = {}
                for name, model in models.items():
                    backbone = Backbone(name, model, lambda t, m=model: list(m(t)))
                    fns[name] = (train_step_fn(backbone, inp) if train
                                 else inference_fn(backbone, inp, bf16))
                times = interleaved(fns, args.repeats)
                medians = {n: statistics.median(t) for n, t in times.items()}
                new_median = medians[f'V{version} this tree']
                for name, ts in times.items():
                    print(f'| {title} | {name} | {medians[name] * 1e3:.0f} | '
                          f'{min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f} | '
                          f'{medians[name] / new_median:.2f}x |', flush=True)
                for model in models.values():
                    model.eval()


if __name__ == '__main__':
    main()
