"""MMDetection / MMSegmentation ``SwinTransformer`` keyword arguments, translated to ours.

mmdet's and mmseg's Swin configs (``mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``,
``mmseg::swin/...``) spell the architecture as ``embed_dims``, ``depths``, ``num_heads`` and
carry switches ours has no use for. With this translation they build our backbone by
changing only ``type``. Every argument is either honoured or refused by name:

================================  ==========================================================
``embed_dims, depths, num_heads``  our ``arch`` (unspecified ones from Swin-T)
``pretrained`` (a path or URL)     ``init_cfg=dict(type='Pretrained', checkpoint=...)``
``convert_weights``                accepted: ours recognises the checkpoint's layout itself
``pretrain_img_size``              accepted: mmdet uses it only for absolute position
                                   embeddings, which are refused
``strides``                        must be ``(patch_size, 2, 2, 2)``
``qk_scale``                       must be None or ``head_dim ** -0.5``
``patch_norm``                     must be True (ours always normalises the patch embedding)
``use_abs_pos_embed``              must be False
``act_cfg`` / ``norm_cfg``         must be GELU / LN (eps 1e-5)
================================  ==========================================================
"""
from __future__ import annotations

from typing import Any

MMDET_ONLY = ('embed_dims', 'depths', 'num_heads', 'pretrained', 'convert_weights',
              'pretrain_img_size', 'strides', 'qk_scale', 'patch_norm', 'use_abs_pos_embed',
              'act_cfg', 'norm_cfg')
_TINY = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])


def _same_cfg(cfg: Any, kind: str, allowed: tuple[str, ...], **defaults: Any) -> bool:
    if cfg is None:
        return True
    cfg = dict(cfg)
    if cfg.pop('type', kind) not in allowed:
        return False
    return all(cfg.pop(k, v) == v for k, v in defaults.items()) and not cfg


def translate_mmdet_args(cls_name: str, arch: Any, patch_size: int, init_cfg: Any,
                         mmdet_args: dict[str, Any]) -> tuple[Any, Any]:
    """Check mmdet-only arguments and fold them into ``(arch, init_cfg)``.

    Raises:
        TypeError: an argument neither we nor mmdet's ``SwinTransformer`` know.
        ValueError: an mmdet argument asking for something we do not build, by name.
    """
    unknown = sorted(set(mmdet_args) - set(MMDET_ONLY))
    if unknown:
        raise TypeError(f'{cls_name} got unexpected keyword arguments {unknown} (neither ours '
                        f'nor mmdet SwinTransformer\'s)')
    args = dict(mmdet_args)
    spelled = {k: args.pop(k) for k in ('embed_dims', 'depths', 'num_heads') if k in args}
    if spelled:
        if arch != 'tiny':
            raise ValueError(f'{cls_name}: give arch={arch!r} or mmdet\'s {sorted(spelled)}, '
                             'not both')
        arch = {**_TINY, **{k: list(v) if k != 'embed_dims' else v for k, v in spelled.items()}}
    pretrained = args.pop('pretrained', None)
    if pretrained is not None:
        if init_cfg is not None:
            raise ValueError(f'{cls_name}: init_cfg and pretrained cannot both be given')
        if not isinstance(pretrained, str):
            raise TypeError(f'{cls_name}: pretrained must be a path or URL, got '
                            f'{type(pretrained).__name__}')
        init_cfg = dict(type='Pretrained', checkpoint=pretrained)
    args.pop('convert_weights', None)
    args.pop('pretrain_img_size', None)
    refused = []
    strides = args.pop('strides', None)
    if strides is not None and tuple(strides) != (patch_size, 2, 2, 2):
        refused.append(f'strides={tuple(strides)} (ours: (patch_size, 2, 2, 2) = '
                       f'{(patch_size, 2, 2, 2)})')
    qk_scale = args.pop('qk_scale', None)
    if qk_scale is not None and not _is_default_qk_scale(qk_scale, arch):
        refused.append(f'qk_scale={qk_scale} (ours: head_dim ** -0.5)')
    if not args.pop('patch_norm', True):
        refused.append('patch_norm=False (ours always normalises the patch embedding)')
    if args.pop('use_abs_pos_embed', False):
        refused.append('use_abs_pos_embed=True (absolute position embeddings are not built)')
    if not _same_cfg(args.pop('act_cfg', None), 'GELU', ('GELU',)):
        refused.append('act_cfg other than GELU')
    if not _same_cfg(args.pop('norm_cfg', None), 'LN', ('LN', 'LayerNorm'), eps=1e-5,
                     requires_grad=True):
        refused.append('norm_cfg other than LN with eps 1e-5')
    if refused:
        raise ValueError(f'{cls_name} cannot honour: ' + '; '.join(refused))
    return arch, init_cfg


def _is_default_qk_scale(qk_scale: float, arch: Any) -> bool:
    """Whether ``qk_scale`` is ``head_dim ** -0.5`` for every stage of ``arch``."""
    from .swin import _resolve_arch
    embed_dims, _, num_heads = _resolve_arch(arch)
    return all(abs(qk_scale - (embed_dims * 2**i // h) ** -0.5) < 1e-12
               for i, h in enumerate(num_heads))
