"""Errors of the deployment tools."""
from __future__ import annotations

__all__ = ['MissingDeployDependency', 'require']

_INSTALL = "pip install -e '.[deploy]' (onnx, onnxscript, onnxruntime, openvino)"


class MissingDeployDependency(ImportError):
    """An optional deployment package (exporter or runtime) is not installed."""


def require(module: str, purpose: str):
    """Import ``module`` or raise :class:`MissingDeployDependency` naming it and the fix."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDeployDependency(
            f'{purpose} needs the Python package {module!r}, which is not installed here '
            f'({error}); install the deployment extras: {_INSTALL}') from error
