"""Print the versions of the stack swin_backbone runs on; exit 1 with a fix if it is broken.

Usage: python tools/misc/check_env.py [--quiet]
"""
from __future__ import annotations

import argparse
import importlib
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIX = 'run `make install` (or `bash tools/install.sh`) from the repository root'


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / 'requirements' / 'constraints.txt').read_text().splitlines():
        if '==' in line and not line.startswith('#'):
            name, version = line.split('==')
            pins[name.strip()] = version.strip()
    return pins


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return None


def _device() -> str:
    import torch
    if torch.cuda.is_available():
        return f'CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}'
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'CPU only: {cpu}, {torch.get_num_threads()} threads'


def _mmcv_ops() -> str | None:
    """Return None if mmcv's compiled ops load, else the error."""
    try:
        from mmcv.ops import RoIAlign, nms  # noqa: F401
        return None
    except Exception as exc:  # noqa: BLE001
        return f'{type(exc).__name__}: {exc}'.splitlines()[0]


def check() -> list[tuple[str, str | None, str | None]]:
    """Return rows of (component, found version or description, problem or None)."""
    pins = _pins()
    rows: list[tuple[str, str | None, str | None]] = [
        ('python', platform.python_version(),
         None if sys.version_info >= (3, 9) else 'Python >= 3.9 is required')]
    torch_version = _version('torch')
    rows.append(('torch', torch_version, None if torch_version else f'torch is missing: {FIX}'))
    for module, dist in [('mmcv', 'mmcv'), ('mmengine', 'mmengine'), ('mmdet', 'mmdet'),
                         ('mmseg', 'mmsegmentation'), ('pycocotools', 'pycocotools'),
                         ('safetensors', 'safetensors'), ('swin_backbone', None)]:
        found = _version(module) if module != 'pycocotools' else _pycocotools_version()
        problem = None
        if found is None:
            problem = f'{module} does not import: {FIX}'
        elif dist and dist in pins and found != pins[dist]:
            problem = (f'{module} {found} is not the tested {pins[dist]}: '
                       f'pip install -c requirements/constraints.txt {dist}=={pins[dist]}')
        rows.append((module, found, problem))
    if torch_version and _version('mmcv'):
        ops_error = _mmcv_ops()
        rows.append(('mmcv ops', 'compiled ops load' if ops_error is None else ops_error,
                     None if ops_error is None else
                     f'mmcv was installed without compiled ops (mmcv-lite?): {FIX}'))
    for module, dist in [('onnx', 'onnx'), ('onnxscript', 'onnxscript'),
                         ('onnxruntime', 'onnxruntime'), ('openvino', 'openvino')]:
        found = _dist_version(module, dist)  # optional: the deployment extras
        rows.append((module, found or "not installed (optional: pip install -e '.[deploy]')",
                     None if found is None or found == pins.get(dist, found) else
                     f'{module} {found} is not the tested {pins[dist]}: '
                     f'pip install -c requirements/constraints.txt {dist}=={pins[dist]}'))
    if importlib.util.find_spec('torchvision') is not None:
        rows.append(('torchvision', 'installed', 'torchvision breaks imports with this torch '
                     '(see FACTS.md): pip uninstall -y torchvision'))
    if torch_version:
        rows.append(('device', _device(), None))
    return rows


def _dist_version(module: str, dist: str) -> str | None:
    """The installed distribution's version if ``module`` imports (openvino's
    ``__version__`` carries a build suffix)."""
    try:
        from importlib.metadata import version
        importlib.import_module(module)
        return version(dist)
    except Exception:  # noqa: BLE001
        return None


def _pycocotools_version() -> str | None:
    try:
        from importlib.metadata import version
        importlib.import_module('pycocotools.coco')
        return version('pycocotools')
    except Exception:  # noqa: BLE001
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quiet', action='store_true', help='print only problems')
    args = parser.parse_args()
    rows = check()
    problems = [problem for _, _, problem in rows if problem]
    if not args.quiet or problems:
        for name, found, problem in rows:
            print(f'{name:14s} {found or "-":40s} {"FAIL" if problem else "ok"}')
    for problem in problems:
        print(f'error: {problem}', file=sys.stderr)
    if args.quiet and not problems:
        print('environment ok: ' + ', '.join(f'{n} {f}' for n, f, _ in rows if n != 'device'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
