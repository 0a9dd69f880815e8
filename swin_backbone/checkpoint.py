"""Read, recognise, convert and load Swin checkpoints, never running code from the file.

Formats recognised (after unwrapping ``state_dict`` / ``model`` containers and a
``backbone.`` or ``module.`` prefix):

- ``official``: Microsoft's releases, ``layers.{i}.blocks.{j}...``, the patch merging of
  stage ``i`` under ``layers.{i}.downsample``, a final ``norm``, a classifier ``head``.
- ``timm``: timm >= 0.9, the same names but stage ``i``'s merging under
  ``layers.{i+1}.downsample``, classifier ``head.fc``.
- ``mmdet``: MMDetection / MMSegmentation's own ``SwinTransformer`` (``attn.w_msa``,
  ``ffn.layers``, patch merging weights in ``nn.Unfold`` channel order).
- ``swin_backbone``: ours, ``stages.{i}...``, ``norm{i}``.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

FORMATS = ('official', 'timm', 'mmdet', 'swin_backbone')
# Derived from the window at construction; ours are non-persistent buffers.
_DERIVED = re.compile(r'(relative_position_index|relative_coords_table|attn_mask|k_bias)$')
_HEAD = re.compile(r'^head\.')
_OUTPUT_NORM = re.compile(r'^norm\d+\.')
# The parts a backbone with out_indices short of the last stage does not build.
_STAGE_PART = re.compile(r'^(stages\.(\d+)(\.downsample)?|norm(\d+))\.')
# Below this fraction of the backbone's tensors loaded, loading fails instead of warning.
MIN_LOADED_FRACTION = 0.5


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def read_checkpoint(source: str | os.PathLike) -> dict:
    """Load a checkpoint file or URL with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``source``.
        CheckpointError: the file is corrupt or truncated, is not a dict, or holds objects
            outside torch's weights-only allow-list (a pickle that could run code).
    """
    source = str(source)
    from .runner_checkpoint import allow_runner_checkpoints
    allow_runner_checkpoints()
    is_url = source.startswith(('http://', 'https://'))
    if not is_url and not Path(source).is_file():
        raise FileNotFoundError(f'checkpoint file not found: {source}')
    try:
        if is_url:
            obj = torch.hub.load_state_dict_from_url(source, map_location='cpu', weights_only=True)
        else:
            obj = torch.load(source, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f'{source}: refused to load: it holds objects outside the weights-only allow-list '
            f'(loading it could run code). {str(exc).splitlines()[0]}') from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f'{source}: corrupt, truncated or not a PyTorch checkpoint '
                              f'({type(exc).__name__}: {str(exc).splitlines()[0]})') from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a dict of tensors, got {type(obj).__name__}')
    return obj


def extract_state_dict(obj: dict, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint: unwraps containers and strips prefixes.

    Args:
        obj: as returned by :func:`read_checkpoint`.
        prefix: keep only keys under this prefix (stripped). By default ``backbone.`` when
            present (full detector / segmentor checkpoints), and ``module.`` (DDP) is dropped.
    """
    for container in ('state_dict', 'model', 'module'):
        if isinstance(obj.get(container), dict):
            obj = obj[container]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """One of :data:`FORMATS`; raises :class:`CheckpointError` for anything else."""
    keys = list(state)
    if any(k.startswith('stages.') for k in keys):
        return 'mmdet' if any('.attn.w_msa.' in k or '.ffn.layers.' in k for k in keys) \
            else 'swin_backbone'
    if any(k.startswith('layers.') for k in keys):
        has_first_merge = any(k.startswith('layers.0.downsample.') for k in keys)
        has_later_merge = any(re.match(r'layers\.[1-9]\d*\.downsample\.', k) for k in keys)
        return 'timm' if has_later_merge and not has_first_merge else 'official'
    raise CheckpointError('no Swin backbone weights found (no keys under layers., stages. or '
                          f'backbone.); first keys: {keys[:5]}')


def _mmdet_merge_order(t: torch.Tensor) -> torch.Tensor:
    """Undo mmdet's ``nn.Unfold`` channel order of a patch-merging weight or norm."""
    perm = [0, 2, 1, 3]  # unfold's (dh, dw) order -> official (x0, x1, x2, x3); self-inverse
    if t.ndim == 2:
        out, inp = t.shape
        return t.reshape(out, inp // 4, 4).transpose(1, 2)[:, perm].reshape(out, inp)
    return t.reshape(-1, 4).transpose(0, 1)[perm].reshape(-1)


def convert_state_dict(state: dict[str, torch.Tensor], num_stages: int = 4,
                       fmt: str | None = None) -> dict[str, torch.Tensor]:
    """Rename a recognised checkpoint's keys to ours; drops classifier heads and buffers
    derived from the window (ours are rebuilt at construction)."""
    fmt = fmt or detect_format(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _DERIVED.search(key) or _HEAD.match(key):
            continue
        if fmt in ('official', 'timm'):
            if fmt == 'timm':  # stage i's merging is stored at the start of stage i + 1
                key = re.sub(r'^layers\.(\d+)\.downsample\.',
                             lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', key)
            key = re.sub(r'^layers\.', 'stages.', key)
            key = re.sub(r'^norm\.', f'norm{num_stages - 1}.', key)
        elif fmt == 'mmdet':
            key = key.replace('patch_embed.projection.', 'patch_embed.proj.')
            key = key.replace('.attn.w_msa.', '.attn.')
            key = key.replace('.ffn.layers.0.0.', '.mlp.fc1.').replace('.ffn.layers.1.', '.mlp.fc2.')
            if '.downsample.' in key:
                value = _mmdet_merge_order(value)
        out[key] = value
    return out


def _resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubically resize a V1 ``((2w - 1)^2, heads)`` table to ``(size, heads)``."""
    old, heads = table.shape
    side, new_side = round(old ** 0.5), round(size ** 0.5)
    grid = table.float().T.reshape(1, heads, side, side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode='bicubic', align_corners=False)
    return grid.reshape(heads, size).T.to(table.dtype)


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict:
    """Load converted backbone weights, reporting every mismatch by name.

    V1 relative-position tables are resized bicubically when the window changed. Shape
    mismatches, or fewer than :data:`MIN_LOADED_FRACTION` of the model's tensors loaded,
    raise :class:`CheckpointError`; remaining missing / unexpected keys are logged.

    Returns:
        ``dict(loaded=[...], missing=[...], unexpected=[...], added=[...], skipped=[...])``;
        ``added`` are output norms the checkpoint has no counterpart for (classification
        releases), ``skipped`` the checkpoint's tensors of stages, patch mergings and output
        norms the model does not build (``out_indices`` short of the last stage).
    """
    expected = model.state_dict()
    skipped = [k for k in state if _not_built(model, k)]
    state = {k: v for k, v in state.items() if k not in set(skipped)}
    for key, value in state.items():
        if (key.endswith('relative_position_bias_table') and key in expected
                and value.shape != expected[key].shape and value.ndim == 2
                and value.shape[1] == expected[key].shape[1]):
            state[key] = _resize_bias_table(value, expected[key].shape[0])
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if mismatched:
        raise CheckpointError(f'{source}: {len(mismatched)} tensors do not fit '
                              f'{type(model).__name__} (another architecture?):\n  '
                              + '\n  '.join(mismatched[:20]))
    loaded = [k for k in state if k in expected]
    # Output norms norm0..norm{n-2} are ours (the mmdet convention): classification
    # checkpoints have only the final norm, so these start from their initialisation.
    absent = [k for k in expected if k not in state]
    norms_in_checkpoint = {k.split('.')[0] for k in state if _OUTPUT_NORM.match(k)}
    added = [k for k in absent
             if _OUTPUT_NORM.match(k) and k.split('.')[0] not in norms_in_checkpoint]
    missing = [k for k in absent if k not in added]
    unexpected = [k for k in state if k not in expected]
    if len(loaded) < MIN_LOADED_FRACTION * len(expected):
        raise CheckpointError(
            f'{source}: only {len(loaded)} of {len(expected)} backbone tensors found; '
            f'missing e.g. {missing[:5]}, unexpected e.g. {unexpected[:5]}')
    model.load_state_dict({k: state[k] for k in loaded}, strict=False)
    for kind, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
            print_log(f'{source}: {len(keys)} {kind} backbone keys: {keys}', logger='current',
                      level=logging.WARNING)
    if added:
        print_log(f'{source}: output norms {sorted({k.split(".")[0] for k in added})} are not '
                  'in this checkpoint and keep their initialisation', logger='current')
    if skipped:
        parts = sorted({_STAGE_PART.match(k).group(1) for k in skipped})
        print_log(f'{source}: skipped {len(skipped)} tensors of parts this model does not build '
                  f'(out_indices={getattr(model, "out_indices", None)}): {parts}',
                  logger='current')
    return dict(loaded=loaded, missing=missing, unexpected=unexpected, added=added,
                skipped=skipped)


def _not_built(model: nn.Module, key: str) -> bool:
    """Whether ``key`` belongs to a stage, a stage's patch merging or an output norm that
    ``model`` leaves out (a key of a part it has, or of an unknown part, is not)."""
    match = _STAGE_PART.match(key)
    num_stages = len(getattr(model, 'depths', ()))
    if match is None or int(match.group(2) or match.group(4)) >= num_stages:
        return False
    try:
        model.get_submodule(match.group(1))  # raises for an absent or None submodule
    except AttributeError:
        return True
    return False


def load_pretrained(model: nn.Module, source: str | os.PathLike, prefix: str | None = None) -> dict:
    """Read ``source`` (path or URL), recognise its format, convert and load it into ``model``.

    Returns the report of :func:`load_state_dict_into`, plus ``format``.
    """
    state = extract_state_dict(read_checkpoint(source), prefix)
    try:
        fmt = detect_format(state)
    except CheckpointError as exc:
        raise CheckpointError(f'{source}: {exc}') from None
    num_stages = len(getattr(model, 'depths', [0] * 4))
    report = load_state_dict_into(model, convert_state_dict(state, num_stages, fmt), str(source))
    print_log(f'loaded {len(report["loaded"])} tensors from {source} ({fmt} format)',
              logger='current')
    return dict(report, format=fmt)


def save_atomic(obj: dict, dst: str | os.PathLike, force: bool = False) -> None:
    """Save ``obj`` to ``dst`` through a temporary file and a rename (never a partial file).

    Raises:
        FileExistsError: ``dst`` exists and ``force`` is False.
    """
    from .runner_checkpoint import atomic_save_checkpoint
    if Path(dst).exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to overwrite it')
    atomic_save_checkpoint(obj, str(dst))


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False,
                 num_stages: int = 4) -> tuple[str, int]:
    """Read ``src``, convert to our keys and write ``dst`` atomically; returns
    ``(format, number of tensors)``."""
    if Path(dst).exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to overwrite it')
    state = extract_state_dict(read_checkpoint(src))
    try:
        fmt = detect_format(state)
    except CheckpointError as exc:
        raise CheckpointError(f'{src}: {exc}') from None
    converted = convert_state_dict(state, num_stages, fmt)
    save_atomic({'state_dict': converted, 'meta': dict(source=str(src), format=fmt)}, dst, force)
    return fmt, len(converted)
