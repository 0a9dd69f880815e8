"""Independent implementations to check ours against (tests and tools/analysis_tools only).

timm needs torchvision, and the only torchvision wheels for this torch are CUDA builds
whose op registrations fail to import next to a CPU torch (FACTS.md). tools/install.sh
therefore puts timm and torchvision, without dependencies, in ``.venv/reference``,
transformers in ``.venv/reference-hf`` and mmpretrain in ``.venv/reference-mmpretrain``;
this module adds those folders to ``sys.path`` on demand and stubs torchvision's op
registrations, so the product's own environment never sees any of these packages.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch

REFERENCE_DIR = Path(os.environ.get(
    'SWIN_BACKBONE_REFERENCE', Path(__file__).resolve().parents[1] / '.venv' / 'reference'))
HF_REFERENCE_DIR = REFERENCE_DIR.with_name(REFERENCE_DIR.name + '-hf')
MMPRETRAIN_REFERENCE_DIR = REFERENCE_DIR.with_name(REFERENCE_DIR.name + '-mmpretrain')


def _add_to_path(folder: Path, package: str) -> None:
    if not (folder / package).is_dir():
        raise ImportError(f'{package} reference not found in {folder}; run `make install`')
    if str(folder) not in sys.path:
        sys.path.append(str(folder))


def import_torchvision() -> types.ModuleType:
    """Import torchvision from :data:`REFERENCE_DIR` with its C++ op registrations stubbed
    (the models need none of them)."""
    if 'torchvision' not in sys.modules:
        _add_to_path(REFERENCE_DIR, 'torchvision')
        sys.modules.setdefault('torchvision._meta_registrations',
                               types.ModuleType('torchvision._meta_registrations'))
    import torchvision
    return torchvision


def import_timm() -> types.ModuleType:
    """Import timm from :data:`REFERENCE_DIR`; ImportError with the fix if it is absent."""
    if 'timm' in sys.modules:
        return sys.modules['timm']
    import_torchvision()
    _add_to_path(REFERENCE_DIR, 'timm')
    if (HF_REFERENCE_DIR / 'huggingface_hub').is_dir():  # timm's hub writer, found at import
        _add_to_path(HF_REFERENCE_DIR, 'huggingface_hub')
    import timm
    return timm


def import_transformers() -> types.ModuleType:
    """Import Hugging Face transformers from :data:`HF_REFERENCE_DIR`."""
    if 'transformers' not in sys.modules:
        _add_to_path(HF_REFERENCE_DIR, 'transformers')
    import transformers
    return transformers


def import_mmpretrain() -> types.ModuleType:
    """Import mmpretrain from :data:`MMPRETRAIN_REFERENCE_DIR`.

    mmpretrain imports its multimodal models whenever a ``transformers`` distribution is on
    ``sys.path``, and they fail on transformers 5; the Hugging Face folder is therefore hidden
    while mmpretrain is first imported.
    """
    if 'mmpretrain.models' in sys.modules:
        return sys.modules['mmpretrain']
    import_torchvision()
    _add_to_path(MMPRETRAIN_REFERENCE_DIR, 'mmpretrain')
    hidden = [p for p in sys.path if Path(p) == HF_REFERENCE_DIR]
    for p in hidden:
        sys.path.remove(p)
    try:
        import mmpretrain
        import mmpretrain.models  # noqa: F401
    finally:
        sys.path.extend(hidden)
    return mmpretrain


def timm_swin(version: int, img_size: tuple[int, int], window_size: int | None = None,
              arch: str = 'tiny') -> torch.nn.Module:
    """timm's Swin-T (``swin_tiny_patch4_window7_224``) or SwinV2-T
    (``swinv2_tiny_window8_256``) returning the four stage maps ``(B, H, W, C)`` before any
    output norm, built for ``img_size`` (timm fixes shifts from it)."""
    timm = import_timm()
    name = {1: f'swin_{arch}_patch4_window7_224', 2: f'swinv2_{arch}_window8_256'}[version]
    kwargs = dict(pretrained=False, img_size=img_size, num_classes=0)
    if window_size is not None:
        kwargs['window_size'] = window_size
    return timm.create_model(name, **kwargs).eval()


def timm_stage_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Run a timm Swin stage by stage and return each stage's map as ``(B, C, H, W)``
    (timm applies patch merging at the start of the next stage, so stage outputs are
    taken before it, matching ours before the output norms)."""
    x = model.patch_embed(x)
    outs = []
    for layer in model.layers:
        x = layer(x)
        outs.append(x.permute(0, 3, 1, 2))
    return outs


def _ours_without_output_norms(version: int, checkpoint: str, **kwargs) -> torch.nn.Module:
    from swin_backbone.checkpoint import load_pretrained
    from swin_backbone.models import SwinTransformer, SwinTransformerV2
    model = (SwinTransformerV2 if version == 2 else SwinTransformer)(drop_path_rate=0., **kwargs)
    load_pretrained(model, checkpoint)
    for i in model.out_indices:
        setattr(model, f'norm{i}', torch.nn.Identity())
    return model.eval()


def max_abs_diffs(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> list[float]:
    """Per-stage max absolute difference; shapes must agree."""
    assert [tuple(a.shape) for a in ours] == [tuple(b.shape) for b in ref], \
        ([tuple(a.shape) for a in ours], [tuple(b.shape) for b in ref])
    return [float((a.double() - b.double()).abs().max()) for a, b in zip(ours, ref)]


def timm_swin_from_official(version: int, checkpoint: str, img_size: tuple[int, int]
                            ) -> torch.nn.Module:
    """timm's Swin-T / SwinV2-T for ``img_size`` loaded from an official-layout checkpoint
    through timm's own ``checkpoint_filter_fn`` (only the classifier may be left out)."""
    timm = import_timm()
    filter_fn = (timm.models.swin_transformer_v2 if version == 2
                 else timm.models.swin_transformer).checkpoint_filter_fn
    ref = timm_swin(version, img_size)
    result = ref.load_state_dict(filter_fn(torch.load(checkpoint, weights_only=True), ref),
                                 strict=False)
    assert not result.missing_keys, result.missing_keys
    return ref


def mmdet_swin_from_official(checkpoint: str) -> torch.nn.Module:
    """mmdet 3.x's ``SwinTransformer`` (Swin-T, window 7) loaded from an official-layout V1
    checkpoint through its own ``convert_weights=True``; in eval mode."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin
    from mmengine.config import ConfigDict
    ref = MMDetSwin(pretrain_img_size=224, window_size=7, drop_path_rate=0., convert_weights=True,
                    init_cfg=ConfigDict(type='Pretrained', checkpoint=checkpoint))
    ref.init_weights()
    ref.eval()  # mmdet's train() returns None, so no chaining
    return ref


@torch.no_grad()
def parity_with_timm(version: int, checkpoint: str, size: tuple[int, int],
                     dtype: torch.dtype = torch.float32, seed: int = 0) -> list[float]:
    """Load one official-layout checkpoint into ours and into timm; return per-stage
    max |ours - timm| before output norms."""
    ref = timm_swin_from_official(version, checkpoint, size)
    ours = _ours_without_output_norms(version, checkpoint,
                                      window_size=8 if version == 2 else 7)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return max_abs_diffs(ours.to(dtype)(x), timm_stage_outputs(ref.to(dtype), x))


@torch.no_grad()
def parity_with_mmdet(checkpoint: str, size: tuple[int, int], dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> list[float]:
    """Load one official-layout V1 checkpoint into ours and into mmdet 3.x's
    ``SwinTransformer``; per-stage max diffs before output norms."""
    ref = mmdet_swin_from_official(checkpoint)
    for i in ref.out_indices:
        setattr(ref, f'norm{i}', torch.nn.Identity())
    ours = _ours_without_output_norms(1, checkpoint)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return max_abs_diffs(ours.to(dtype)(x), list(ref.to(dtype)(x)))
