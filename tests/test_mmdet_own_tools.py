"""MMDetection's and MMSegmentation's own tools (the copies inside the installed packages,
``.mim/tools/``) and Python APIs on configs outside this repository that import
``swin_backbone`` and ``swin_backbone.engine``: train, ``--resume`` under torch >= 2.6, test,
mmdet's ``get_flops.py``, ``init_detector`` / ``inference_detector`` / ``DetInferencer`` and
``MMSegInferencer``. No script of ours.

Slow (each step starts a Python with mmdet): marked ``slow``, still in the default run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mmdet
import mmseg
import pytest

from paths import REPO, TOY_DETECTION_CONFIG, TOY_SEGMENTATION_CONFIG
from projects.toy_demo.toy_coco import generate_toy_coco
from projects.toy_demo.toy_segmentation import ToySpec, generate

MMDET_TOOLS = Path(mmdet.__file__).parent / '.mim' / 'tools'
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'
pytestmark = pytest.mark.slow

CONFIG = """
_base_ = [{base!r}]
custom_imports = dict(imports=['swin_backbone', 'swin_backbone.engine'],
                      allow_failed_imports=False)
data_root = {root!r}
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(checkpoint=dict(interval=1), logger=dict(interval=1))
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_mmdet_train_resume_and_test_with_swin_backbone_engine(tmp_path):
    generate_toy_coco(str(tmp_path / 'data'), num_train=4, num_val=2, seed=1)
    config = tmp_path / 'project_config.py'
    config.write_text(CONFIG.format(base=str(TOY_DETECTION_CONFIG),
                                    root=f'{tmp_path / "data"}/'))
    work = tmp_path / 'work'
    train = str(MMDET_TOOLS / 'train.py')
    _run(train, str(config), '--work-dir', str(work), '--cfg-options', 'train_cfg.max_epochs=1',
         cwd=tmp_path)
    assert (work / 'epoch_1.pth').is_file()
    # Without swin_backbone.engine, torch's weights-only loading refuses the checkpoint.
    refused = subprocess.run(
        [sys.executable, '-c', f'import torch; torch.load({str(work / "epoch_1.pth")!r}, '
         'weights_only=True)'], capture_output=True, text=True)
    assert refused.returncode != 0 and 'HistoryBuffer' in refused.stderr
    resumed = _run(train, str(config), '--work-dir', str(work), '--resume', cwd=tmp_path)
    log = resumed.stdout + resumed.stderr
    assert 'Auto resumed from the latest checkpoint' in log and 'resumed epoch: 1, iter: 2' in log
    assert (work / 'epoch_2.pth').is_file()
    tested = _run(str(MMDET_TOOLS / 'test.py'), str(config), str(work / 'epoch_2.pth'),
                  '--work-dir', str(tmp_path / 'test'), cwd=tmp_path)
    assert 'coco/bbox_mAP' in tested.stdout + tested.stderr
    # The Python APIs, in a fresh process: the config's custom_imports install the
    # allow-list before mmdet loads the Runner checkpoint with weights_only.
    api = f'''
import numpy as np
from mmdet.apis import DetInferencer, inference_detector, init_detector
model = init_detector({str(config)!r}, {str(work / 'epoch_2.pth')!r}, device='cpu')
assert type(model.backbone).__module__.startswith('swin_backbone.'), type(model.backbone)
image = (np.random.RandomState(0).rand(128, 160, 3) * 255).astype(np.uint8)
assert inference_detector(model, image).pred_instances.bboxes.shape[1] == 4
found = DetInferencer(model={str(config)!r}, weights={str(work / 'epoch_2.pth')!r},
                      device='cpu')(image, return_datasamples=True)
assert len(found['predictions']) == 1
'''
    _run('-c', api, cwd=tmp_path)
    # mmdet's FLOP counter, which runs the model on real validation images.
    flops = _run(str(MMDET_TOOLS / 'analysis_tools' / 'get_flops.py'), str(config),
                 '--num-images', '1', cwd=tmp_path)
    assert 'Flops:' in flops.stdout and 'Params:' in flops.stdout


SEG_CONFIG = """
_base_ = [{base!r}]
custom_imports = dict(imports=['swin_backbone', 'swin_backbone.engine'],
                      allow_failed_imports=False)
data_root = {root!r}
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""


def test_mmseg_train_resume_test_and_inferencer_with_swin_backbone_engine(tmp_path):
    data = generate(tmp_path / 'toy', ToySpec(num_train=8, num_val=2, sides=(48, 80), seed=3))
    config = tmp_path / 'project_seg_config.py'
    config.write_text(SEG_CONFIG.format(base=str(TOY_SEGMENTATION_CONFIG), root=str(data)))
    work = tmp_path / 'work'
    train = str(MMSEG_TOOLS / 'train.py')
    _run(train, str(config), '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=2',
         cwd=tmp_path)
    assert (work / 'iter_2.pth').is_file()
    resumed = _run(train, str(config), '--work-dir', str(work), '--resume', cwd=tmp_path)
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 0, iter: 2' in log and 'Iter(train) [4/4]' in log
    tested = _run(str(MMSEG_TOOLS / 'test.py'), str(config), str(work / 'iter_4.pth'),
                  '--work-dir', str(tmp_path / 'test'), cwd=tmp_path)
    assert 'mIoU' in tested.stdout + tested.stderr
    api = f'''
import numpy as np
from mmseg.apis import MMSegInferencer
inferencer = MMSegInferencer(model={str(config)!r}, weights={str(work / 'iter_4.pth')!r},
                             device='cpu')
assert type(inferencer.model.backbone).__module__.startswith('swin_backbone.')
image = (np.random.RandomState(0).rand(70, 90, 3) * 255).astype(np.uint8)
found = inferencer(image, return_datasamples=True)
assert found.pred_sem_seg.data.shape == (1, 70, 90), found.pred_sem_seg.data.shape
'''
    _run('-c', api, cwd=tmp_path)


@pytest.mark.skipif(not hasattr(__import__('torch').serialization, 'get_safe_globals'),
                    reason='torch < 2.4 has no weights-only allow-list')
def test_import_swin_backbone_changes_no_global_state_and_engine_does():
    code = '''
import copyreg, torch
import mmengine.runner.checkpoint as checkpoint
def state():
    return (list(torch.serialization.get_safe_globals()), dict(copyreg.dispatch_table),
            checkpoint.save_checkpoint)
before = state()
import sys
import swin_backbone
assert state() == before, 'import swin_backbone changed global state'
assert 'swin_backbone.engine' not in sys.modules
import swin_backbone.engine
assert state() != before, 'swin_backbone.engine installed nothing'
'''
    subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO)
    # Nor does it import the Runner, the engine or the demos' OpenCV.
    light = ('import sys, swin_backbone; loaded = [m for m in ("mmengine.runner", '
             '"swin_backbone.engine", "cv2") if m in sys.modules]; assert not loaded, loaded')
    subprocess.run([sys.executable, '-c', light], check=True, cwd=REPO)


def test_engine_teaches_mmengines_flop_counter_attention():
    import torch
    from mmengine.analysis import FlopAnalyzer

    import swin_backbone.engine  # noqa: F401

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 4)
    assert FlopAnalyzer(Attention(), (q, k, v)).total() == 2 * 16 * 12 * (8 + 4)
