"""Optimiser-wrapper constructors registered in the ``swin_backbone`` scope."""
from .layer_decay import LayerDecayOptimWrapperConstructor, find_swin_backbone, get_layer_id
from .report import format_layer_decay_table, layer_decay_groups

__all__ = ['LayerDecayOptimWrapperConstructor', 'find_swin_backbone', 'format_layer_decay_table',
           'get_layer_id', 'layer_decay_groups']
