"""Recognise a Swin checkpoint's key layout and rename it to ours.

Layouts (after :func:`extract_state_dict` has unwrapped containers and a ``backbone.`` or
``module.`` prefix):

=================  ===========================================================================
``official``       Microsoft's releases: ``layers.{i}.blocks.{j}...``, stage ``i``'s patch
                   merging under ``layers.{i}.downsample``, a final ``norm``, a ``head``.
``timm``           timm >= 0.9 (pickles and hub ``model.safetensors``): the same names, but
                   stage ``i``'s merging under ``layers.{i+1}.downsample``; ``head.fc``.
``mmdet``          MMDetection / MMSegmentation's ``SwinTransformer`` and mmpretrain's V1
                   (``attn.w_msa``, ``ffn.layers``, merging weights and norm in ``nn.Unfold``
                   channel order).
``mmpretrain``     mmpretrain's ``SwinTransformerV2``: the mmdet names, but stage ``i``'s
                   merging at the start of stage ``i + 1`` and only its reduction in
                   ``nn.Unfold`` order (its norm follows the reduction).
``huggingface``    transformers' ``Swin*`` / ``Swinv2*`` models, backbones and UperNet
                   (``embeddings``, ``encoder.layers``, separate query / key / value,
                   ``hidden_states_norms.stage{k}`` as output norms), files of transformers 4
                   and 5 (whose modules rename V1's attention, but whose files do not).
``torchvision``    ``swin_t`` / ``swin_v2_t``...: ``features.{k}`` alternating stages and
                   mergings, a final ``norm``, a ``head``.
``swin_backbone``  ours: ``stages.{i}...``, ``norm{i}``.
=================  ===========================================================================
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .read import CheckpointError

FORMATS = ('official', 'timm', 'mmdet', 'mmpretrain', 'huggingface', 'torchvision',
           'swin_backbone')
# Buffers derived from the window at construction; ours are non-persistent.
_DERIVED = re.compile(r'(relative_position_index|relative_coords_table|attn_mask|k_bias)$')
# Classifier heads and poolers of every layout.
_HEAD = re.compile(r'^(head|classifier|pooler|fc)\.')
_HF_PREFIX = re.compile(r'^(swinv2|swin)\.(?=embeddings\.|encoder\.|layernorm\.)')


@dataclass
class Converted:
    """A checkpoint renamed to our keys.

    Attributes:
        state: our key -> tensor.
        origins: our key -> the checkpoint key(s) it came from (for messages).
        dropped: checkpoint keys left out on purpose: classifier heads, window-derived
            buffers, and tensors the layout holds but never uses.
    """
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def put(self, key: str, value: torch.Tensor, origin: str) -> None:
        if key in self.state:
            raise CheckpointError(f'{origin} and {self.origins[key]} both map to {key}')
        self.state[key], self.origins[key] = value, origin


def extract_state_dict(obj: dict, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint: unwraps containers and strips prefixes.

    Args:
        obj: as returned by :func:`~swin_backbone.checkpoint.read_checkpoint`.
        prefix: keep only keys under this prefix (stripped). By default ``backbone.`` when
            present (full detector / segmentor checkpoints, Hugging Face UperNet), and
            ``module.`` (DDP) is dropped.
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
    if any(re.match(r'((swinv2|swin)\.)?(encoder\.layers|embeddings\.patch_embeddings)\.', k)
           for k in keys):
        return 'huggingface'
    if any(re.match(r'features\.\d+\.', k) for k in keys):
        return 'torchvision'
    if any(k.startswith('stages.') for k in keys):
        if not any('.attn.w_msa.' in k or '.ffn.layers.' in k for k in keys):
            return 'swin_backbone'
        is_v2 = any(re.search(r'\.attn\.w_msa\.(logit_scale|cpb_mlp\.)', k) for k in keys)
        return 'mmpretrain' if is_v2 else 'mmdet'
    if any(k.startswith('layers.') for k in keys):
        has_first_merge = any(k.startswith('layers.0.downsample.') for k in keys)
        has_later_merge = any(re.match(r'layers\.[1-9]\d*\.downsample\.', k) for k in keys)
        return 'timm' if has_later_merge and not has_first_merge else 'official'
    raise CheckpointError('no Swin backbone weights found (no keys under layers., stages., '
                          f'features., encoder.layers. or backbone.); first keys: {keys[:5]}')


def checkpoint_version(state: dict[str, torch.Tensor]) -> int:
    """2 when the checkpoint has V2's log-CPB MLP, 1 when it has V1's bias tables, else 0."""
    if any('cpb_mlp.' in k or 'continuous_position_bias_mlp.' in k for k in state):
        return 2
    return 1 if any(k.endswith('relative_position_bias_table') for k in state) else 0


def convert_state_dict(state: dict[str, torch.Tensor], num_stages: int = 4,
                       fmt: str | None = None) -> dict[str, torch.Tensor]:
    """Rename a recognised checkpoint's keys to ours (see :func:`convert`)."""
    return convert(state, num_stages, fmt).state


def convert(state: dict[str, torch.Tensor], num_stages: int = 4,
            fmt: str | None = None) -> Converted:
    """Rename a checkpoint of layout ``fmt`` (detected by default) to our keys.

    Classifier heads and window-derived buffers are dropped (ours are rebuilt at
    construction) and listed in ``dropped``; keys no rule knows keep their name, so loading
    reports them as unexpected.
    """
    fmt = fmt or detect_format(state)
    if fmt not in FORMATS:
        raise CheckpointError(f'unknown checkpoint format {fmt!r}; known: {FORMATS}')
    out = Converted()
    kept = {}
    for key, value in state.items():
        if _DERIVED.search(key) or _HEAD.match(key):
            out.dropped.append(key)
        else:
            kept[key] = value
    _CONVERTERS[fmt](kept, out, num_stages)
    return out


def _rename(pairs: list[tuple[str, str]], key: str) -> str:
    for pattern, replacement in pairs:
        key = re.sub(pattern, replacement, key)
    return key


def _shift_merge_down(key: str, prefix: str) -> str:
    """``{prefix}.{i}.downsample.`` -> ``{prefix}.{i-1}.downsample.``: layouts that merge at
    the start of the next stage."""
    return re.sub(rf'^{prefix}\.(\d+)\.downsample\.',
                  lambda m: f'{prefix}.{int(m.group(1)) - 1}.downsample.', key)


def _unfold_to_official(t: torch.Tensor) -> torch.Tensor:
    """Reorder a patch-merging tensor from ``nn.Unfold``'s channel order (mmcv / mmdet /
    mmpretrain) to the official ``(x0, x1, x2, x3)`` concatenation."""
    perm = [0, 2, 1, 3]  # unfold's (dh, dw) order -> official (x0, x1, x2, x3); self-inverse
    if t.ndim == 2:
        out, inp = t.shape
        return t.reshape(out, inp // 4, 4).transpose(1, 2)[:, perm].reshape(out, inp)
    return t.reshape(-1, 4).transpose(0, 1)[perm].reshape(-1)


def _official(state: dict, out: Converted, num_stages: int, merge_at_next: bool = False) -> None:
    for key, value in state.items():
        new = _shift_merge_down(key, 'layers') if merge_at_next else key
        new = _rename([(r'^layers\.', 'stages.'), (r'^norm\.', f'norm{num_stages - 1}.')], new)
        out.put(new, value, key)


def _timm(state: dict, out: Converted, num_stages: int) -> None:
    _official(state, out, num_stages, merge_at_next=True)


_MM_NAMES = [(r'^patch_embed\.projection\.', 'patch_embed.proj.'), (r'\.attn\.w_msa\.', '.attn.'),
             (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'), (r'\.ffn\.layers\.1\.', '.mlp.fc2.')]


def _mmdet(state: dict, out: Converted, num_stages: int) -> None:
    for key, value in state.items():
        if '.downsample.' in key:  # V1: the 4C norm precedes the reduction; both reordered
            value = _unfold_to_official(value)
        out.put(_rename(_MM_NAMES, key), value, key)


def _mmpretrain(state: dict, out: Converted, num_stages: int) -> None:
    for key, value in state.items():
        if '.downsample.reduction.' in key:  # V2: the 2C norm follows the reduction
            value = _unfold_to_official(value)
        out.put(_rename(_MM_NAMES, _shift_merge_down(key, 'stages')), value, key)


_HF_BLOCK = r'^encoder\.layers\.(\d+)\.blocks\.(\d+)\.'
_HF_NAMES = [
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^embeddings\.norm\.', 'patch_embed.norm.'),
    (r'^encoder\.layers\.(\d+)\.downsample\.', r'stages.\1.downsample.'),
    (r'^hidden_states_norms\.stage(\d+)\.', lambda m: f'norm{int(m.group(1)) - 1}.'),
    (_HF_BLOCK, r'stages.\1.blocks.\2.'),
    (r'\.layernorm_before\.', '.norm1.'), (r'\.layernorm_after\.', '.norm2.'),
    # transformers 4 names (every file on the Hub), then transformers 5's V1 module names.
    (r'\.attention\.self\.relative_position_bias_table$', '.attn.relative_position_bias_table'),
    (r'\.attention\.relative_position_bias\.relative_position_bias_table$',
     '.attn.relative_position_bias_table'),
    (r'\.attention\.self\.logit_scale$', '.attn.logit_scale'),
    (r'\.attention\.self\.continuous_position_bias_mlp\.', '.attn.cpb_mlp.'),
    (r'\.attention\.(output\.dense|o_proj)\.', '.attn.proj.'),
    (r'\.intermediate\.dense\.', '.mlp.fc1.'), (r'\.output\.dense\.', '.mlp.fc2.'),
]
# Query / key / value projections, both spellings: their rows are official qkv's thirds.
_HF_QKV = re.compile(_HF_BLOCK + r'attention\.(?:self\.(query|key|value)|([qkv])_proj)\.'
                     r'(weight|bias)$')


def _huggingface(state: dict, out: Converted, num_stages: int) -> None:
    raw = {_HF_PREFIX.sub('', k): k for k in state}  # names as in the file, for messages
    state = {k: state[v] for k, v in raw.items()}
    has_stage_norms = any(k.startswith('hidden_states_norms.') for k in state)
    projections: dict[tuple[str, str, str], dict[str, str]] = {}
    for key, value in state.items():
        match = _HF_QKV.match(key)
        if match:
            stage, block, name, short, kind = match.groups()
            part = name or {'q': 'query', 'k': 'key', 'v': 'value'}[short]
            projections.setdefault((stage, block, kind), {})[part] = key
        elif key.startswith('layernorm.'):
            if has_stage_norms:  # a backbone's unused classification norm
                out.dropped.append(raw[key])
            else:
                out.put(key.replace('layernorm.', f'norm{num_stages - 1}.'), value, raw[key])
        else:
            out.put(_rename(_HF_NAMES, key), value, raw[key])
    for (stage, block, kind), parts in projections.items():
        prefix = f'stages.{stage}.blocks.{block}.attn.'
        if kind == 'bias' and 'key' not in parts:  # V2: no key bias
            for part, name in (('query', 'q_bias'), ('value', 'v_bias')):
                if part in parts:
                    out.put(prefix + name, state[parts[part]], raw[parts[part]])
            continue
        tensors = {raw[k]: state[k] for k in parts.values()}
        _put_concatenated(out, prefix + f'qkv.{kind}', tensors,
                          [raw.get(parts.get(p)) for p in ('query', 'key', 'value')])


def _put_concatenated(out: Converted, key: str, tensors: dict[str, torch.Tensor],
                      sources: list[str | None]) -> None:
    """Stack the official ``qkv`` from three projections that must agree in shape."""
    present = [s for s in sources if s is not None]
    if len(present) != 3:
        raise CheckpointError(f'{key}: query, key and value are needed together; found only '
                              f'{present}')
    shapes = {s: tuple(tensors[s].shape) for s in present}
    if len(set(shapes.values())) != 1:
        raise CheckpointError(f'{key}: projections of different shapes: {shapes}')
    out.put(key, torch.cat([tensors[s] for s in present]), ' + '.join(present))


def _torchvision(state: dict, out: Converted, num_stages: int) -> None:
    is_v2 = checkpoint_version(state) == 2
    for key, value in state.items():
        match = re.match(r'^features\.(\d+)\.(.*)$', key)
        if key.startswith('norm.'):
            out.put(key.replace('norm.', f'norm{num_stages - 1}.'), value, key)
            continue
        if match is None:
            out.put(key, value, key)
            continue
        index, rest = int(match.group(1)), match.group(2)
        if index == 0:  # Sequential(Conv2d, Permute, LayerNorm)
            new = _rename([(r'^0\.', 'patch_embed.proj.'), (r'^2\.', 'patch_embed.norm.')], rest)
        elif index % 2 == 0:  # the merging after stage index / 2 - 1
            new = f'stages.{index // 2 - 1}.downsample.{rest}'
        else:  # the blocks of stage (index - 1) / 2
            new = f'stages.{(index - 1) // 2}.blocks.' + _rename(
                [(r'\.mlp\.0\.', '.mlp.fc1.'), (r'\.mlp\.3\.', '.mlp.fc2.')], rest)
        if is_v2 and new.endswith('.attn.qkv.bias'):
            _split_v2_qkv_bias(out, new, value, key)
        else:
            out.put(new, value, key)


def _split_v2_qkv_bias(out: Converted, new: str, value: torch.Tensor, key: str) -> None:
    """torchvision's V2 keeps a full qkv bias and zeroes its key third in every forward:
    the query and value thirds are official ``q_bias`` / ``v_bias``; the key third is
    unused."""
    q, _, v = value.chunk(3)
    prefix = new[:-len('qkv.bias')]
    out.put(prefix + 'q_bias', q, f'{key}[:C]')
    out.put(prefix + 'v_bias', v, f'{key}[2C:]')
    out.dropped.append(f'{key}[C:2C]')


def _swin_backbone(state: dict, out: Converted, num_stages: int) -> None:
    for key, value in state.items():
        out.put(key, value, key)


_CONVERTERS = dict(official=_official, timm=_timm, mmdet=_mmdet, mmpretrain=_mmpretrain,
                   huggingface=_huggingface, torchvision=_torchvision,
                   swin_backbone=_swin_backbone)
