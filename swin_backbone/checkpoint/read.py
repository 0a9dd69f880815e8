"""Read checkpoint files, URLs and Hugging Face folders without running code from them.

Accepted sources:

- a PyTorch pickle (``.pth``, ``.pt``, ``.bin``, an mmengine Runner checkpoint), read with
  ``torch.load(weights_only=True)``;
- a ``.safetensors`` file, read with the ``safetensors`` package (a tensor container that
  cannot hold code);
- a sharded checkpoint: its ``*.safetensors.index.json`` or ``pytorch_model.bin.index.json``;
- a folder with a Hugging Face ``config.json`` and its weights (``model.safetensors``,
  ``pytorch_model.bin`` or their sharded indexes), as ``save_pretrained`` writes it and
  as the Hub cache keeps it (``.../snapshots/<revision>/``);
- an ``http(s)://`` URL to a single file above, downloaded once into torch's hub cache.

The format is recognised from the file's first bytes, not from its name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from .runner import RUNNER_CHECKPOINT_GLOBALS

# Weight files of a Hugging Face folder, in the order save_pretrained prefers them.
HF_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                   'pytorch_model.bin.index.json')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


@dataclass
class Checkpoint:
    """What a source held: the top-level dict and, for Hugging Face folders, ``config.json``.

    Attributes:
        obj: the loaded object (a state dict or a dict holding one, e.g. an mmengine
            checkpoint's ``{'meta', 'state_dict', ...}``).
        source: the path or URL it was read from (for messages).
        config: the parsed ``config.json`` of a Hugging Face folder, else None.
    """
    obj: dict
    source: str
    config: dict | None = field(default=None)


def read_checkpoint(source: str | os.PathLike) -> dict:
    """Load a checkpoint file, folder or URL; returns its top-level dict.

    Raises:
        FileNotFoundError: no file or folder at ``source``.
        CheckpointError: the file is corrupt or truncated, is not a dict, or holds objects
            outside torch's weights-only allow-list (a pickle that could run code).
    """
    return read_source(source).obj


def read_source(source: str | os.PathLike) -> Checkpoint:
    """Like :func:`read_checkpoint`, also returning a Hugging Face folder's ``config.json``."""
    source = str(source)
    if source.startswith(('http://', 'https://')):
        if urlparse(source).path.endswith('.index.json'):
            raise CheckpointError(f'{source}: a sharded checkpoint cannot be read from a URL; '
                                  'download its folder (index and shards) and pass that')
        return Checkpoint(_read_file(_download(source), source), source)
    path = Path(source)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint file not found: {source}')
    return Checkpoint(_read_file(path, source), source)


def _read_folder(folder: Path) -> Checkpoint:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            weights = folder / name
            break
    else:
        raise CheckpointError(f'{folder}: a folder, but it holds none of {list(HF_WEIGHT_FILES)}')
    config = None
    if (folder / 'config.json').is_file():
        try:
            config = json.loads((folder / 'config.json').read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f'{folder / "config.json"}: not valid JSON ({exc})') from exc
    return Checkpoint(_read_file(weights, str(weights)), str(folder), config)


def _read_file(path: Path, source: str) -> dict:
    if path.name.endswith('.index.json'):
        return _read_shards(path, source)
    with open(path, 'rb') as f:
        head = f.read(9)
    obj = _read_safetensors(path, source) if _is_safetensors(head) else _read_pickle(path, source)
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a dict of tensors, got {type(obj).__name__}')
    return obj


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian) and
    the header's ``{``; a torch zip starts with ``PK``, a legacy pickle with ``0x80``."""
    return len(head) == 9 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') > 1


def _read_safetensors(path: Path, source: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'{source}: corrupt or truncated safetensors file '
                              f'({type(exc).__name__}: {str(exc).splitlines()[0]})') from exc


def _runner_globals() -> contextlib.AbstractContextManager:
    """The few non-tensor types of an mmengine Runner checkpoint, allowed for one load.

    torch >= 2.5 scopes an allow-list to a ``with`` block, so reading a checkpoint changes no
    global state; torch 2.4 has only the process-wide list, which is extended; torch < 2.4
    has none (and a Runner checkpoint is refused by name).
    """
    scoped = getattr(torch.serialization, 'safe_globals', None)
    if scoped is not None:
        return scoped(RUNNER_CHECKPOINT_GLOBALS)
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(RUNNER_CHECKPOINT_GLOBALS)
    return contextlib.nullcontext()


def _read_pickle(path: Path, source: str) -> object:
    try:
        with _runner_globals():
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f'{source}: refused to load: it holds objects outside the weights-only allow-list '
            f'(loading it could run code). {str(exc).splitlines()[0]}') from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f'{source}: corrupt, truncated or not a PyTorch checkpoint '
                              f'({type(exc).__name__}: {str(exc).splitlines()[0]})') from exc


def _read_shards(index: Path, source: str) -> dict[str, torch.Tensor]:
    """Merge the shards a ``*.index.json`` names in its ``weight_map``."""
    try:
        weight_map = json.loads(index.read_text())['weight_map']
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f'{source}: not a sharded-checkpoint index (no weight_map)') from exc
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f'{source}: shard {shard} is missing next to the index')
        state.update(_read_file(shard_path, str(shard_path)))
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CheckpointError(f'{source}: {len(absent)} tensors the index lists are in no shard, '
                              f'e.g. {absent[:5]}')
    return state


def _download(url: str) -> Path:
    """Download ``url`` once into ``<torch hub dir>/checkpoints``; the cached name carries a
    hash of the URL, since Hub URLs of different models share base names
    (``.../resolve/main/model.safetensors``)."""
    name = os.path.basename(urlparse(url).path) or 'checkpoint'
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = Path(torch.hub.get_dir()) / 'checkpoints' / f'{digest}-{name}'
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    return target
