"""Export a model holding a Swin backbone to ONNX with dynamic batch, height and width.

The path is torch's current exporter: ``torch.export`` captures the reference model (the
CPU layer is undone first: its oneDNN ops do not export) with batch, H and W symbolic, and
``torch.onnx.export(..., dynamo=True)`` translates that program. The backbone decides
padding and shifts with integer arithmetic on those symbolic sizes
(:func:`swin_backbone.models.window.window_grid`), so the graph computes them for every
input instead of freezing the example's. Two export settings make the capture hold for
every size, including 1:

* the trace input has batch 2 and a size at which every stage has several windows in both
  directions; sizes that are 0 or 1 at the example are specialised by ``torch.export``;
* ``backed_size_oblivious``: checks in PyTorch's own shape logic of the form "is this size
  1?" (contiguity, broadcasting) are answered for the general case instead of being turned
  into guards on the input size.
"""
from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..cpu import restore_reference
from ..models.swin import SwinTransformer
from .errors import require
from .pooling import replace_adaptive_avg_pools

__all__ = ['DEFAULT_OPSET', 'export_onnx', 'prepare_for_export', 'tracing_input']

DEFAULT_OPSET = 18


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with the reference modules (no CPU layer) and
    exportable adaptive pools; ``model`` itself is not changed."""
    model = copy.deepcopy(model).eval()
    restore_reference(model)
    replace_adaptive_avg_pools(model)
    return model


def tracing_input(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """The input ``torch.export`` traces with for a dynamic export: the example's channels,
    dtype and device; batch 2; a square size at which the last stage of every Swin backbone
    inside ``model`` holds more than two windows per side (so no window count is 1), plus an
    odd remainder so that every stage pads."""
    backbones = [m for m in model.modules() if isinstance(m, SwinTransformer)]
    side = max(example.shape[2], example.shape[3])
    for backbone in backbones:
        stride = backbone.patch_embed.patch_size * 2 ** (len(backbone.stages) - 1)
        window = max(stage.window_size for stage in backbone.stages)
        side = max(side, stride * (2 * window + 1) + 3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, example.shape[1], side, side), generator=generator)
    return x.to(dtype=example.dtype, device=example.device)


def _check_example(example: torch.Tensor) -> None:
    if not isinstance(example, torch.Tensor):
        raise ValueError(f'example_input must be a (B, C, H, W) tensor, got '
                         f'{type(example).__name__}')
    if example.ndim != 4 or not example.is_floating_point():
        raise ValueError('example_input must be a floating-point (B, C, H, W) tensor, got '
                         f'{example.dtype} of shape {tuple(example.shape)}')


def _capture(model: nn.Module, x: torch.Tensor, dynamic: bool) -> torch.export.ExportedProgram:
    if not dynamic:
        return torch.export.export(model, (x,), strict=False)
    try:
        from torch.fx.experimental import _config as shape_config
        shape_config.backed_size_oblivious  # noqa: B018
    except (ImportError, AttributeError) as error:
        raise RuntimeError('a dynamic-size export needs a torch.export with the '
                           'backed_size_oblivious setting (tested: torch 2.13; torch 2.1 lacks '
                           f'it); this is torch {torch.__version__}') from error
    dim = torch.export.Dim.DYNAMIC(min=1)
    with shape_config.patch(backed_size_oblivious=True):
        return torch.export.export(model, (x,), dynamic_shapes=({0: dim, 2: dim, 3: dim},),
                                   strict=False)


def _drop_stack_traces(model) -> None:
    """Remove the exporter's per-node Python stack traces from an ``onnx_ir.Model``: they
    name generated FX modules by a process-wide counter (``<eval_with_key>.263``), which
    would make two exports of the same model differ."""
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            node.metadata_props.pop('pkg.torch.onnx.stack_trace', None)


def export_onnx(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, *,
                dynamic: bool = True, output_names: Sequence[str] | None = None,
                opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Export ``model(x)`` (a tensor or a tuple of tensors) to an ONNX file.

    Args:
        model: a backbone, or a wrapper of :mod:`.wrappers`; copied, never changed.
        path: the ``.onnx`` file to write (weights inside it, one file).
        example_input: ``(B, C, H, W)``. With ``dynamic`` only its channels, dtype and device
            count (the trace uses :func:`tracing_input`); without, the file accepts exactly
            its shape.
        dynamic: batch, height and width are inputs of the graph.
        output_names: names of the graph's outputs; default ``output0, output1, ...``.
        opset: ONNX opset of the default domain.
        overwrite: replace an existing ``path``; without it an existing file is an error.

    Returns:
        ``path``. The file is written to a temporary name and renamed into place.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        MissingDeployDependency: ``onnx`` or ``onnxscript`` is not installed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f'{path} exists; pass overwrite=True (--overwrite) to replace it')
    require('onnx', 'ONNX export')
    require('onnxscript', 'ONNX export (torch.onnx with dynamo=True)')
    _check_example(example_input)
    model = prepare_for_export(model)
    x = tracing_input(model, example_input) if dynamic else example_input
    with torch.no_grad():
        program = _capture(model, x, dynamic)
        n_outputs = len(program.graph_signature.user_outputs)
        names = list(output_names) if output_names else [f'output{i}' for i in range(n_outputs)]
        if len(names) != n_outputs:
            raise ValueError(f'{len(names)} output_names for a model with {n_outputs} outputs')
        onnx_program = torch.onnx.export(program, (x,), dynamo=True, opset_version=opset,
                                         input_names=['input'], output_names=names,
                                         external_data=False, optimize=True, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        _drop_stack_traces(onnx_program.model)
        onnx_program.save(tmp, external_data=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
