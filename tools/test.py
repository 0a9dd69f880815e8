"""Evaluate a checkpoint on a config's test split (mmdet and mmseg configs alike).

Usage:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE_OR_DIR]
                         [--show-dir DIR] [--cfg-options KEY=VALUE ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROC [ARGS...]

Metrics come from the config's ``test_evaluator`` (mmdet: ``CocoMetric``, pycocotools'
numbers; mmseg: ``IoUMetric``); the Runner logs them and writes them to
``WORK_DIR/<timestamp>/<timestamp>.json``. ``--show-dir`` paints predictions (next to the
ground truth for mmdet) with the scope's visualisation hook. ``--out``: mmdet, a ``.pkl``
of the predictions; mmseg, a directory of predicted label maps.

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
import swin_backbone.engine  # noqa: E402,F401  (installs safe Runner checkpoint loading)
from swin_backbone.cpu import accelerate_without_cuda  # noqa: E402
from swin_backbone.engine.launch import close_distributed, setup_cpu_distributed  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (local path or URL)')
    parser.add_argument('--work-dir', help='where the metrics log goes '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='mmdet: dump predictions to this .pkl; '
                        'mmseg: save predicted label maps into this directory')
    parser.add_argument('--show-dir', help='save painted predictions here (relative paths '
                        'are taken inside WORK_DIR/<timestamp>/ for mmdet)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=4')
    parser.add_argument('--reference-model', action='store_true',
                        help='without CUDA too, run the reference backbone instead of the '
                        'CPU kernels of swin_backbone.cpu')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (dist_test.sh sets pytorch)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_show_dir(cfg: Config, show_dir: str) -> None:
    """Switch on the config's visualisation hook and send its images to ``show_dir``.

    mmdet's ``DetVisualizationHook`` takes ``test_out_dir``; mmseg's
    ``SegVisualizationHook`` draws through the visualizer, whose ``save_dir`` decides
    where ``LocalVisBackend`` writes (``<save_dir>/vis_data/vis_image``).
    """
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs default_hooks.visualization in the config, e.g. '
                         "dict(type='DetVisualizationHook') or dict(type='SegVisualizationHook')")
    hook['draw'] = True
    if cfg.get('default_scope') == 'mmseg':
        cfg.visualizer['save_dir'] = show_dir
    else:
        hook['test_out_dir'] = show_dir


def add_output(cfg: Config, runner: Runner | None, out: str) -> None:
    """Keep the raw predictions: mmseg writes label maps through its metric's
    ``output_dir`` (config, before the Runner exists); mmdet appends ``DumpDetResults``."""
    if cfg.get('default_scope') == 'mmseg':
        if runner is None:
            cfg.test_evaluator['output_dir'] = out
            cfg.test_evaluator['keep_results'] = True
        return
    if runner is None:
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must name a .pkl file, got {out}')
        return
    from mmdet.evaluation import DumpDetResults
    runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)
    if args.out:
        add_output(cfg, None, args.out)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if not args.reference_model and accelerate_without_cuda(runner.model):
        runner.logger.info('no CUDA: the Swin backbone runs on the CPU kernels of '
                           'swin_backbone.cpu (--reference-model turns them off)')
    if args.out:
        add_output(cfg, runner, args.out)
    metrics = runner.test()
    close_distributed()
    return metrics


if __name__ == '__main__':
    main()
