"""mmengine integration: installed for the whole process by importing this package.

``import swin_backbone`` registers what configs name and changes nothing else. Our tools
(``tools/train.py``, ``tools/test.py``) import this package; users of MMDetection's and
MMSegmentation's own tools (``tools/train.py`` inside the installed mmdet, ``mmdet.apis``...)
switch on the same by naming it::

    custom_imports = dict(imports=['swin_backbone', 'swin_backbone.engine'],
                          allow_failed_imports=False)

Importing it installs:

- the weights-only allow-list and ``HistoryBuffer`` pickling of
  :func:`~.runner_checkpoint.allow_runner_checkpoints`, without which ``--resume`` fails
  under torch >= 2.6 (``Unsupported global: ... HistoryBuffer``);
- atomic Runner checkpoint writes (:func:`~.runner_checkpoint.enable_atomic_checkpoints`):
  a killed run never leaves a truncated ``iter_N.pth``;
- a FLOP handle for ``scaled_dot_product_attention`` in mmengine's ``FlopAnalyzer``
  (:mod:`.flops`), which mmdet's ``get_flops.py`` otherwise counts as zero.

Its modules are what configs and tools name at the Runner level: :mod:`.hooks`
(``RandomStateHook``), :mod:`.optim` (``LayerDecayOptimWrapperConstructor``), :mod:`.zero`
(ZeRO-1: ``ZeroRedundancyOptimizer``, ``ConsolidateOptimizerHook``), :mod:`.fsdp` (an FSDP
auto-wrap policy), :mod:`.launch` (CPU ``torchrun``). A config naming one of them imports it
through the registry, and with it this package: the safety comes with them.
"""
from .flops import count_attention_flops
from .runner_checkpoint import allow_runner_checkpoints, enable_atomic_checkpoints

allow_runner_checkpoints()
enable_atomic_checkpoints()
count_attention_flops()
