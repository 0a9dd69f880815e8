"""Deployment: ONNX export with dynamic input sizes and the runtimes that run the files.

Optional: needs ``pip install -e '.[deploy]'``; importing this package does not import the
exporters or runtimes, the functions do, and raise :class:`MissingDeployDependency` with
the fix when one is absent. See ``docs/deployment.md``.
"""
from .errors import MissingDeployDependency
from .onnx_export import export_onnx, prepare_for_export, tracing_input
from .openmmlab import EXPORT_TARGETS, ExportTarget, build_export_target
from .pooling import ExportableAdaptiveAvgPool2d, replace_adaptive_avg_pools
from .runtimes import (differences_to_eager, onnxruntime_session, openvino_bf16_available,
                       openvino_model, run_onnxruntime, run_openvino)
from .wrappers import DetectorFeatures, SegmentorLogits

__all__ = ['EXPORT_TARGETS', 'DetectorFeatures', 'ExportTarget', 'ExportableAdaptiveAvgPool2d',
           'MissingDeployDependency', 'SegmentorLogits', 'build_export_target',
           'differences_to_eager', 'export_onnx',
           'onnxruntime_session', 'openvino_bf16_available', 'openvino_model',
           'prepare_for_export', 'replace_adaptive_avg_pools', 'run_onnxruntime', 'run_openvino',
           'tracing_input']
