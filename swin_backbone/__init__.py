"""Swin Transformer V1 / V2 backbones for dense prediction in OpenMMLab.

``import swin_backbone`` registers the backbones in the ``swin_backbone`` registry scope
(configs name them ``type='swin_backbone.SwinTransformerV2'``) and changes no other state.
Runner-level pieces (``RandomStateHook``, ``LayerDecayOptimWrapperConstructor``, safe Runner
checkpoints) are in :mod:`swin_backbone.engine`; configs that name them import it through the
registry, and ``custom_imports=dict(imports=['swin_backbone', 'swin_backbone.engine'])`` turns
it on for any mmengine tool.
"""
__version__ = '0.1.0'

from .models import SwinTransformer, SwinTransformerV2  # noqa: E402
from .registry import MODELS  # noqa: E402

__all__ = ['MODELS', 'SwinTransformer', 'SwinTransformerV2', '__version__']
