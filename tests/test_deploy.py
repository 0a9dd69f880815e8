"""ONNX export with dynamic batch, height and width, run in ONNX Runtime and OpenVINO against
eager PyTorch: the backbones (V1, V2), the toy UPerNet's logits and the toy detector's FPN
features, at sizes and batches other than the trace's, including sizes where a stage's shift
switches off and where the last stage is smaller than its window."""
from __future__ import annotations

import copy
import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

from paths import TOY_DETECTION_CONFIG, TOY_SEGMENTATION_CONFIG
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.deploy import (DetectorFeatures, ExportableAdaptiveAvgPool2d,
                                  MissingDeployDependency, SegmentorLogits, differences_to_eager,
                                  export_onnx, onnxruntime_session, openvino_model,
                                  run_onnxruntime, run_openvino)

_MISSING = [m for m in ('onnx', 'onnxscript', 'onnxruntime') if importlib.util.find_spec(m) is None]
needs_exporter = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"deploy extras absent ({', '.join(_MISSING)}): pip install -e '.[deploy]'")

# Window 4, stride 32 at the last stage. 7x9: stage 0 is one window (no shift) while the trace
# shifted it; 20x20: the last stage is 1x1, smaller than its window; 48x300 elongated; 37x53
# odd; batch 2 and 3 against the trace's 2 at another size.
SIZES = [(1, 37, 53), (1, 48, 300), (1, 20, 20), (1, 7, 9), (2, 64, 96), (3, 33, 130)]
ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])


def assert_matches_eager(model: nn.Module, run, sizes=SIZES) -> None:
    """Every output of ``run(x)`` within ``1e-4 * max(1, max |eager|)`` of ``model(x)``."""
    generator = torch.Generator().manual_seed(1)
    for batch, h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=generator)
        with torch.no_grad():
            eager = model(x)
        for i, (diff, scale) in enumerate(differences_to_eager(eager, run(x))):  # shapes too
            assert diff <= 1e-4 * max(1., scale), \
                f'{(batch, h, w)} output {i}: max |diff| {diff:.2e}'


def _backbone(version: int) -> nn.Module:
    torch.manual_seed(0)
    cls = SwinTransformerV2 if version == 2 else SwinTransformer
    model = cls(arch=ARCH, window_size=4, drop_path_rate=0.).eval()
    with torch.no_grad():  # V2's zero-initialised post-norms would make every block identity
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


@pytest.fixture(scope='module', params=[1, 2], ids=['v1', 'v2'])
def exported_backbone(request, tmp_path_factory):
    model = _backbone(request.param)
    path = tmp_path_factory.mktemp('onnx') / f'swin_v{request.param}.onnx'
    export_onnx(model, path, torch.randn(1, 3, 64, 64))
    return model, path


@needs_exporter
def test_backbone_file_gives_eager_outputs_at_other_sizes(exported_backbone) -> None:
    model, path = exported_backbone
    session = onnxruntime_session(path)
    assert_matches_eager(model, lambda x: run_onnxruntime(session, x))


@needs_exporter
@pytest.mark.skipif(importlib.util.find_spec('openvino') is None, reason='openvino absent')
def test_backbone_file_runs_in_openvino(exported_backbone) -> None:
    model, path = exported_backbone
    compiled = openvino_model(path)
    assert_matches_eager(model, lambda x: run_openvino(compiled, x), SIZES[:4])


@needs_exporter
def test_export_is_deterministic_and_leaves_the_model_alone(exported_backbone, tmp_path) -> None:
    from swin_backbone.cpu import accelerate, is_accelerated
    model, path = exported_backbone
    accelerated = accelerate(copy.deepcopy(model))
    again = export_onnx(accelerated, tmp_path / 'again.onnx', torch.randn(1, 3, 64, 64))
    assert again.read_bytes() == path.read_bytes()  # and the CPU layer was not exported
    assert is_accelerated(accelerated)


def test_existing_file_is_not_overwritten(tmp_path) -> None:
    path = tmp_path / 'model.onnx'
    path.write_bytes(b'user data')
    with pytest.raises(FileExistsError, match='overwrite'):
        export_onnx(_backbone(2), path, torch.randn(1, 3, 32, 32))
    assert path.read_bytes() == b'user data'


def test_missing_runtime_names_the_package_and_the_fix(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import raises ImportError
    with pytest.raises(MissingDeployDependency, match=r"onnxruntime.*\[deploy\]"):
        onnxruntime_session(tmp_path / 'model.onnx')
    monkeypatch.setitem(sys.modules, 'onnxscript', None)
    with pytest.raises(MissingDeployDependency, match=r"'onnx(script)?'.*\[deploy\]"):
        export_onnx(_backbone(2), tmp_path / 'model.onnx', torch.randn(1, 3, 32, 32))
    assert not (tmp_path / 'model.onnx').exists()


@pytest.mark.parametrize('size', [(1, 1), (2, 5), (5, 2), (6, 6), (7, 13), (25, 42), (64, 3)])
@pytest.mark.parametrize('bins', [1, 2, 3, 6])
def test_exportable_adaptive_pool_is_torch_adaptive_pool(size, bins) -> None:
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    want = nn.AdaptiveAvgPool2d(bins)(x)
    torch.testing.assert_close(ExportableAdaptiveAvgPool2d(bins)(x), want, rtol=1e-12, atol=1e-12)


def _build(config, scope: str) -> nn.Module:
    from mmengine import Config
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    torch.manual_seed(0)
    model = registry.build(Config.fromfile(config).model)
    model.init_weights()
    return model.eval()


@needs_exporter
def test_toy_upernet_logits_match_eager(tmp_path) -> None:
    segmentor = SegmentorLogits(_build(TOY_SEGMENTATION_CONFIG, 'mmseg'))
    assert any(type(m) is nn.AdaptiveAvgPool2d for m in segmentor.modules())  # PPM's 1, 2, 3, 6
    path = export_onnx(segmentor, tmp_path / 'upernet.onnx', torch.randn(1, 3, 64, 64),
                       output_names=['logits'])
    session = onnxruntime_session(path)
    assert_matches_eager(segmentor, lambda x: run_onnxruntime(session, x))


@needs_exporter
def test_toy_detector_fpn_features_match_eager(tmp_path) -> None:
    features = DetectorFeatures(_build(TOY_DETECTION_CONFIG, 'mmdet'))
    path = export_onnx(features, tmp_path / 'fpn.onnx', torch.randn(1, 3, 64, 64))
    session = onnxruntime_session(path)
    assert_matches_eager(features, lambda x: run_onnxruntime(session, x), SIZES[:3] + SIZES[4:5])


@needs_exporter
@pytest.mark.slow
def test_export_and_run_tools_on_an_image(tmp_path) -> None:
    """tools/deployment: export the toy detector's backbone at a fixed size, then run the file
    on an image through the model's data preprocessor in both runtimes."""
    import re
    import subprocess

    import cv2
    from paths import REPO
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8))
    out = tmp_path / 'backbone.onnx'

    def tool(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    export = tool('tools/deployment/export_onnx.py', str(TOY_DETECTION_CONFIG), '--out', str(out),
                  '--shape', '96', '128')
    assert 'fixed 1x3x96x128' in export and out.exists()
    assert 'exists' in subprocess.run(
        [sys.executable, 'tools/deployment/export_onnx.py', str(TOY_DETECTION_CONFIG), '--out',
         str(out)], cwd=REPO, capture_output=True, text=True).stderr
    for runtime in ('onnxruntime', 'openvino'):
        printed = tool('tools/deployment/run_onnx.py', str(out), str(TOY_DETECTION_CONFIG),
                       '--image', str(image), '--runtime', runtime)
        relative = [float(r) for r in re.findall(r'relative ([0-9.e+-]+)', printed)]
        assert len(relative) == 4 and max(relative) < 1e-4, printed
