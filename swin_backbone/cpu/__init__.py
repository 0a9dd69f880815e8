"""Opt-in CPU acceleration of a built backbone.

``swin_backbone.models`` is the reference model: plain ``nn.Linear``, one SDPA call per
window group, nothing kept between forwards, the same code on every device and dtype.
:func:`accelerate` turns the modules of every Swin backbone inside a model into the CPU
subclasses of :mod:`.modules` (oneDNN / MKL linears, recomputing training kernels, cached masks
and chunked inference), in place and with the same parameters. Calls on other devices, under
``torch.compile``, tracing or export still run the reference code, so an accelerated model
can be moved to a GPU or exported unchanged. ``tools/train.py``, ``tools/test.py``,
``tools/analysis_tools/benchmark.py`` and the demos accelerate on machines without CUDA.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.attention import CosineWindowAttention, WindowAttention
from ..models.blocks import Mlp, SwinBlock, SwinBlockV2, SwinStage
from ..models.swin import SwinTransformer
from .linear import OneDnnLinear
from .modules import (CpuCosineWindowAttention, CpuMlp, CpuSwinBlock, CpuSwinBlockV2,
                      CpuSwinStage, CpuWindowAttention)

__all__ = ['accelerate', 'accelerate_without_cuda', 'is_accelerated', 'restore_reference']

# Exact reference classes (subclasses users wrote are left alone) -> their CPU subclasses.
_CPU_CLASSES: dict[type, type] = {
    nn.Linear: OneDnnLinear,
    Mlp: CpuMlp,
    WindowAttention: CpuWindowAttention,
    CosineWindowAttention: CpuCosineWindowAttention,
    SwinBlock: CpuSwinBlock,
    SwinBlockV2: CpuSwinBlockV2,
    SwinStage: CpuSwinStage,
}


def _backbones(model: nn.Module) -> list[SwinTransformer]:
    backbones = [m for m in model.modules() if isinstance(m, SwinTransformer)]
    if not backbones:
        raise ValueError(f'{type(model).__name__} contains no swin_backbone SwinTransformer '
                         'or SwinTransformerV2 to accelerate')
    return backbones


def accelerate(model: nn.Module) -> nn.Module:
    """Switch every Swin backbone inside ``model`` to the CPU kernels, in place.

    Only the backbones' own modules change class (heads, necks and other ``nn.Linear`` stay
    as they are); parameters, buffers and state-dict keys are untouched, so optimisers,
    checkpoints and ``load_state_dict`` work as before. Idempotent.

    Returns:
        ``model``.

    Raises:
        ValueError: ``model`` holds no ``SwinTransformer`` / ``SwinTransformerV2``.
    """
    for backbone in _backbones(model):
        for module in backbone.modules():
            cpu_class = _CPU_CLASSES.get(type(module))
            if cpu_class is not None:
                cpu_class.adopt(module)
    return model


# What adopt() adds to a module; dropped again by restore_reference.
_CPU_STATE = ('_packed', '_mask_cache')


def restore_reference(model: nn.Module) -> nn.Module:
    """Undo :func:`accelerate`, in place: every CPU-layer module inside ``model`` becomes
    its reference class again and loses its caches (what exporters are given). A model that
    was never accelerated is returned unchanged.

    Returns:
        ``model``.
    """
    reference_classes = {cpu: ref for ref, cpu in _CPU_CLASSES.items()}
    for module in model.modules():
        reference = reference_classes.get(type(module))
        if reference is not None:
            module.__class__ = reference
            for name in _CPU_STATE:
                module.__dict__.pop(name, None)
    return model


def is_accelerated(model: nn.Module) -> bool:
    """Whether every Swin backbone inside ``model`` runs on the CPU kernels."""
    cpu_classes = set(_CPU_CLASSES.values())
    return all(any(type(m) in cpu_classes for m in backbone.modules())
               and not any(type(m) in _CPU_CLASSES for m in backbone.modules())
               for backbone in _backbones(model))


def accelerate_without_cuda(model: nn.Module) -> bool:
    """:func:`accelerate` ``model`` if this machine has no CUDA device and ``model`` holds a
    Swin backbone (what the tools do by default); returns whether it did."""
    if torch.cuda.is_available() or not any(isinstance(m, SwinTransformer)
                                            for m in model.modules()):
        return False
    accelerate(model)
    return True
