"""Checkpoints written by the libraries users get Swin weights from, and those libraries'
own stage outputs for the same weights: the references of tests/test_checkpoint_formats.py.

Each :class:`Library` builds that library's model (random weights, scaled so activations
stay O(1) in every stage), saves it the way that library saves, and runs it to the four
stage maps ``(B, C, H, W)``, with the output norms where the library has them. Run this file
to print the parity table: ``.venv/bin/python tests/checkpoint_libraries.py``.
"""
from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.checkpoint import load_pretrained
from reference import (import_mmpretrain, import_timm, import_torchvision,
                                     import_transformers, timm_stage_outputs)

# Every library at one small architecture (layouts do not depend on width or depth): the
# Swin-T structure at a third of its width and with two blocks in stage 2, ~9x cheaper.
ARCH = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
LAST_CHANNELS = ARCH['embed_dims'] * 8


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter of a Swin model a random value that matters: linears scaled by
    fan-in, norms near identity, V2 logit scales near log(10), V1 bias tables O(1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit('.', 1)[-1]
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        if 'logit_scale' in leaf:
            p.copy_(math.log(10) + 0.3 * noise)
        elif 'relative_position_bias_table' in leaf:
            p.copy_(0.5 * noise)
        elif p.ndim == 1 and _is_norm_weight(model, name):
            p.copy_(1 + 0.1 * noise)
        elif p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(noise * (0.2 if p.ndim == 4 else 0.6 / fan_in ** 0.5))
        else:
            p.copy_(0.02 * noise)
    return model


def _is_norm_weight(model: nn.Module, name: str) -> bool:
    module_name, leaf = name.rsplit('.', 1)
    return leaf == 'weight' and isinstance(model.get_submodule(module_name), nn.LayerNorm)


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, C, H, W)``."""
    return x.permute(0, 3, 1, 2)


@dataclass
class Library:
    """One library's model, saved its way.

    Attributes:
        name: for tables and test ids.
        version: 1 or 2.
        size: the input ``(H, W)`` the library is run at (one where it is faithful).
        build: ``seed -> model`` with random weights.
        save: ``(model, folder) -> path`` the library's own way (a file or a folder).
        stages: ``(model, x) -> [4 x (B, C, H, W)]``, the library's stage maps.
        normed: which of the four maps went through an output norm of the library.
        ours: keyword arguments of our backbone for the same architecture.
    """
    name: str
    version: int
    size: tuple[int, int]
    build: Callable[[int], nn.Module]
    save: Callable[[nn.Module, Path], Path]
    stages: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]
    normed: tuple[bool, bool, bool, bool]
    ours: dict

    @property
    def expected_format(self) -> str:
        """The layout :func:`~swin_backbone.checkpoint.detect_format` must find (mmpretrain's
        V1 is mmdet's layout)."""
        library = self.name.split()[0]
        if library == 'mmpretrain':
            return 'mmpretrain' if self.version == 2 else 'mmdet'
        return {'hf': 'huggingface'}.get(library, library)


# ------------------------------------------------------------------ Hugging Face transformers
def _hf_config(version: int, image_size: int | None = None, window: int | None = None,
               **kwargs):
    transformers = import_transformers()
    cls = transformers.Swinv2Config if version == 2 else transformers.SwinConfig
    window = window or (8 if version == 2 else 7)
    return cls(image_size=image_size or 32 * (8 if version == 2 else 7), window_size=window,
               embed_dim=ARCH['embed_dims'], depths=ARCH['depths'], num_heads=ARCH['num_heads'],
               drop_path_rate=0., **kwargs)


def _hf_save(kind: str) -> Callable[[nn.Module, Path], Path]:
    """``save_pretrained``: ``model.safetensors``, or sharded (``max_shard_size``), or
    ``pytorch_model.bin`` as transformers 4 wrote it with ``safe_serialization=False`` (and
    as the Microsoft models on the Hub hold it): transformers 5 writes only safetensors, with
    the same tensor names, so the bin is those tensors through ``torch.save``."""
    def save(model: nn.Module, folder: Path) -> Path:
        if kind == 'sharded':
            model.save_pretrained(folder, max_shard_size='4MB')
            assert (folder / 'model.safetensors.index.json').is_file()
            return folder
        model.save_pretrained(folder)
        if kind == 'bin':
            from safetensors.torch import load_file
            torch.save(load_file(folder / 'model.safetensors'), folder / 'pytorch_model.bin')
            (folder / 'model.safetensors').unlink()
        return folder
    return save


def _hf_encoder_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """A ``Swin(v2)Model`` or classifier: the maps before each merging; the last one through
    the final ``layernorm``, as ``last_hidden_state``."""
    base = getattr(model, 'swinv2', None) or getattr(model, 'swin', None) or model
    out = base(x, output_hidden_states=True)
    maps = list(base.encoder(*base.embeddings(x), output_hidden_states=True,
                             output_hidden_states_before_downsampling=True,
                             return_dict=True).reshaped_hidden_states[1:])
    h, w = maps[-1].shape[-2:]
    maps[-1] = out.last_hidden_state.transpose(1, 2).reshape(x.shape[0], -1, h, w)
    return maps


def _hf_backbone_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    backbone = getattr(model, 'backbone', model)  # UperNetForSemanticSegmentation
    return list(backbone(x).feature_maps)


def _hf_classifier(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        transformers = import_transformers()
        cls = (transformers.Swinv2ForImageClassification if version == 2
               else transformers.SwinForImageClassification)
        return randomize(cls(_hf_config(version, num_labels=10)), seed).eval()
    return build


def _hf_model(version: int, window: int | None = None) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        transformers = import_transformers()
        cls = transformers.Swinv2Model if version == 2 else transformers.SwinModel
        return randomize(cls(_hf_config(version, window=window)), seed).eval()
    return build


# HF's V1 backbone shifts every second block even where a stage is one window
# (``always_partition=True``; the official model and ours do not), so its references run at
# 448x448, where the last stage has 2x2 windows.
HF_V1_BACKBONE_SIZE = 448
HF_STAGES = ['stage1', 'stage2', 'stage3', 'stage4']


def _hf_backbone(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        transformers = import_transformers()
        cls = transformers.Swinv2Backbone if version == 2 else transformers.SwinBackbone
        size = HF_V1_BACKBONE_SIZE if version == 1 else None
        return randomize(cls(_hf_config(version, size, out_features=HF_STAGES)), seed).eval()
    return build


def _hf_upernet(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        transformers = import_transformers()
        size = HF_V1_BACKBONE_SIZE if version == 1 else None
        config = transformers.UperNetConfig(
            backbone_config=_hf_config(version, size, out_features=HF_STAGES),
            num_labels=5, hidden_size=32, auxiliary_in_channels=ARCH['embed_dims'] * 4)
        return randomize(transformers.UperNetForSemanticSegmentation(config), seed).eval()
    return build


# ------------------------------------------------------------------ mmpretrain
def _mmpretrain(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        import_mmpretrain()
        from mmpretrain.models import ImageClassifier
        backbone = dict(type='SwinTransformerV2' if version == 2 else 'SwinTransformer',
                        arch=dict(ARCH, **({'extra_norm_every_n_blocks': 0} if version == 2
                                           else {})),
                        img_size=256 if version == 2 else 224,
                        window_size=8 if version == 2 else 7, out_indices=(0, 1, 2, 3),
                        drop_path_rate=0.)
        model = ImageClassifier(backbone=backbone, neck=dict(type='GlobalAveragePooling'),
                                head=dict(type='LinearClsHead', num_classes=10,
                                          in_channels=LAST_CHANNELS))
        return randomize(model, seed).eval()
    return build


def _mmpretrain_save(model: nn.Module, folder: Path) -> Path:
    """As the model zoo's files: an mmengine checkpoint dict of the whole classifier."""
    from mmengine.runner.checkpoint import save_checkpoint
    path = folder / 'mmpretrain_swin.pth'
    save_checkpoint({'meta': dict(mmpretrain_version='1.2.0'), 'state_dict': model.state_dict()},
                    str(path))
    return path


def _mmpretrain_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return list(model.backbone(x))


# ------------------------------------------------------------------ torchvision
def _torchvision(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        swin = import_torchvision().models.swin_transformer
        v2 = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2)
        # What swin_t / swin_v2_t build, at ARCH.
        model = swin.SwinTransformer(
            patch_size=[4, 4], embed_dim=ARCH['embed_dims'], depths=ARCH['depths'],
            num_heads=ARCH['num_heads'], window_size=[8, 8] if version == 2 else [7, 7],
            stochastic_depth_prob=0., **(v2 if version == 2 else {}))
        return randomize(model, seed).eval()
    return build


def _torch_save(model: nn.Module, folder: Path) -> Path:
    path = folder / 'state_dict.pth'
    torch.save(model.state_dict(), path)
    return path


def _torchvision_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``features`` alternate stages (odd indices) and mergings; the last stage goes through
    the final ``norm``."""
    maps = []
    for index, layer in enumerate(model.features):
        x = layer(x)
        if index % 2 == 1:
            maps.append(x)
    maps[-1] = model.norm(maps[-1])
    return [to_nchw(m) for m in maps]


# ------------------------------------------------------------------ timm hub files
def _timm(version: int) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        name = 'swinv2_tiny_window8_256' if version == 2 else 'swin_tiny_patch4_window7_224'
        model = import_timm().create_model(
            name, pretrained=False, num_classes=10, drop_path_rate=0.,
            embed_dim=ARCH['embed_dims'], depths=ARCH['depths'], num_heads=ARCH['num_heads'])
        return randomize(model, seed).eval()
    return build


def _timm_hub_save(model: nn.Module, folder: Path) -> Path:
    """timm's own hub writer: ``config.json`` (timm's, no ``model_type``) and
    ``model.safetensors``, as ``timm/swinv2_tiny_window8_256.ms_in1k`` holds them."""
    from timm.models._hub import save_for_hf
    save_for_hf(model, folder, safe_serialization=True)
    return folder


def _timm_safetensors_file(model: nn.Module, folder: Path) -> Path:
    return _timm_hub_save(model, folder) / 'model.safetensors'


def _timm_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's stage maps (:func:`timm_stage_outputs`), the last through its final ``norm``."""
    maps = timm_stage_outputs(model, x)
    maps[-1] = to_nchw(model.norm(maps[-1].permute(0, 2, 3, 1)))
    return maps


V1_ARGS, V2_ARGS = dict(arch=ARCH, window_size=7), dict(arch=ARCH, window_size=8)
LAST_NORMED = (False, False, False, True)
ALL_NORMED = (True, True, True, True)
NONE_NORMED = (False, False, False, False)
LIBRARIES = [
    Library('hf Swinv2ForImageClassification safetensors', 2, (256, 256), _hf_classifier(2),
            _hf_save('safetensors'), _hf_encoder_stages, LAST_NORMED, V2_ARGS),
    Library('hf Swinv2ForImageClassification bin', 2, (256, 256), _hf_classifier(2),
            _hf_save('bin'), _hf_encoder_stages, LAST_NORMED, V2_ARGS),
    Library('hf Swinv2Model sharded safetensors', 2, (256, 256), _hf_model(2),
            _hf_save('sharded'), _hf_encoder_stages, LAST_NORMED, V2_ARGS),
    # As microsoft/swinv2-tiny-patch4-window16-256: at 256 its last stage (8x8) runs with the
    # window clipped to 8, as in the official code; ours is told so.
    Library('hf Swinv2Model window 16', 2, (256, 256), _hf_model(2, window=16),
            _hf_save('safetensors'), _hf_encoder_stages, LAST_NORMED,
            dict(arch=ARCH, window_size=[16, 16, 16, 8])),
    Library('hf Swinv2Backbone', 2, (256, 256), _hf_backbone(2), _hf_save('safetensors'),
            _hf_backbone_stages, NONE_NORMED, V2_ARGS),
    Library('hf SwinForImageClassification', 1, (224, 224), _hf_classifier(1),
            _hf_save('safetensors'), _hf_encoder_stages, LAST_NORMED, V1_ARGS),
    Library('hf SwinModel bin', 1, (224, 224), _hf_model(1), _hf_save('bin'),
            _hf_encoder_stages, LAST_NORMED, V1_ARGS),
    Library('hf SwinBackbone', 1, (448, 448), _hf_backbone(1), _hf_save('safetensors'),
            _hf_backbone_stages, ALL_NORMED, V1_ARGS),
    Library('hf UperNetForSemanticSegmentation (Swin)', 1, (448, 448), _hf_upernet(1),
            _hf_save('safetensors'), _hf_backbone_stages, ALL_NORMED, V1_ARGS),
    Library('hf UperNetForSemanticSegmentation (Swinv2)', 2, (256, 256), _hf_upernet(2),
            _hf_save('safetensors'), _hf_backbone_stages, NONE_NORMED, V2_ARGS),
    Library('mmpretrain SwinTransformerV2', 2, (256, 256), _mmpretrain(2), _mmpretrain_save,
            _mmpretrain_stages, ALL_NORMED, V2_ARGS),
    Library('mmpretrain SwinTransformer', 1, (224, 224), _mmpretrain(1), _mmpretrain_save,
            _mmpretrain_stages, ALL_NORMED, V1_ARGS),
    Library('torchvision swin_v2_t', 2, (256, 256), _torchvision(2), _torch_save,
            _torchvision_stages, LAST_NORMED, V2_ARGS),
    Library('torchvision swin_t', 1, (224, 224), _torchvision(1), _torch_save,
            _torchvision_stages, LAST_NORMED, V1_ARGS),
    Library('timm swinv2 hub folder', 2, (256, 256), _timm(2), _timm_hub_save, _timm_stages,
            LAST_NORMED, V2_ARGS),
    Library('timm swin model.safetensors', 1, (224, 224), _timm(1), _timm_safetensors_file,
            _timm_stages, LAST_NORMED, V1_ARGS),
]


def ours_from(library: Library, path: Path, **kwargs) -> tuple[nn.Module, dict]:
    """Our backbone loaded from ``path``, with the output norms the library lacks replaced
    by identities; returns the model and the loading report."""
    cls = SwinTransformerV2 if library.version == 2 else SwinTransformer
    model = cls(drop_path_rate=0., **{**library.ours, **kwargs})
    report = load_pretrained(model, path)
    for i, normed in enumerate(library.normed):
        if not normed:
            setattr(model, f'norm{i}', nn.Identity())
    return model.eval(), report


@torch.no_grad()
def parity(library: Library, reference: nn.Module, path: Path,
           dtype: torch.dtype = torch.float32, size: tuple[int, int] | None = None,
           seed: int = 0) -> list[float]:
    """Load ``library``'s ``reference`` model, saved at ``path``, into ours; return the
    per-stage max ``|ours - reference|`` in ``dtype`` at ``size`` (default the library's)."""
    ours, _ = ours_from(library, path)
    batch = 2 if dtype == torch.float32 else 1  # float64 GEMMs are slow on CPUs
    x = torch.randn(batch, 3, *(size or library.size),
                    generator=torch.Generator().manual_seed(seed)).to(dtype)
    theirs = library.stages(reference.to(dtype), x)
    mine = ours.to(dtype)(x)
    reference.float()
    assert [tuple(a.shape) for a in mine] == [tuple(b.shape) for b in theirs], \
        ([tuple(a.shape) for a in mine], [tuple(b.shape) for b in theirs])
    return [float((a.double() - b.double()).abs().max()) for a, b in zip(mine, theirs)]


def main() -> None:
    print('| library | input | dtype | stage 0 | stage 1 | stage 2 | stage 3 |')
    print('|---|---|---|---|---|---|---|')
    for library in LIBRARIES:
        with tempfile.TemporaryDirectory() as tmp:
            reference = library.build(0)
            path = library.save(reference, Path(tmp))
            for dtype in (torch.float32, torch.float64):
                diffs = parity(library, reference, path, dtype)
                size = 'x'.join(map(str, library.size))
                print(f'| {library.name} | {size} | {str(dtype)[6:]} | '
                      + ' | '.join(f'{d:.1e}' for d in diffs) + ' |', flush=True)


if __name__ == '__main__':
    main()
