"""Load a recognised checkpoint into a backbone, convert files, write ours.

Every tensor of the checkpoint ends in one of the report's lists (loaded, dropped,
skipped, unexpected), and every tensor of the model is loaded, reported missing or reported
as an output norm the checkpoint has no counterpart for: nothing is ignored in silence.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import nn

from .formats import FORMATS, Converted, checkpoint_version, convert, detect_format, \
    extract_state_dict
from .read import CheckpointError, read_source
from .runner import write_atomic

_OUTPUT_NORM = re.compile(r'^norm\d+\.')
_OUR_LAYOUT = re.compile(r'^(patch_embed|stages\.\d+|norm\d+)\.')
# The parts a backbone with out_indices short of the last stage does not build.
_STAGE_PART = re.compile(r'^(stages\.(\d+)(\.downsample)?|norm(\d+))\.')
# Below this fraction of the backbone's tensors loaded, loading fails instead of warning.
MIN_LOADED_FRACTION = 0.5
SAVE_FORMATS = ('pth', 'safetensors')


def _resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubically resize a V1 ``((2w - 1)^2, heads)`` table to ``(size, heads)``."""
    old, heads = table.shape
    side, new_side = round(old ** 0.5), round(size ** 0.5)
    grid = table.float().T.reshape(1, heads, side, side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode='bicubic', align_corners=False)
    return grid.reshape(heads, size).T.to(table.dtype)


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                         origins: dict[str, str] | None = None) -> dict:
    """Load converted backbone weights, reporting every mismatch by name.

    V1 relative-position tables are resized bicubically when the window changed. Shape
    mismatches, or fewer than :data:`MIN_LOADED_FRACTION` of the model's tensors loaded,
    raise :class:`CheckpointError`; remaining missing / unexpected keys are logged.

    Args:
        origins: our key -> the checkpoint's key(s) it was converted from, named in errors.

    Returns:
        ``dict(loaded=[...], missing=[...], unexpected=[...], added=[...], skipped=[...])``;
        ``added`` are output norms the checkpoint has no counterpart for (classification
        releases), ``skipped`` the checkpoint's tensors of stages, patch mergings and output
        norms the model does not build (``out_indices`` short of the last stage).
    """
    origins = origins or {}
    expected = model.state_dict()
    skipped = [k for k in state if _not_built(model, k)]
    state = {k: v for k, v in state.items() if k not in set(skipped)}
    for key, value in state.items():
        if (key.endswith('relative_position_bias_table') and key in expected
                and value.shape != expected[key].shape and value.ndim == 2
                and value.shape[1] == expected[key].shape[1]):
            state[key] = _resize_bias_table(value, expected[key].shape[0])
    mismatched = [f'{k}{_from(origins, k)}: checkpoint {tuple(v.shape)} vs model '
                  f'{tuple(expected[k].shape)}'
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
    unexpected = [f'{k}{_from(origins, k)}' for k in state if k not in expected]
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


def _from(origins: dict[str, str], key: str) -> str:
    origin = origins.get(key)
    return '' if origin in (None, key) else f' (checkpoint {origin})'


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


def hf_config_mismatches(model: nn.Module, config: dict) -> list[str]:
    """What a Hugging Face ``config.json`` says about its weights that ``model`` disagrees
    with: architecture, Swin version, and (V2) the window the log-CPB was trained with.

    In a V2 config, stage ``i``'s log-CPB coordinates were normalised by
    ``pretrained_window_sizes[i]`` when it is > 0, else by the window stage ``i`` ran at:
    ``window_size``, clipped (as in the official code) to the stage's map side at
    ``image_size`` (8 for the last stage of a window-16 model at 256). Ours normalises by
    ``pretrained_window_size[i]``, or its ``window_size[i]`` when that is 0. A V2 model at
    another window than the weights' (window 16 from window-8 weights) must therefore set
    ``pretrained_window_size`` to the weights' windows. A V1 window change is fine: the bias
    tables are resized.
    """
    config = config.get('backbone_config') or config  # UperNet and other wrappers
    version = {'swin': 1, 'swinv2': 2}.get(config.get('model_type'))
    model_version = getattr(model, 'version', None)
    if version is None or model_version is None:
        return []
    if version != model_version:
        return [f'config.json model_type={config["model_type"]!r} is Swin V{version}; the model '
                f'is {type(model).__name__}']
    problems = []
    for hf_name, ours_name in (('embed_dim', 'embed_dims'), ('depths', 'depths'),
                               ('num_heads', 'num_heads'), ('num_channels', 'in_channels')):
        theirs, ours = config.get(hf_name), getattr(model, ours_name, None)
        if theirs is not None and ours is not None and theirs != ours:
            problems.append(f'config.json {hf_name}={theirs}, the model has {ours_name}={ours}')
    if version == 2 and 'window_size' in config:
        stages = len(model.stages)
        hf_pretrained = list(config.get('pretrained_window_sizes') or [0] * stages)
        grid = _side(config.get('image_size', 0)) // _side(config.get('patch_size', 4))
        ran_at = [min(config['window_size'], grid // 2**i) if grid else config['window_size']
                  for i in range(stages)]
        trained = [p or w for p, w in zip(hf_pretrained, ran_at)][:stages]
        ours = [p or w for p, w in zip(model.pretrained_window_size, model.window_size)][:stages]
        if trained != ours:
            problems.append(
                f'config.json: the log-CPB was trained with windows {trained} (window_size='
                f'{config["window_size"]}, pretrained_window_sizes={hf_pretrained}, image_size='
                f'{config.get("image_size")}) but the model normalises by {ours} (window_size='
                f'{model.window_size}, pretrained_window_size={model.pretrained_window_size}): '
                f'set pretrained_window_size={trained}')
    return problems


def _side(value: int | list[int]) -> int:
    """A config's size as one side (the smaller one where it gives two)."""
    return min(value) if isinstance(value, (list, tuple)) else int(value)


def _summarise(keys: list[str]) -> str:
    """``['stages.0.blocks.0.attn.x', 'stages.0.blocks.1.attn.x', 'head.w']`` ->
    ``'stages.*.blocks.*.attn.x (2), head.w'``."""
    counts: dict[str, int] = {}
    for key in keys:
        pattern = re.sub(r'\.\d+(?=\.)', '.*', key)
        counts[pattern] = counts.get(pattern, 0) + 1
    return ', '.join(p if n == 1 else f'{p} ({n})' for p, n in counts.items())


def load_pretrained(model: nn.Module, source: str | os.PathLike, prefix: str | None = None,
                    fmt: str | None = None, check_config: bool = True) -> dict:
    """Read ``source`` (file, Hugging Face folder or URL), recognise its format, convert
    and load it into ``model``.

    Args:
        prefix: keep only keys under it (default: ``backbone.`` when present).
        fmt: one of :data:`~swin_backbone.checkpoint.FORMATS`, overriding detection.
        check_config: compare a Hugging Face folder's ``config.json`` with the model
            (:func:`hf_config_mismatches`) and raise on any disagreement.

    Returns the report of :func:`load_state_dict_into`, plus ``format`` and ``dropped``
    (the checkpoint's classifier head, window-derived buffers and unused tensors).
    """
    checkpoint = read_source(source)
    if checkpoint.config is not None and check_config:
        problems = hf_config_mismatches(model, checkpoint.config)
        if problems:
            raise CheckpointError(f'{source}: ' + '; '.join(problems)
                                  + ' (pass check_config=False to load anyway)')
    state = extract_state_dict(checkpoint.obj, prefix)
    fmt, converted = _convert(state, str(source), len(getattr(model, 'depths', [0] * 4)), fmt)
    version, model_version = checkpoint_version(state), getattr(model, 'version', None)
    if version and model_version and version != model_version:
        raise CheckpointError(f'{source}: a Swin V{version} checkpoint ({fmt} format); the model '
                              f'is {type(model).__name__}')
    report = load_state_dict_into(model, converted.state, str(source), converted.origins)
    if converted.dropped:
        print_log(f'{source}: dropped {len(converted.dropped)} tensors the backbone does not '
                  f'use (classifier head, window-derived buffers): '
                  f'{_summarise(converted.dropped)}',
                  logger='current')
    print_log(f'loaded {len(report["loaded"])} tensors from {source} ({fmt} format)',
              logger='current')
    return dict(report, format=fmt, dropped=converted.dropped)


def _convert(state: dict[str, torch.Tensor], source: str, num_stages: int,
             fmt: str | None) -> tuple[str, Converted]:
    try:
        fmt = fmt or detect_format(state)
        return fmt, convert(state, num_stages, fmt)
    except CheckpointError as exc:
        raise CheckpointError(f'{source}: {exc}') from None


def save_atomic(obj: dict, dst: str | os.PathLike, force: bool = False,
                file_format: str | None = None) -> None:
    """Save ``obj`` to ``dst`` through a temporary file and a rename (never a partial file).

    Args:
        file_format: ``'safetensors'`` writes ``obj['state_dict']`` with ``obj['meta']`` (as
            strings) for metadata; ``'pth'`` a torch pickle of ``obj``. By default
            safetensors when ``dst`` ends in ``.safetensors``.

    Raises:
        FileExistsError: ``dst`` exists and ``force`` is False.
    """
    if Path(dst).exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to overwrite it')
    file_format = file_format or ('safetensors' if str(dst).endswith('.safetensors') else 'pth')
    if file_format not in SAVE_FORMATS:
        raise ValueError(f'file_format must be one of {SAVE_FORMATS}, got {file_format!r}')
    if file_format == 'safetensors':
        _save_safetensors(obj['state_dict'], obj.get('meta', {}), str(dst))
        return
    write_atomic(obj, str(dst))


def _save_safetensors(state: dict[str, torch.Tensor], meta: dict, dst: str) -> None:
    from safetensors.torch import save_file
    tmp = f'{dst}.tmp-{os.getpid()}'
    try:
        save_file({k: v.detach().clone() for k, v in state.items()}, tmp,  # unshared storage
                  metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False,
                 num_stages: int = 4, fmt: str | None = None,
                 file_format: str | None = None) -> tuple[str, int]:
    """Read ``src`` (any source :func:`load_pretrained` takes), convert to our keys and write
    ``dst`` atomically (see :func:`save_atomic` for ``file_format``).

    Args:
        fmt: the source's layout, overriding detection (:data:`FORMATS`).

    Returns:
        ``(format, number of tensors written)``.
    """
    if Path(dst).exists() and not force:
        raise FileExistsError(f'{dst} exists; pass --force to overwrite it')
    state = extract_state_dict(read_source(src).obj)
    fmt, converted = _convert(state, str(src), num_stages, fmt)
    foreign = [k for k in converted.state if not _OUR_LAYOUT.match(k)]
    if foreign:
        raise CheckpointError(f'{src}: read as {fmt} format, {len(foreign)} tensors have no '
                              f'place in ours, e.g. {foreign[:5]} (another --from?)')
    meta = dict(source=str(src), format=fmt)
    save_atomic({'state_dict': converted.state, 'meta': meta}, dst, force, file_format)
    return fmt, len(converted.state)
