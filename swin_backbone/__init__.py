"""Swin Transformer V1 / V2 backbones for dense prediction in OpenMMLab.

``import swin_backbone`` registers the backbones in the ``swin_backbone`` registry scope:
configs name them ``type='swin_backbone.SwinTransformerV2'``. ``RandomStateHook`` (registered
the same way) makes resumed training replay its random draws; ``tools/train.py`` adds it.
"""
__version__ = '0.1.0'

from .hooks import RandomStateHook  # noqa: E402
from .models import SwinTransformer, SwinTransformerV2  # noqa: E402
from .optim import LayerDecayOptimWrapperConstructor  # noqa: E402
from .registry import MODELS  # noqa: E402

__all__ = ['LayerDecayOptimWrapperConstructor', 'MODELS', 'RandomStateHook', 'SwinTransformer',
           'SwinTransformerV2', '__version__']
