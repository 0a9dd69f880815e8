"""Generated checkpoints in the official Microsoft key layout (random tensors), for tests
and benchmarks: no weights can be downloaded here.

Names and shapes follow microsoft/Swin-Transformer's ``swin_transformer.py`` and
``swin_transformer_v2.py`` state dicts, including the buffers they save
(``relative_position_index``, ``relative_coords_table``, ``attn_mask``) and the classifier.
"""
from __future__ import annotations

import torch

TINY = dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24])


def _official_index(window: int) -> torch.Tensor:
    """The saved ``relative_position_index`` buffer, computed as the official code does."""
    coords = torch.stack(torch.meshgrid([torch.arange(window)] * 2, indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def official_state_dict(version: int, window: int, arch: dict = TINY, num_classes: int = 1000,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ``{'model': state_dict}``-style state dict with official names and shapes.

    Post-norm weights are random (not the zero init) so that every tensor matters.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def linear(out: int, fan_in: int, gain: float) -> torch.Tensor:
        # Scaled by fan-in so activations and attention logits stay O(1) in every stage,
        # where fp32 comparisons between implementations are meaningful at 1e-4.
        return rand(out, fan_in, std=gain / fan_in**0.5)

    def norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f'{prefix}.weight': 1 + rand(dim, std=0.1), f'{prefix}.bias': rand(dim)}

    c0, n = arch['embed_dims'], window * window
    sd = {'patch_embed.proj.weight': rand(c0, 3, 4, 4, std=0.2),
          'patch_embed.proj.bias': rand(c0), **norm('patch_embed.norm', c0)}
    for i, (depth, heads) in enumerate(zip(arch['depths'], arch['num_heads'])):
        c = c0 * 2**i
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}'
            sd.update(norm(f'{p}.norm1', c))
            sd.update(norm(f'{p}.norm2', c))
            sd[f'{p}.attn.qkv.weight'] = linear(3 * c, c, 0.7)
            sd[f'{p}.attn.proj.weight'] = linear(c, c, 0.5)
            sd[f'{p}.attn.proj.bias'] = rand(c)
            sd[f'{p}.attn.relative_position_index'] = _official_index(window)
            if version == 1:
                sd[f'{p}.attn.qkv.bias'] = rand(3 * c)
                sd[f'{p}.attn.relative_position_bias_table'] = rand((2 * window - 1)**2, heads,
                                                                    std=0.5)
            else:
                sd[f'{p}.attn.q_bias'] = rand(c)
                sd[f'{p}.attn.v_bias'] = rand(c)
                sd[f'{p}.attn.logit_scale'] = torch.log(10 * torch.ones(heads, 1, 1)) + rand(
                    heads, 1, 1, std=0.3)
                sd[f'{p}.attn.cpb_mlp.0.weight'] = rand(512, 2, std=0.5)
                sd[f'{p}.attn.cpb_mlp.0.bias'] = rand(512, std=0.5)
                sd[f'{p}.attn.cpb_mlp.2.weight'] = rand(heads, 512, std=0.1)
                sd[f'{p}.attn.relative_coords_table'] = torch.zeros(1, 2 * window - 1,
                                                                    2 * window - 1, 2)
            sd[f'{p}.mlp.fc1.weight'] = linear(4 * c, c, 1.0)
            sd[f'{p}.mlp.fc1.bias'] = rand(4 * c)
            sd[f'{p}.mlp.fc2.weight'] = linear(c, 4 * c, 0.3)
            sd[f'{p}.mlp.fc2.bias'] = rand(c)
            if j % 2 == 1:
                side = max(224 // 4 // 2**i // window, 1)  # windows per side at 224x224
                sd[f'{p}.attn_mask'] = torch.zeros(side * side, n, n)
        if i < len(arch['depths']) - 1:
            sd[f'layers.{i}.downsample.reduction.weight'] = linear(2 * c, 4 * c, 0.5)
            sd.update(norm(f'layers.{i}.downsample.norm', 2 * c if version == 2 else 4 * c))
    c_last = c0 * 2**(len(arch['depths']) - 1)
    sd.update(norm('norm', c_last))
    sd['head.weight'] = rand(num_classes, c_last)
    sd['head.bias'] = rand(num_classes)
    return sd


def save_official(path, version: int, window: int, **kwargs) -> dict[str, torch.Tensor]:
    """Write ``{'model': state_dict}`` as the official releases do; return the state dict."""
    sd = official_state_dict(version, window, **kwargs)
    torch.save({'model': sd}, path)
    return sd
