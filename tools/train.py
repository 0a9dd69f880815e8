"""Train a detector or segmentor from an OpenMMLab config (mmdet and mmseg alike).

Usage:
    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--auto-scale-lr] [--cfg-options KEY=VALUE ...]
    bash tools/dist_train.sh CONFIG NUM_PROC [ARGS...]      # torchrun, --launcher pytorch

The registry scope comes from the config's ``default_scope`` (``mmdet`` or ``mmseg``);
``swin_backbone`` is imported first so ``swin_backbone.SwinTransformer(V2)`` resolve.
Importing ``swin_backbone.engine`` makes Runner checkpoints write atomically and load with
``weights_only=True`` (``swin_backbone/engine/runner_checkpoint.py``); they also carry every
rank's random-generator states: ``swin_backbone.RandomStateHook`` is appended to ``custom_hooks`` unless the config lists it,
so a resumed run draws the same flips and drop-path masks as an uninterrupted one. The hook
is added here rather than in a base config because ``custom_hooks`` is a list, which a child
config replaces instead of merging (adding an ``EMAHook`` would silently drop it), and because
every config trained with this script (mmdet's and mmseg's) gets it; the config dumped to the
work dir shows it. Runs started by other scripts get it by listing
``dict(type='swin_backbone.RandomStateHook')`` in ``custom_hooks``.

Without CUDA the Swin backbone runs on the CPU layer (``swin_backbone.cpu.accelerate``: the
same weights and results, faster CPU kernels); ``--reference-model`` keeps the reference
model.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import swin_backbone  # noqa: E402,F401  (registers the backbones)
import swin_backbone.engine  # noqa: E402,F401  (installs safe, atomic Runner checkpoints)
from swin_backbone.checkpoint.runner import latest_complete_checkpoint  # noqa: E402
from swin_backbone.cpu import accelerate_without_cuda  # noqa: E402
from swin_backbone.engine.hooks import with_random_state_hook  # noqa: E402
from swin_backbone.engine.launch import close_distributed, setup_cpu_distributed  # noqa: E402
from swin_backbone.engine.zero import with_consolidate_hook  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model from an mmdet / mmseg config')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or without a value from the newest complete '
                        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic loss scale)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by total batch size / auto_scale_lr.base_batch_size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=2 '
                        'model.backbone.frozen_stages=1')
    parser.add_argument('--reference-model', action='store_true',
                        help='without CUDA too, run the reference backbone instead of the '
                        'CPU kernels of swin_backbone.cpu')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (dist_train.sh sets pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Apply the command line to the config file (CLI > config file > defaults)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.custom_hooks = with_random_state_hook(cfg.get('custom_hooks'))
    cfg.custom_hooks = with_consolidate_hook(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError(f'--auto-scale-lr: {args.config} has no '
                             '`auto_scale_lr = dict(base_batch_size=...)`')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # mmengine's own auto-resume trusts the `last_checkpoint` pointer; pick the newest
        # checkpoint that is a complete file instead (a crash may have cut one off).
        cfg.resume = True
        cfg.load_from = latest_complete_checkpoint(cfg.work_dir)
        if cfg.load_from is None:
            print(f'--resume: no checkpoint in {cfg.work_dir}, starting from scratch',
                  flush=True)
            cfg.resume = False
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def build_runner(args: argparse.Namespace) -> Runner:
    """The Runner this command line trains (process group started, CPU layer applied)."""
    cfg = build_config(args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if not args.reference_model and accelerate_without_cuda(runner.model):
        runner.logger.info('no CUDA: the Swin backbone runs on the CPU kernels of '
                           'swin_backbone.cpu (--reference-model turns them off)')
    return runner


def main(argv: list[str] | None = None) -> None:
    build_runner(parse_args(argv)).train()
    close_distributed()


if __name__ == '__main__':
    main()
