"""Loading official, timm, mmdet and our own checkpoints; safety and clear errors."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.checkpoint import (CheckpointError, convert_state_dict, detect_format,
                                      extract_state_dict, load_pretrained)

REPO = Path(__file__).resolve().parents[1]
TINY_OUTPUT_NORMS = [f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')]


def outputs(model, size=(96, 128)):
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize('version', [1, 2])
def test_official_checkpoints_load_with_no_missing_or_unexpected_keys(version, official_v1,
                                                                      official_v2):
    cls, path = (SwinTransformer, official_v1) if version == 1 else (SwinTransformerV2,
                                                                     official_v2)
    model = cls(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = load_pretrained(model, path)
    assert report['format'] == 'official'
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['added']) == sorted(TINY_OUTPUT_NORMS)
    official = torch.load(path, weights_only=True)['model']
    ours = model.state_dict()
    assert torch.equal(ours['stages.2.blocks.5.attn.qkv.weight'],
                       official['layers.2.blocks.5.attn.qkv.weight'])
    assert torch.equal(ours['stages.0.downsample.reduction.weight'],
                       official['layers.0.downsample.reduction.weight'])
    assert torch.equal(ours['norm3.weight'], official['norm.weight'])


def test_init_weights_loads_the_pretrained_checkpoint(official_v2):
    model = SwinTransformerV2(init_cfg=dict(type='Pretrained', checkpoint=str(official_v2)))
    model.init_weights()
    official = torch.load(official_v2, weights_only=True)['model']
    assert torch.equal(model.stages[1].blocks[1].attn.logit_scale,
                       official['layers.1.blocks.1.attn.logit_scale'])


def test_v2_window8_checkpoint_runs_at_window16_without_interpolation(official_v2):
    model = SwinTransformerV2(window_size=16, pretrained_window_size=8)
    report = load_pretrained(model, official_v2)
    assert report['missing'] == [] and report['unexpected'] == []
    official = torch.load(official_v2, weights_only=True)['model']
    assert torch.equal(model.stages[0].blocks[0].attn.cpb_mlp[0].weight,
                       official['layers.0.blocks.0.attn.cpb_mlp.0.weight'])
    bias = model.stages[0].blocks[0].attn.relative_position_bias()
    assert bias.shape == (3, 256, 256) and torch.isfinite(bias).all()
    assert all(torch.isfinite(o).all() for o in outputs(model, (256, 256)))


def test_v1_bias_tables_are_resized_bicubically_for_a_new_window(official_v1):
    model = SwinTransformer(window_size=12)
    report = load_pretrained(model, official_v1)
    assert report['missing'] == [] and report['unexpected'] == []
    table = torch.load(official_v1, weights_only=True)['model'][
        'layers.1.blocks.0.attn.relative_position_bias_table']  # (13 * 13, 6)
    expected = F.interpolate(table.T.reshape(1, 6, 13, 13), size=(23, 23), mode='bicubic',
                             align_corners=False).reshape(6, -1).T
    torch.testing.assert_close(model.stages[1].blocks[0].attn.relative_position_bias_table,
                               expected)


def test_timm_mmdet_and_own_formats_give_the_same_model(official_v1, tmp_path):
    from reference import mmdet_swin_from_official, timm_swin_from_official
    reference = SwinTransformer()
    load_pretrained(reference, official_v1)
    expected = outputs(reference)

    timm_model = timm_swin_from_official(1, str(official_v1), (224, 224))
    torch.save(timm_model.state_dict(), tmp_path / 'timm.pth')

    mmdet_model = mmdet_swin_from_official(str(official_v1))
    mmdet_state = {f'backbone.{k}': v for k, v in mmdet_model.state_dict().items()}
    mmdet_state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': mmdet_state, 'meta': {}}, tmp_path / 'mmdet.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in reference.state_dict().items()}},
               tmp_path / 'ours.pth')

    for name, fmt in [('timm', 'timm'), ('mmdet', 'mmdet'), ('ours', 'swin_backbone')]:
        model = SwinTransformer()
        report = load_pretrained(model, tmp_path / f'{name}.pth')
        assert report['format'] == fmt and report['missing'] == [], (name, report['missing'])
        if name == 'mmdet':  # mmdet never loads the classifier's final norm into its norm3
            model.norm3.load_state_dict(reference.norm3.state_dict())
        for a, b in zip(outputs(model), expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / 'pwned.txt'

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(target)!r}, 'w').write('pwned')",))

    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'model': Exploit()}, f)
    with pytest.raises(CheckpointError, match='refused') as info:
        load_pretrained(SwinTransformer(), path)
    assert str(path) in str(info.value)
    assert not target.exists()
    torch.save({'model': Exploit()}, tmp_path / 'evil_zip.pth')
    assert not target.exists()
    with pytest.raises(CheckpointError, match='refused'):
        load_pretrained(SwinTransformer(), tmp_path / 'evil_zip.pth')
    assert not target.exists()


def test_missing_truncated_foreign_and_empty_checkpoints_name_the_file(official_v1, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_pretrained(SwinTransformer(), tmp_path / 'nope.pth')
    data = Path(official_v1).read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cut.pth.*corrupt'):
        load_pretrained(SwinTransformer(), tmp_path / 'cut.pth')
    with pytest.raises(CheckpointError, match=r'do not fit') as info:
        load_pretrained(SwinTransformer(arch='base'), official_v1)
    assert 'patch_embed.proj.weight: checkpoint (96, 3, 4, 4) vs model (128, 3, 4, 4)' in str(
        info.value)
    with pytest.raises(CheckpointError, match='a Swin V1 checkpoint .official format.; the model '
                       'is SwinTransformerV2'):
        load_pretrained(SwinTransformerV2(), official_v1)
    torch.save({'state_dict': {'neck.conv.weight': torch.zeros(3)}}, tmp_path / 'neck.pth')
    with pytest.raises(CheckpointError, match='neck.pth.*no Swin backbone weights'):
        load_pretrained(SwinTransformer(), tmp_path / 'neck.pth')


def test_format_detection_and_head_and_buffer_dropping(official_v2):
    state = extract_state_dict(torch.load(official_v2, weights_only=True))
    assert detect_format(state) == 'official'
    converted = convert_state_dict(state)
    assert not [k for k in converted if k.startswith('head') or 'relative_coords_table' in k
                or 'attn_mask' in k or 'relative_position_index' in k]


def test_convert_checkpoint_cli_never_overwrites_without_force(official_v2, tmp_path):
    dst = tmp_path / 'converted.pth'
    cli = [sys.executable, str(REPO / 'tools' / 'model_converters' / 'convert_checkpoint.py'),
           str(official_v2), str(dst)]
    subprocess.run(cli, check=True, capture_output=True)
    saved = dst.read_bytes()
    model = SwinTransformerV2()
    assert load_pretrained(model, dst)['format'] == 'swin_backbone'
    again = subprocess.run(cli, capture_output=True, text=True)
    assert again.returncode == 1 and 'exists' in again.stderr and '--force' in again.stderr
    assert dst.read_bytes() == saved
    subprocess.run(cli + ['--force'], check=True, capture_output=True)
    assert not list(tmp_path.glob('*.tmp-*'))


@pytest.mark.parametrize('out_indices', [(0, 1), (2,)])
def test_parts_not_built_are_reported_as_skipped_by_name(official_v2, out_indices):
    """With out_indices short of the last stage, the later stages, the last built stage's
    patch merging and the unused output norms are not in the model: their checkpoint
    tensors are skipped, named, not counted as unexpected or a mismatch."""
    model = SwinTransformerV2(out_indices=out_indices)
    report = load_pretrained(model, official_v2)
    last = max(out_indices)
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['skipped'] and all(
        k.startswith((f'stages.{last}.downsample.', 'norm'))
        or int(k.split('.')[1]) > last for k in report['skipped'])
    assert any(k.startswith(f'stages.{last}.downsample.') for k in report['skipped'])
    assert 'norm3.weight' in report['skipped']
    assert sorted(report['loaded'] + report['added']) == sorted(model.state_dict())


@pytest.mark.skipif(not hasattr(torch.serialization, 'safe_globals'),
                    reason='torch < 2.5 has no scoped weights-only allow-list')
def test_loading_a_runner_checkpoint_changes_no_global_state(official_v1, tmp_path):
    """A backbone loaded from a whole mmengine Runner checkpoint (HistoryBuffer and numpy
    values in message_hub) leaves none of those types in torch's allow-list or copyreg
    (torch >= 2.5, whose allow-list can be scoped), in a fresh process. (torch adds its own
    types, DTensor and others, to the list at its first load: only ours are checked.)"""
    script = f'''
import copyreg, torch
from swin_backbone import SwinTransformer
from swin_backbone.checkpoint import load_pretrained
from swin_backbone.checkpoint.runner import RUNNER_CHECKPOINT_GLOBALS
report = load_pretrained(SwinTransformer(), {str(tmp_path / 'runner.pth')!r})
assert report['missing'] == [], report['missing']
allowed = torch.serialization.get_safe_globals()
leaked = [g for g in RUNNER_CHECKPOINT_GLOBALS if g in allowed]
assert not leaked, leaked
from mmengine.logging import HistoryBuffer
assert HistoryBuffer not in copyreg.dispatch_table
'''
    writer = f'''
import numpy as np, torch
from mmengine.logging import HistoryBuffer
from swin_backbone.engine.runner_checkpoint import allow_runner_checkpoints
allow_runner_checkpoints()
buffer = HistoryBuffer()
buffer.update(np.float64(1.5))
state = torch.load({str(official_v1)!r}, weights_only=True)['model']
torch.save(dict(meta=dict(epoch=1), message_hub=dict(log_scalars=dict(loss=buffer)),
                state_dict={{'backbone.' + k: v for k, v in state.items()}}),
           {str(tmp_path / 'runner.pth')!r})
'''
    for code in (writer, script):
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
