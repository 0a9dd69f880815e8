"""The ``swin_backbone`` registry scope, children of mmengine's root registries.

A config names our modules with the scope prefix, ``type='swin_backbone.SwinTransformerV2'``:
mmdet and mmseg register a ``SwinTransformer`` of their own, so an unprefixed name would
silently pick theirs. Building from mmdet's or mmseg's registry finds ours through the
shared mmengine root.

Only the backbones are imported eagerly (``import swin_backbone``). The hooks, the optimiser
and the optimiser-wrapper constructor live in :mod:`swin_backbone.engine`, imported through
``locations`` the first time a config builds from our scope of those registries.
"""
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='swin_backbone',
                  locations=['swin_backbone.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='swin_backbone', locations=['swin_backbone.engine.optim'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope='swin_backbone',
                      locations=['swin_backbone.engine.zero'])
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS, scope='swin_backbone',
                     locations=['swin_backbone.engine.fsdp'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='swin_backbone',
                 locations=['swin_backbone.engine.hooks', 'swin_backbone.engine.zero'])
