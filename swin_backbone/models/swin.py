"""Swin Transformer V1 and V2 backbones with multi-scale NCHW outputs for FPN / UPerNet.

V1: Liu et al., "Swin Transformer", ICCV 2021. V2: Liu et al., "Swin Transformer V2",
CVPR 2022 (scaled cosine attention, log-spaced continuous position bias, residual
post-norm). Both pad, so any ``H, W >= 1`` works, and decide window shifts per forward.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn

from ..registry import MODELS
from .blocks import (LayerNorm, PatchEmbed, PatchMerging, PatchMergingV2, SwinBlock, SwinBlockV2,
                     SwinStage)
from .layer_depth import get_layer_id
from .mmdet_args import translate_mmdet_args
from .window import contiguous_copy

ARCH_ZOO: dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]),
    'small': dict(embed_dims=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24]),
    'base': dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
    'large': dict(embed_dims=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48]),
}


def _per_stage(value: int | Sequence[int], num_stages: int, name: str) -> list[int]:
    values = [value] * num_stages if isinstance(value, int) else list(value)
    if len(values) != num_stages:
        raise ValueError(f'{name} must be an int or have one entry per stage ({num_stages}), '
                         f'got {len(values)}: {value!r}')
    return values


def _resolve_arch(arch: str | dict) -> tuple[int, list[int], list[int]]:
    if isinstance(arch, str):
        if arch.lower() not in ARCH_ZOO:
            raise ValueError(f'unknown arch {arch!r}; valid names: {sorted(ARCH_ZOO)} '
                             'or a dict of embed_dims, depths, num_heads')
        arch = ARCH_ZOO[arch.lower()]
    missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
    if missing:
        raise ValueError(f'arch dict lacks {sorted(missing)}; got keys {sorted(arch)}')
    embed_dims, depths, num_heads = arch['embed_dims'], list(arch['depths']), list(arch['num_heads'])
    if len(num_heads) != len(depths):
        raise ValueError(f'arch num_heads has {len(num_heads)} entries but depths has '
                         f'{len(depths)}: one per stage')
    for i, heads in enumerate(num_heads):
        if heads < 1 or (embed_dims * 2**i) % heads:
            raise ValueError(f'arch: stage {i} has {embed_dims * 2**i} channels '
                             f'(embed_dims={embed_dims} * 2**{i}), not divisible by '
                             f'num_heads[{i}]={heads}')
    return embed_dims, depths, num_heads


@MODELS.register_module()
class SwinTransformer(BaseModule):
    """Swin Transformer V1 backbone.

    Args:
        arch: 'tiny', 'small', 'base', 'large', or a dict of ``embed_dims``, ``depths``,
            ``num_heads``.
        patch_size: side of the patch-embedding convolution. Default 4.
        in_channels: input channels. Default 3.
        window_size: window side, an int or one per stage. Default 7 (V1), 8 (V2).
        pretrained_window_size: V2 only: the window of pre-training, an int or one per stage,
            that normalises the log-CPB coordinates; 0 uses the current window.
        mlp_ratio: MLP hidden width over channels. Default 4.
        qkv_bias: learn biases for q, k, v. Default True.
        drop_rate: dropout after projections and in the MLP.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks. Default 0.1.
        out_indices: stages whose maps are returned. Default all four. Stages after
            ``max(out_indices)``, and that stage's patch merging, are not built.
        frozen_stages: -1 trains everything; 0 freezes the patch embedding; ``k >= 1`` also
            stages ``0 .. k-1`` and their output norms. Takes effect at construction.
        norm_eval: keep every LayerNorm in eval mode while training (a no-op for LayerNorm's
            output, kept for OpenMMLab compatibility).
        with_cp: non-reentrant activation checkpointing of every block.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` loads a checkpoint
            file, Hugging Face folder or URL of any layout :mod:`swin_backbone.checkpoint`
            knows (official, timm, mmdet / mmseg, mmpretrain, Hugging Face, torchvision,
            ours; pickles or safetensors); optional keys ``prefix``, ``format`` (overrides
            detection) and ``check_config`` (default True: a Hugging Face folder's
            ``config.json`` must agree with the model).
        mmdet_args: MMDetection's ``SwinTransformer`` arguments (``embed_dims``, ``depths``,
            ``num_heads``, ``pretrained``, ``convert_weights``, ``strides``, ...), so that
            mmdet's and mmseg's Swin configs work by changing only ``type``; each is honoured
            or refused by name (:mod:`swin_backbone.models.mmdet_args`).

    Input ``(B, in_channels, H, W)``, any ``H, W >= 1``. Output: a tuple with, for each
    ``i`` in ``out_indices``, ``(B, embed_dims * 2**i, H_i, W_i)`` where ``H_0 = ceil(H / 4)``
    and ``H_{i+1} = ceil(H_i / 2)``: stage ``i``'s map before its merging, through ``norm{i}``.
    """

    version = 1
    default_window_size = 7
    merging_layer: type[PatchMerging] = PatchMerging

    def __init__(self, arch: str | dict = 'tiny', patch_size: int = 4, in_channels: int = 3,
                 window_size: int | Sequence[int] | None = None,
                 pretrained_window_size: int | Sequence[int] = 0, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, drop_rate: float = 0., attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 init_cfg: dict | list[dict] | None = None, **mmdet_args: Any) -> None:
        if mmdet_args:
            arch, init_cfg = translate_mmdet_args(type(self).__name__, arch, patch_size,
                                                  init_cfg, mmdet_args)
        super().__init__(init_cfg=init_cfg)
        self.embed_dims, self.depths, self.num_heads = _resolve_arch(arch)
        num_stages = len(self.depths)
        self.window_size = _per_stage(
            self.default_window_size if window_size is None else window_size, num_stages,
            'window_size')
        self.pretrained_window_size = _per_stage(pretrained_window_size, num_stages,
                                                 'pretrained_window_size')
        self._check_args(patch_size, in_channels, out_indices, frozen_stages)
        self.in_channels = in_channels
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, patch_size)
        self.drop_after_pos = nn.Dropout(drop_rate)
        self.stages = self._build_stages(mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                                         drop_path_rate, with_cp)
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm(self.embed_dims * 2**i))
        self._init_default_weights()
        self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._convert_foreign_layout)

    def _check_args(self, patch_size: int, in_channels: int, out_indices: Sequence[int],
                    frozen_stages: int) -> None:
        num_stages = len(self.depths)
        if self.version == 1 and any(self.pretrained_window_size):
            raise ValueError('pretrained_window_size is a SwinTransformerV2 argument; '
                             f'got {self.pretrained_window_size} for V1')
        for name, values, low in [('window_size', self.window_size, 1),
                                  ('pretrained_window_size', self.pretrained_window_size, 0)]:
            if any(v < low for v in values):
                raise ValueError(f'{name} must be >= {low}, got {values}')
        if patch_size < 1 or in_channels < 1:
            raise ValueError(f'patch_size and in_channels must be >= 1, got {patch_size}, '
                             f'{in_channels}')
        bad = [i for i in out_indices if not 0 <= i < num_stages]
        if bad or len(set(out_indices)) != len(out_indices) or not out_indices:
            raise ValueError(f'out_indices must be distinct stage indices in [0, {num_stages}), '
                             f'got {tuple(out_indices)}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')

    def _build_stages(self, mlp_ratio: float, qkv_bias: bool, drop_rate: float,
                      attn_drop_rate: float, drop_path_rate: float, with_cp: bool) -> nn.ModuleList:
        """Stages ``0 .. max(out_indices)``; the last one built has no patch merging, so
        every parameter built contributes to an output (DDP needs no unused-parameter
        search)."""
        rates = torch.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        last = max(self.out_indices)
        stages = nn.ModuleList()
        for i in range(last + 1):
            dim = self.embed_dims * 2**i
            first = sum(self.depths[:i])
            blocks = [self._build_block(i, dim, shifted=j % 2 == 1, mlp_ratio=mlp_ratio,
                                        qkv_bias=qkv_bias, drop=drop_rate,
                                        attn_drop=attn_drop_rate, drop_path=rates[first + j])
                      for j in range(self.depths[i])]
            downsample = self.merging_layer(dim) if i < last else None
            stages.append(SwinStage(blocks, self.window_size[i], downsample, with_cp))
        return stages

    def _build_block(self, stage: int, dim: int, **kwargs) -> SwinBlock:
        """One block of ``stage``; ``kwargs`` are :class:`SwinBlock`'s regularisers and
        ``shifted``."""
        return SwinBlock(dim, self.num_heads[stage], self.window_size[stage], **kwargs)

    def _init_default_weights(self) -> None:
        """The official initialisation: truncated normal linears, unit norms, and in V2 the
        block norms zeroed so each residual branch starts as identity (SwinV2 code)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.version == 2:
            for stage in self.stages:
                for block in stage.blocks:
                    for norm in (block.norm1, block.norm2):
                        nn.init.zeros_(norm.weight)
                        nn.init.zeros_(norm.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s pretrained checkpoint through our converter; other init_cfg
        types go to mmengine. Without init_cfg the constructor's initialisation stands."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            from ..checkpoint import load_pretrained
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                            fmt=cfg.get('format'), check_config=cfg.get('check_config', True))
            self._is_init = True
        elif cfg is not None:
            super().init_weights()

    def get_layer_depth(self, param_name: str, prefix: str = 'backbone.') -> tuple[int, int]:
        """mmpretrain's layer-decay protocol: ``(layer_id, num_layers)`` for ``param_name``,
        a parameter name of the whole model with this backbone's under ``prefix``.

        ``num_layers = sum(depths) + 2``; names outside ``prefix`` (neck, heads) get
        ``num_layers - 1`` (:mod:`swin_backbone.models.layer_depth`).

        Raises:
            ValueError: a name under ``prefix`` that is none of this backbone's parameters.
        """
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        return get_layer_id(param_name[len(prefix):], self.depths), num_layers

    def _convert_foreign_layout(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """Before ``load_state_dict``: rename this backbone's part of ``state_dict`` when it
        is in another layout (a whole mmdet / mmseg model-zoo detector loaded by ``load_from``
        or ``tools/test.py``, whose ``backbone.stages.*.attn.w_msa.*`` keys would otherwise
        all be missing), dropping the buffers ours rebuild."""
        from ..checkpoint import CheckpointError, convert, detect_format
        keys = [k for k in state_dict if k.startswith(prefix)]
        part = {k[len(prefix):]: state_dict[k] for k in keys}
        try:
            fmt = detect_format(part) if part else 'swin_backbone'
        except CheckpointError:
            return  # not a Swin backbone's tensors: load_state_dict reports what is missing
        if fmt == 'swin_backbone':
            return
        converted = convert(part, len(self.depths), fmt)
        for key in keys:
            del state_dict[key]
        state_dict.update({prefix + k: v for k, v in converted.state.items()})
        print_log(f'{prefix or type(self).__name__}: renamed {len(part)} tensors of a {fmt}-'
                  f'layout state dict to ours ({len(converted.dropped)} derived buffers or heads '
                  'dropped)', logger='current')

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.patch_embed, self.drop_after_pos]
        for i in range(min(self.frozen_stages, len(self.stages))):
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SwinTransformer':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.eval()
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}')
        if not x.is_floating_point():
            raise TypeError(f'{type(self).__name__} expects a floating-point input, got '
                            f'dtype {x.dtype}')
        if x.ndim != 4:
            raise ValueError(f'{type(self).__name__} expects (B, C, H, W) input with 4 dims, got '
                             f'{x.ndim} dims, shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects {self.in_channels} input channels, '
                             f'got {x.shape[1]} (shape {tuple(x.shape)})')
        if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f'{type(self).__name__} got an empty input, shape {tuple(x.shape)}; '
                             'batch, H and W must be >= 1')

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, C_in, H, W)`` -> tuple of ``(B, embed_dims * 2**i, H_i, W_i)``."""
        self._check_input(x)
        x = self.drop_after_pos(self.patch_embed(x))  # (B, H/4, W/4, C)
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(contiguous_copy(out.permute(0, 3, 1, 2)))  # (B, H, W, C) -> NCHW
        return tuple(outs)


@MODELS.register_module()
class SwinTransformerV2(SwinTransformer):
    """Swin Transformer V2 backbone: :class:`SwinTransformer` with V2 blocks and defaults.

    Scaled cosine attention, log-spaced continuous position bias and residual post-norm;
    window 8 by default. ``pretrained_window_size`` lets a window-8 checkpoint run at
    window 16 or 24 without interpolation. Arguments as in :class:`SwinTransformer`.
    """

    version = 2
    default_window_size = 8
    merging_layer = PatchMergingV2

    def _build_block(self, stage: int, dim: int, **kwargs) -> SwinBlockV2:
        return SwinBlockV2(dim, self.num_heads[stage], self.window_size[stage],
                           pretrained_window_size=self.pretrained_window_size[stage], **kwargs)
