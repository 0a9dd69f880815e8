"""Print the per-layer learning rates that a config's layer-wise lr decay produces.

Usage:
    python tools/analysis_tools/print_layer_decay.py CONFIG [--cfg-options KEY=VALUE ...]

Builds the config's model (no pre-trained weights are loaded) and runs
``swin_backbone.LayerDecayOptimWrapperConstructor`` on it with the config's
``optim_wrapper``; prints one Markdown row per parameter group: layer id, lr scale, lr,
weight decay, and which backbone parts (or heads) the group holds. A config without
``constructor='swin_backbone.LayerDecayOptimWrapperConstructor'`` needs
``--cfg-options optim_wrapper.paramwise_cfg.decay_rate=...``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from mmengine.utils import import_modules_from_strings  # noqa: E402

import swin_backbone  # noqa: E402,F401  (registers the backbones)
from swin_backbone.engine.optim import format_layer_decay_table  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'optim_wrapper.paramwise_cfg.decay_rate=0.9')
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    MMLogger.get_instance('print_layer_decay', log_level='WARNING')  # mute per-parameter logs
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if model.__class__.__name__.endswith('TTAModel'):
        model = model.module
    print(f'{args.config}: decay_rate={cfg.optim_wrapper.paramwise_cfg.get("decay_rate")}, '
          f'base lr={cfg.optim_wrapper.optimizer.lr}, '
          f'weight decay={cfg.optim_wrapper.optimizer.get("weight_decay")}\n')
    print(format_layer_decay_table(model, cfg.optim_wrapper.to_dict()))


if __name__ == '__main__':
    main()
