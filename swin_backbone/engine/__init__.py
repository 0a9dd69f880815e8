"""Runner-checkpoint safety for any mmengine tool, installed by importing this module.

``import swin_backbone`` registers what configs name and changes nothing else. Users of
MMDetection's and MMSegmentation's own tools (``tools/train.py`` inside the installed mmdet,
``mmdet.apis``...) switch on what our tools switch on by naming this module::

    custom_imports = dict(imports=['swin_backbone', 'swin_backbone.engine'],
                          allow_failed_imports=False)

Importing it installs, for the whole process:

- the weights-only allow-list and ``HistoryBuffer`` pickling of
  :func:`~swin_backbone.runner_checkpoint.allow_runner_checkpoints`, without which
  ``--resume`` fails under torch >= 2.6 (``Unsupported global: ... HistoryBuffer``);
- atomic Runner checkpoint writes (:func:`~swin_backbone.runner_checkpoint.
  enable_atomic_checkpoints`): a killed run never leaves a truncated ``iter_N.pth``;
- a FLOP handle for ``scaled_dot_product_attention`` in mmengine's ``FlopAnalyzer``
  (:mod:`.flops`), which mmdet's ``get_flops.py`` otherwise counts as zero.

``RandomStateHook`` stays a hook that configs name
(``custom_hooks=[dict(type='swin_backbone.RandomStateHook')]``).
"""
from ..runner_checkpoint import allow_runner_checkpoints, enable_atomic_checkpoints
from .flops import count_attention_flops

allow_runner_checkpoints()
enable_atomic_checkpoints()
count_attention_flops()
