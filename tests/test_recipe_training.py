"""Two training iterations of each paper recipe's moving parts through ``tools/train.py``.

* Detection: the toy detection config (``projects/toy_demo/configs/``) switched to the Cascade
  Mask R-CNN of ``configs/detection/cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py``
  (its detector type, three GIoU / 4conv1fc stages and per-stage assigners, with the toy's
  head widths and classes), written to a config file and trained as a subprocess.
* Segmentation: the toy segmentation config with the layer-decay constructor of
  ``configs/segmentation/upernet_swinv2-t-p4-w16_layer-decay_8xb2-160k_ade20k-512x512.py``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from paths import TOY_DETECTION_CONFIG, TOY_SEGMENTATION_CONFIG, config
from projects.toy_demo.toy_coco import ToyCocoSpec, generate_toy_coco
from projects.toy_demo.toy_segmentation import ToySpec, generate
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints

REPO = Path(__file__).resolve().parents[1]


def _train(config: Path, work: Path, *options: str) -> str:
    """Run tools/train.py; returns the run's log text."""
    args = [sys.executable, str(REPO / 'tools' / 'train.py'), str(config), '--work-dir',
            str(work)]
    if options:
        args += ['--cfg-options', *options]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (log,) = work.glob('*/*.log')
    return log.read_text()


def _load_checkpoint(path: Path) -> dict:
    allow_runner_checkpoints()
    return torch.load(path, map_location='cpu', weights_only=True)


def _toy_cascade_config(data_root: Path, path: Path) -> Path:
    toy = Config.fromfile(str(TOY_DETECTION_CONFIG))
    cascade = Config.fromfile(
        str(config('cascade-mask-rcnn_swinv2-t-p4-w16_fpn_ms-crop-3x_coco.py')))
    width, classes = toy.model.neck.out_channels, len(toy.classes)
    toy.model.type = cascade.model.type
    heads = cascade.model.roi_head.bbox_head
    for head in heads:
        head.update(in_channels=width, conv_out_channels=width, fc_out_channels=256,
                    num_classes=classes)
    toy.model.roi_head.update(type=cascade.model.roi_head.type, bbox_head=heads,
                              num_stages=cascade.model.roi_head.num_stages,
                              stage_loss_weights=cascade.model.roi_head.stage_loss_weights)
    stages = cascade.model.train_cfg.rcnn
    for stage in stages:
        stage.sampler.num = toy.model.train_cfg.rcnn.sampler.num
    toy.model.train_cfg.rcnn = stages
    root = f'{data_root}/'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        toy[split].dataset.data_root = root
        toy[split].batch_size = 2
    toy.val_evaluator.ann_file = toy.test_evaluator.ann_file = (
        f'{root}annotations/instances_val.json')
    toy.train_cfg.update(max_epochs=1, val_interval=100)  # 4 images / batch 2: 2 iterations
    toy.default_hooks.checkpoint.interval = 1
    toy.default_hooks.logger.interval = 1
    toy.dump(str(path))
    return path


@pytest.mark.slow
def test_toy_cascade_mask_rcnn_trains_two_iterations(tmp_path: Path) -> None:
    generate_toy_coco(str(tmp_path / 'toy_coco'), num_train=4, num_val=2,
                      spec=ToyCocoSpec(image_size=96))
    config = _toy_cascade_config(tmp_path / 'toy_coco', tmp_path / 'toy_cascade.py')
    log = _train(config, tmp_path / 'work')
    assert 'Epoch(train) [1][2/2]' in log
    for stage in range(3):  # every cascade stage produced its losses
        assert f's{stage}.loss_bbox' in log and f's{stage}.loss_mask' in log
    model = _load_checkpoint(tmp_path / 'work' / 'epoch_1.pth')['state_dict']
    assert 'roi_head.bbox_head.2.shared_convs.3.bn.weight' in model  # 4conv1fc, BN'd convs


@pytest.mark.slow
def test_toy_upernet_trains_two_iterations_with_layer_decay(tmp_path: Path) -> None:
    data = generate(tmp_path / 'toy', ToySpec(num_train=4, num_val=2, sides=(40, 80), seed=3))
    options = [f'{split}_dataloader.dataset.data_root={data}' for split in
               ('train', 'val', 'test')]
    options += [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test') for key in
                ('num_workers=0', 'persistent_workers=False')]
    options += ['train_dataloader.batch_size=2']  # val / test: the config's 1 (sizes differ)
    options += ['train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
                'optim_wrapper.constructor=swin_backbone.LayerDecayOptimWrapperConstructor',
                'optim_wrapper.paramwise_cfg.decay_rate=0.95']
    log = _train(TOY_SEGMENTATION_CONFIG, tmp_path / 'work', *options)
    assert 'Iter(train) [2/2]' in log
    assert 'LayerDecayOptimWrapperConstructor: decay_rate=0.95, 8 blocks, 20 parameter' in log
    groups = _load_checkpoint(tmp_path / 'work' / 'iter_2.pth')['optimizer']['param_groups']
    assert len(groups) == 20  # 2 per layer id: patch embed, 8 blocks, heads
    by_name = {g['group_name']: g for g in groups}
    # after 2 warm-up iterations every group keeps its layer's share of the scheduled lr
    top, first = by_name['layer_9_decay'], by_name['layer_0_decay']
    assert first['lr'] == pytest.approx(top['lr'] * 0.95 ** 9)
    base_lr = Config.fromfile(str(TOY_SEGMENTATION_CONFIG)).optim_wrapper.optimizer.lr
    assert first['initial_lr'] == pytest.approx(base_lr * 0.95 ** 9)
    assert by_name['layer_1_no_decay']['weight_decay'] == 0.
