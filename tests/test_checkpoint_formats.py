"""Checkpoints saved by Hugging Face transformers, mmpretrain, torchvision and timm, read from
files, folders and URLs, against each library's own outputs for the same weights."""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint_libraries import ARCH, LIBRARIES, ours_from, parity
from swin_backbone import SwinTransformer, SwinTransformerV2
from swin_backbone.checkpoint import (CheckpointError, convert, detect_format, extract_state_dict,
                                      load_pretrained, read_checkpoint)

REPO = Path(__file__).resolve().parents[1]
FP32_TOL, FP64_TOL = 1e-4, 1e-9
BY_NAME = {library.name: library for library in LIBRARIES}


@functools.lru_cache(maxsize=None)
def built(name: str, root: str) -> tuple[torch.nn.Module, Path]:
    """``name``'s random model and where it was saved the library's way, once per session."""
    library = BY_NAME[name]
    folder = Path(root) / re.sub(r'\W+', '_', name)
    folder.mkdir()
    model = library.build(0)
    return model, library.save(model, folder)


def saved(name: str, root: str) -> Path:
    return built(name, root)[1]


def copied(name: str, root: str, dst: Path) -> Path:
    """A private copy of ``name``'s saved file or folder, to damage."""
    src = saved(name, root)
    if src.is_file():
        return Path(shutil.copy(src, dst / src.name))
    return Path(shutil.copytree(src, dst / src.name))


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('libraries'))


@pytest.mark.parametrize('name', list(BY_NAME))
def test_every_library_checkpoint_gives_that_librarys_outputs(name, root):
    reference, path = built(name, root)
    for dtype, tol in ((torch.float32, FP32_TOL), (torch.float64, FP64_TOL)):
        diffs = parity(BY_NAME[name], reference, path, dtype)
        assert len(diffs) == 4 and max(diffs) <= tol, (name, dtype, diffs)


@pytest.mark.parametrize('name, size', [
    ('mmpretrain SwinTransformerV2', (509, 643)),  # any size whose stages are >= the window
    ('mmpretrain SwinTransformer', (509, 643)),
    ('torchvision swin_v2_t', (300, 420)),  # sizes divisible by 4; last stage < the window
    ('torchvision swin_t', (200, 200))])
def test_mmpretrain_and_torchvision_agree_off_window_multiples(name, size, root):
    diffs = parity(BY_NAME[name], *built(name, root), size=size)
    assert max(diffs) <= FP32_TOL, diffs


@pytest.mark.parametrize('name', list(BY_NAME))
def test_every_tensor_is_loaded_or_reported(name, root):
    """The format is recognised, nothing is missing or unexpected, and each of the file's
    tensors is loaded (possibly merged into one of ours) or listed as dropped."""
    library = BY_NAME[name]
    path = saved(name, root)
    model, report = ours_from(library, path)
    assert report['format'] == library.expected_format
    assert report['missing'] == [] and report['unexpected'] == [], report
    state = extract_state_dict(read_checkpoint(path))
    converted = convert(state)
    used = {part.split('[')[0] for key in report['loaded']
            for part in converted.origins[key].split(' + ')}
    dropped = {key.split('[')[0] for key in report['dropped']}
    assert set(state) - used - dropped == set()
    # Window-derived buffers, classifier heads, an HF backbone's unused final norm, and
    # torchvision V2's key bias (which it zeroes in every forward).
    unused = re.compile(r'(relative_position_index|relative_coords_table|k_bias|qkv\.bias)$'
                        r'|^(classifier|head)\.|^(swin\.)?layernorm\.')
    assert all(unused.search(k) for k in dropped), sorted(dropped)


def _weight_files(path: Path) -> list[Path]:
    """The files holding a saved model's tensors: the path itself, or a folder's weights
    (every shard of a sharded save)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in ('.safetensors', '.bin'))


def _stored(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == '.safetensors':
        return load_file(file)
    return extract_state_dict(torch.load(file, weights_only=True), prefix='')


def _find(path: Path, match) -> tuple[Path, str]:
    """The first ``(file, key)`` of a saved model whose tensor satisfies ``match(key, t)``."""
    for file in _weight_files(path):
        for key, tensor in _stored(file).items():
            if match(key, tensor):
                return file, key
    raise LookupError(f'no such tensor under {path}')


def _rewrite(file: Path, key: str, change) -> None:
    """Apply ``change`` to tensor ``key`` of ``file`` in place, keeping the file's type."""
    if file.suffix == '.safetensors':
        state = load_file(file)
        state[key] = change(state[key])
        save_file(state, file)
        return
    obj = torch.load(file, weights_only=True)
    state = obj.get('state_dict', obj)
    state[key] = change(state[key])
    torch.save(obj, file)


@pytest.mark.parametrize('name', list(BY_NAME))
def test_a_tensor_of_the_wrong_shape_is_named_by_its_key_in_the_file(name, root, tmp_path):
    library = BY_NAME[name]
    path = copied(name, root, tmp_path)
    # A stage-1 MLP input weight: one tensor of ours in every layout, whatever its name.
    width = 2 * ARCH['embed_dims']
    file, key = _find(path, lambda k, t: t.shape == (4 * width, width) and 'downsample' not in k)
    _rewrite(file, key, lambda t: t[:-1])
    with pytest.raises(CheckpointError, match='do not fit') as info:
        ours_from(library, path)
    assert key.removeprefix('backbone.') in str(info.value)


def test_a_query_of_the_wrong_shape_names_the_projections(root, tmp_path):
    name = 'hf Swinv2ForImageClassification safetensors'
    library, path = BY_NAME[name], copied(name, root, tmp_path)
    key = 'swinv2.encoder.layers.1.blocks.0.attention.self.query.weight'
    _rewrite(path / 'model.safetensors', key, lambda t: t[:-1])
    with pytest.raises(CheckpointError, match=r'projections of different shapes.*query\.weight'
                       r"': \(63, 64\)"):
        ours_from(library, path)


def _hf_v2_folder(root: str, **config) -> Path:
    path = saved('hf Swinv2Model sharded safetensors', root)
    if config:
        folder = Path(root) / ('v2_' + '_'.join(map(str, config.values())))
        if not folder.exists():
            folder.mkdir()
            for file in path.iterdir():
                (folder / file.name).symlink_to(file)
            (folder / 'config.json').unlink()
            settings = json.loads((path / 'config.json').read_text())
            (folder / 'config.json').write_text(json.dumps({**settings, **config}))
        path = folder
    return path


def test_hf_window8_weights_run_at_window16_only_with_their_pretrained_window(root):
    folder = _hf_v2_folder(root)
    model = SwinTransformerV2(arch=ARCH, window_size=16, pretrained_window_size=8)
    report = load_pretrained(model, folder)
    assert report['missing'] == [] and report['format'] == 'huggingface'
    with pytest.raises(CheckpointError, match=r'trained with windows \[8, 8, 8, 8\].*normalises '
                       r'by \[16, 16, 16, 16\].*set pretrained_window_size=\[8, 8, 8, 8\]'):
        load_pretrained(SwinTransformerV2(arch=ARCH, window_size=16), folder)
    model = SwinTransformerV2(arch=ARCH, window_size=16)  # the escape hatch loads as asked
    load_pretrained(model, folder, check_config=False)
    key = 'encoder.layers.0.blocks.0.attention.self.continuous_position_bias_mlp.0.weight'
    file, _ = _find(folder, lambda k, t: k == key)
    assert torch.equal(model.stages[0].blocks[0].attn.cpb_mlp[0].weight, load_file(file)[key])


def test_hf_to16_config_with_pretrained_window_sizes(root):
    # As microsoft/swinv2-base-patch4-window12to16-192to256-22kto1k-ft: fine-tuned at window
    # 16 from window-12 weights, the last stage's pre-training window being 6.
    folder = _hf_v2_folder(root, window_size=16, pretrained_window_sizes=[12, 12, 12, 6])
    model = SwinTransformerV2(arch=ARCH, window_size=16, pretrained_window_size=[12, 12, 12, 6],
                              init_cfg=dict(type='Pretrained', checkpoint=str(folder)))
    model.init_weights()
    with pytest.raises(CheckpointError, match=r'trained with windows \[12, 12, 12, 6\]'):
        load_pretrained(SwinTransformerV2(arch=ARCH, window_size=16, pretrained_window_size=12),
                        folder)


def test_hf_window16_config_normalises_its_last_stage_by_the_clipped_window(root):
    # As microsoft/swinv2-tiny-patch4-window16-256: at 256 the last stage is 8x8, so it ran
    # (and its log-CPB was trained) with window 8, as in the official code.
    folder = _hf_v2_folder(root, window_size=16, image_size=256)
    load_pretrained(SwinTransformerV2(arch=ARCH, window_size=[16, 16, 16, 8]), folder)
    load_pretrained(SwinTransformerV2(arch=ARCH, window_size=16,
                                      pretrained_window_size=[16, 16, 16, 8]), folder)
    with pytest.raises(CheckpointError, match=r'set pretrained_window_size=\[16, 16, 16, 8\]'):
        load_pretrained(SwinTransformerV2(arch=ARCH, window_size=16), folder)


def test_hf_config_disagreements_are_named(root):
    folder = _hf_v2_folder(root)
    with pytest.raises(CheckpointError, match=r"model_type='swinv2' is Swin V2; the model is "
                       'SwinTransformer'):
        load_pretrained(SwinTransformer(arch=ARCH), folder)
    with pytest.raises(CheckpointError, match=r'depths=\[2, 2, 2, 2\], the model has depths='
                       r'\[2, 2, 4, 2\]'):
        load_pretrained(SwinTransformerV2(arch=dict(ARCH, depths=[2, 2, 4, 2])), folder)


def test_v1_weights_resized_for_a_new_window_from_a_hf_folder(root):
    folder = saved('hf SwinForImageClassification', root)
    model = SwinTransformer(arch=ARCH, window_size=12)
    report = load_pretrained(model, folder)
    assert report['missing'] == [] and report['unexpected'] == []
    table = model.stages[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (23 * 23, ARCH['num_heads'][0])


def test_hf_v5_module_names_are_read_too(root, tmp_path):
    """A V1 state dict taken from a transformers 5 module (q_proj / o_proj / mlp.fc1 names,
    which its save_pretrained renames back) loads the same as the saved file."""
    library = BY_NAME['hf SwinModel bin']
    model, path = built(library.name, root)
    torch.save(model.state_dict(), tmp_path / 'v5_names.pth')
    assert any('.attention.q_proj.' in k for k in model.state_dict())
    ours, report = ours_from(library, tmp_path / 'v5_names.pth')
    assert report['format'] == 'huggingface' and not report['missing'] + report['unexpected']
    reference, _ = ours_from(library, path)
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_sharded_index_names_a_missing_shard(root, tmp_path):
    source = saved('hf Swinv2Model sharded safetensors', root)
    for file in source.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    shard = sorted(tmp_path.glob('model-*.safetensors'))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f'shard {shard.name} is missing'):
        load_pretrained(SwinTransformerV2(arch=ARCH), tmp_path)


def test_corrupt_safetensors_and_empty_folder_name_the_file(official_v2, tmp_path):
    file = tmp_path / 'model.safetensors'
    save_file({'layers.0.blocks.0.norm1.weight': torch.ones(96)}, file)
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match='model.safetensors: corrupt or truncated'):
        load_pretrained(SwinTransformerV2(arch=ARCH), file)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(CheckpointError, match='empty: a folder, but it holds none of'):
        load_pretrained(SwinTransformerV2(arch=ARCH), tmp_path / 'empty')
    with pytest.raises(CheckpointError, match='sharded checkpoint cannot be read from a URL'):
        load_pretrained(SwinTransformerV2(arch=ARCH),
                        'https://huggingface.co/x/y/resolve/main/model.safetensors.index.json')


@pytest.fixture()
def http_root(tmp_path, monkeypatch):
    """A local HTTP server over ``tmp_path / 'served'``; torch's hub cache in tmp_path."""
    served = tmp_path / 'served'
    served.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    for proxy in ('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(proxy, raising=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def test_urls_to_safetensors_and_pickles_load_through_the_hub_cache(http_root, root):
    served, url = http_root
    timm_file = saved('timm swin model.safetensors', root)
    (served / 'model.safetensors').write_bytes(timm_file.read_bytes())
    mmpretrain_file = saved('mmpretrain SwinTransformerV2', root)
    (served / 'swinv2.pth').write_bytes(mmpretrain_file.read_bytes())
    v1 = SwinTransformer(arch=ARCH, init_cfg=dict(type='Pretrained',
                                                  checkpoint=f'{url}/model.safetensors'))
    v1.init_weights()
    expected, _ = ours_from(BY_NAME['timm swin model.safetensors'], timm_file)
    assert torch.equal(v1.stages[2].blocks[1].mlp.fc1.weight,
                       expected.stages[2].blocks[1].mlp.fc1.weight)
    report = load_pretrained(SwinTransformerV2(arch=ARCH), f'{url}/swinv2.pth')
    assert report['format'] == 'mmpretrain' and report['missing'] == []
    cached = list((Path(torch.hub.get_dir()) / 'checkpoints').iterdir())
    assert sorted(p.name.split('-', 1)[1] for p in cached) == ['model.safetensors', 'swinv2.pth']


def _convert_cli(*args: str) -> subprocess.CompletedProcess:
    cli = REPO / 'tools' / 'model_converters' / 'convert_checkpoint.py'
    return subprocess.run([sys.executable, str(cli), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_convert_cli_writes_safetensors_and_takes_a_format_override(root, tmp_path):
    folder = saved('hf SwinBackbone', root)
    out = tmp_path / 'ours.safetensors'
    result = _convert_cli(str(folder), str(out))
    assert result.returncode == 0, result.stderr
    assert '(huggingface format)' in result.stdout
    converted = load_file(out)
    assert detect_format(converted) == 'swin_backbone'
    model, _ = ours_from(BY_NAME['hf SwinBackbone'], folder)
    from_file = SwinTransformer(arch=ARCH, window_size=7)
    report = load_pretrained(from_file, out)
    assert report['format'] == 'swin_backbone' and not report['missing'] + report['added']
    for a, b in zip(model.state_dict().values(), from_file.state_dict().values()):
        assert torch.equal(a, b)
    pth = tmp_path / 'ours.bin'
    assert _convert_cli(str(folder), str(pth), '--to', 'safetensors').returncode == 0
    assert detect_format(load_file(pth)) == 'swin_backbone'
    assert _convert_cli(str(folder), str(pth), '--to', 'pth').returncode == 1  # no --force
    wrong = _convert_cli(str(folder), str(tmp_path / 'x.pth'), '--from', 'mmdet')
    assert wrong.returncode == 1 and 'read as mmdet format' in wrong.stderr
    assert not (tmp_path / 'x.pth').exists()
    explicit = _convert_cli(str(saved('timm swin model.safetensors', root)),
                            str(tmp_path / 'timm.pth'), '--from', 'timm')
    assert explicit.returncode == 0 and '(timm format)' in explicit.stdout
