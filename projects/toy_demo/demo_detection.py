"""The detection demo (``make demo``): toy data -> train -> test -> pictures and a summary.

1. generates the toy shapes dataset (``projects.toy_demo.toy_coco``) under ``--data-root`` if
   it is not there yet;
2. trains ``configs/mask-rcnn_swinv2-toy-p4-w8_fpn_gn-head_2x_toy-coco-128x128.py`` (beside
   this file) from random initialisation through ``tools/train.py`` (a subprocess; its log, with iteration progress and ETA, streams to
   the terminal);
3. evaluates the final checkpoint through ``tools/test.py`` (mmdet's ``CocoMetric``) and
   paints a few predictions next to the ground truth; scores the same predictions with all
   classes merged too, to show how much of the gap to a perfect score is classification;
4. plots training loss and validation mAP against the iteration;
5. prints the metrics, the wall time of each step and where everything is.

Usage:
    python projects/toy_demo/demo_detection.py [--work-dir work_dirs/demo_detection] [--fresh]

A second run resumes from the work dir's newest complete checkpoint (an interrupted demo
continues; a finished one only re-tests); ``--fresh`` deletes the work dir first.
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import shutil
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from swin_backbone.checkpoint.runner import latest_complete_checkpoint  # noqa: E402
from projects.toy_demo.toy_coco import ensure_toy_coco  # noqa: E402
from projects.toy_demo.training_curves import plot_training_curves  # noqa: E402

TARGET = {'coco/bbox_mAP': 0.40, 'coco/segm_mAP': 0.35}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(
        REPO, 'projects', 'toy_demo', 'configs',
        'mask-rcnn_swinv2-toy-p4-w8_fpn_gn-head_2x_toy-coco-128x128.py'))
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'demo_detection'))
    parser.add_argument('--fresh', action='store_true', help='delete the work dir first')
    parser.add_argument('--num-vis', type=int, default=8,
                        help='how many painted val images go into predictions.png')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to both tools/train.py and tools/test.py')
    return parser.parse_args()


def banner(step: str, start: float) -> None:
    print(f'\n=== [{time.time() - start:6.0f}s] {step}', flush=True)


def run(cmd: list[str]) -> None:
    """Run a tool with its output streaming through; stop the demo if it fails."""
    print('$ ' + ' '.join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f'demo: {osp.basename(cmd[1])} failed with exit code {result.returncode}')


def newest_test_metrics(work_dir: str, since: float) -> dict:
    """The metrics ``tools/test.py`` logged: ``WORK_DIR/<ts>/<ts>.json`` written after
    ``since`` whose entry has a ``coco/bbox_mAP``."""
    for path in sorted(glob.glob(osp.join(work_dir, '*', '*.json')), key=osp.getmtime,
                       reverse=True):
        if osp.getmtime(path) < since:
            break
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        if lines and 'coco/bbox_mAP' in lines[-1]:
            return lines[-1]
    raise FileNotFoundError(f'no test metrics written to {work_dir}/*/*.json')


def main() -> None:
    args = parse_args()
    start = time.time()
    python = sys.executable
    work_dir = osp.abspath(args.work_dir)
    if args.fresh:
        shutil.rmtree(work_dir, ignore_errors=True)
    extra = ['--cfg-options', *args.cfg_options] if args.cfg_options else []

    banner('1/4 toy dataset', start)
    files, generated = ensure_toy_coco(osp.join(REPO, 'data', 'toy_coco'))  # as the config
    print(('generated ' if generated else 'found ') + ', '.join(files.values()), flush=True)
    times = {'data': time.time() - start}

    banner('2/4 training from random initialisation (tools/train.py)', start)
    t0 = time.time()
    run([python, 'tools/train.py', args.config, '--work-dir', work_dir, '--resume', *extra])
    times['train'] = time.time() - t0
    checkpoint = latest_complete_checkpoint(work_dir)
    if checkpoint is None:
        sys.exit(f'demo: training left no checkpoint in {work_dir}')

    banner('3/4 evaluation and visualisation (tools/test.py)', start)
    t0 = time.time()
    vis_dir = osp.join(work_dir, 'vis')
    shutil.rmtree(vis_dir, ignore_errors=True)
    results = osp.join(work_dir, 'results')  # CocoMetric writes results.{bbox,segm}.json
    test_options = [*args.cfg_options, f'test_evaluator.outfile_prefix={results}']
    run([python, 'tools/test.py', args.config, checkpoint, '--work-dir', work_dir,
         '--show-dir', vis_dir, '--cfg-options', *test_options])
    times['test'] = time.time() - t0
    metrics = newest_test_metrics(work_dir, since=t0)
    metrics.update(class_agnostic_map(files['val'], results))
    grid = prediction_grid(vis_dir, osp.join(work_dir, 'predictions.png'), args.num_vis)

    banner('4/4 training curves', start)
    plot = plot_training_curves(work_dir, osp.join(work_dir, 'training_curves.png'),
                                metrics=('coco/bbox_mAP', 'coco/segm_mAP'),
                                title='SwinV2 Mask R-CNN on toy shapes, from scratch')
    times['total'] = time.time() - start
    summarize(metrics, times, work_dir, checkpoint, plot, vis_dir, grid)


def class_agnostic_map(ann_file: str, results: str) -> dict[str, float]:
    """mAP of the same predictions with every class merged (pycocotools ``useCats=0``):
    how far localisation and masks are from the class-aware numbers, i.e. what the
    classifier costs. Keys ``agnostic/bbox_mAP`` and ``agnostic/segm_mAP``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        found = {}
        for kind in ('bbox', 'segm'):
            evaluator = COCOeval(gt, gt.loadRes(f'{results}.{kind}.json'), kind)
            evaluator.params.useCats = 0
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            found[f'agnostic/{kind}_mAP'] = round(float(evaluator.stats[0]), 3)
    return found


def prediction_grid(vis_dir: str, out_file: str, count: int, scale: int = 2) -> str:
    """Tile the first ``count`` painted val images (each ground truth | prediction) into
    one PNG, two per row, enlarged ``scale`` times so the labels stay legible."""
    import cv2
    import numpy as np
    paths = sorted(glob.glob(osp.join(vis_dir, '*.png')))[:count]
    if not paths:
        raise FileNotFoundError(f'tools/test.py --show-dir painted nothing into {vis_dir}')
    tiles = [cv2.imread(p) for p in paths]
    tiles += [np.zeros_like(tiles[0])] * (len(tiles) % 2)
    rows = [np.concatenate(tiles[i:i + 2], 1) for i in range(0, len(tiles), 2)]
    grid = np.concatenate(rows, 0)
    cv2.imwrite(out_file, cv2.resize(grid, None, fx=scale, fy=scale,
                                     interpolation=cv2.INTER_NEAREST))
    return out_file


def summarize(metrics: dict, times: dict, work_dir: str, checkpoint: str, plot: str,
              vis_dir: str, grid: str) -> None:
    images = sorted(glob.glob(osp.join(vis_dir, '*.png')))
    print('\n=== summary')
    for key, target in TARGET.items():
        value = metrics[key]
        print(f'{key:15s} {value:.3f}  (target >= {target:.2f}: '
              f'{"met" if value >= target else "NOT met"})')
    print('other metrics:  ' + ', '.join(f'{k.split("/")[-1]} {v:.3f}' for k, v in metrics.items()
                                         if k.startswith('coco/') and k not in TARGET))
    print('class-agnostic: ' + ', '.join(f'{k.split("/")[-1]} {v:.3f}' for k, v in metrics.items()
                                         if k.startswith('agnostic/'))
          + '  (every class merged: what boxes and masks reach if the class were free)')
    print('wall time:      ' + ', '.join(f'{k} {v / 60:.1f} min' for k, v in times.items()))
    print(f'work dir:       {work_dir}')
    print(f'checkpoint:     {checkpoint}')
    print(f'curves:         {plot}')
    print(f'predictions:    {grid} (each pair: ground truth | prediction); all '
          f'{len(images)} val images in {vis_dir}')
    with open(osp.join(work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(dict(metrics=metrics, wall_time_s=times, checkpoint=checkpoint, plot=plot,
                       predictions=grid, visualisations=images), f, indent=1)


if __name__ == '__main__':
    main()
