"""The windowed path against brute-force global attention with an explicit pair mask."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from swin_backbone.models.attention import CosineWindowAttention, unit_vectors
from swin_backbone.models.blocks import SwinBlock, SwinBlockV2, SwinStage
from swin_backbone.models.window import (log_cpb_coordinates, relative_position_index,
                                         roll_by_gather, window_grid)


def bias_table(attn) -> torch.Tensor:
    """``((2W - 1)^2, h)`` bias of every relative offset, row-major (V1: the learned table;
    V2: the log-CPB MLP on the log-spaced offsets, SwinV2 3.3)."""
    if not isinstance(attn, CosineWindowAttention):
        return attn.relative_position_bias_table
    w, p = attn.window_size, attn.pretrained_window_size
    coords = log_cpb_coordinates((w, w), (p, p)).to(attn.qkv.weight.dtype)
    return 16 * torch.sigmoid(attn.cpb_mlp(coords))


def scaled_qk(attn, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v ``(B, h, T, d)`` of all tokens ``x`` ``(B, T, C)`` and the scale of ``q k^T``."""
    b, t, c = x.shape
    bias = attn.qkv_bias() if isinstance(attn, CosineWindowAttention) else attn.qkv.bias
    qkv = F.linear(x, attn.qkv.weight, bias).view(b, t, 3, attn.num_heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    if isinstance(attn, CosineWindowAttention):
        return unit_vectors(q) * attn.clamped_logit_scale().to(q.dtype), unit_vectors(k), v, 1.
    return q, k, v, (c // attn.num_heads) ** -0.5


def brute_force_attention(block, x: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """Global attention over all padded tokens where a pair may attend only if, after the
    cyclic shift, both tokens fall in the same window and neither crossed the wrap-around
    alone. Written from the paper's definition, independent of the windowed code.

    Args:
        x: ``(B, H, W, C)`` block input after ``norm1`` (V1) or the raw input (V2).
    """
    attn = block.attn
    b, h, w, c = x.shape
    win = block.window_size
    hp, wp = -(-h // win) * win, -(-w // win) * win
    xp = F.pad(x, (0, 0, 0, wp - w, 0, hp - h)).reshape(b, hp * wp, c)
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing='ij')
    rows, cols = rows.flatten(), cols.flatten()
    # Position of each token after roll(-shift): window id, and whether it wrapped around.
    rr, rc = (rows - shift[0]) % hp, (cols - shift[1]) % wp
    window_id = (rr // win) * (wp // win) + rc // win
    wrapped = (rows < shift[0]).long() * 2 + (cols < shift[1]).long()
    allowed = (window_id[:, None] == window_id[None]) & (wrapped[:, None] == wrapped[None])

    q, k, v, scale = scaled_qk(attn, xp)
    logits = (q @ k.transpose(-2, -1)) * scale
    # Relative offsets within a window, clamped for pairs that are masked anyway.
    dr = (rr[:, None] - rr[None]).clamp(-win + 1, win - 1)
    dc = (rc[:, None] - rc[None]).clamp(-win + 1, win - 1)
    table = bias_table(attn)
    bias = table[(dr + win - 1) * (2 * win - 1) + (dc + win - 1)].permute(2, 0, 1)
    logits = (logits + bias).masked_fill(~allowed, float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, hp * wp, c)
    return attn.proj(out).view(b, hp, wp, c)[:, :h, :w]


@pytest.mark.parametrize('v2', [False, True], ids=['v1', 'v2'])
@pytest.mark.parametrize('size', [(13, 18), (8, 11), (16, 16), (3, 18)])
def test_windowed_equals_brute_force(v2, size):
    blocks = [SwinBlockV2(32, 2, 4, shifted=j == 1, pretrained_window_size=3) if v2
              else SwinBlock(32, 2, 4, shifted=j == 1) for j in range(2)]
    stage = SwinStage(blocks, window_size=4).double().eval()
    for block in stage.blocks:  # make the bias matter
        for p in block.attn.parameters():
            torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, *size, 32, dtype=torch.float64)
    regular, shifted = stage.layouts(size, x.device)
    for block, layout in zip(stage.blocks, (regular, shifted)):
        with torch.no_grad():
            windowed = block.attend_in_windows(x, layout)
            reference = brute_force_attention(block, x, layout.shift)
        torch.testing.assert_close(windowed, reference, rtol=0, atol=1e-10)
    assert shifted.shift == (0 if size[0] <= 4 else 2, 2) and shifted.masks is not None


def test_no_shift_along_a_dimension_that_fits_one_window():
    padded, shift = window_grid((5, 30), (7, 7), (3, 3))
    assert padded == (7, 35) and shift == (0, 3)
    padded, shift = window_grid((7, 7), (7, 7), (3, 3))
    assert shift == (0, 0)


def test_relative_position_index_is_row_major_over_offsets():
    idx = relative_position_index((2, 3))
    # token 0 = (0, 0), token 5 = (1, 2): offset (-1, -2) -> (0, 0) after centring -> 0
    assert idx[0, 5] == 0 and idx[5, 0] == (2 * 2 - 2) * (2 * 3 - 1) + (2 * 3 - 2)
    assert idx.diagonal().unique().tolist() == [(2 - 1) * (2 * 3 - 1) + (3 - 1)]


@pytest.mark.parametrize('shifts', [(0, 0), (-3, -3), (3, 3), (-5, 2), (7, -7)])
def test_roll_by_gather_is_torch_roll(shifts) -> None:
    """The roll an exported graph takes (symbolic shifts) is torch.roll for every shift
    within the size, both signs and zero."""
    x = torch.randn(2, 7, 9, 3)
    assert torch.equal(roll_by_gather(x, shifts, (1, 2)), torch.roll(x, shifts, (1, 2)))


class _PairTensors(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the shape of every op output whose last two dims are ``(N, N)``, outside SDPA
    (whose kernel torch picks: before torch 2.3 the CPU one was the math path, which builds
    the attention weights of every window)."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens, self.shapes, self.in_sdpa = tokens, set(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if (not self.in_sdpa and isinstance(t, torch.Tensor)
                    and t.shape[-2:] == (self.tokens,) * 2):
                self.shapes.add(tuple(t.shape))
        return out


@pytest.mark.parametrize('accelerated', [False, True], ids=['reference', 'cpu layer'])
@pytest.mark.parametrize('cls', ['v1', 'v2'])
def test_no_tensor_grows_with_windows_times_pairs(cls: str, accelerated: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A shifted layout of 12 x 15 windows builds its masks and biases as ``(h, N, N)`` at
    most, never one per window (``(nW, N, N)`` or ``(nW, h, N, N)``): what SDPA is given."""
    from swin_backbone import SwinTransformer, SwinTransformerV2
    from swin_backbone.cpu import accelerate
    model = (SwinTransformerV2 if cls == 'v2' else SwinTransformer)(
        arch=dict(embed_dims=24, depths=[2], num_heads=[2]), window_size=4, out_indices=(0,))
    if accelerated:
        accelerate(model)
    x = torch.randn(2, 3, 4 * 48, 4 * 60)  # stage 0: 48 x 60 tokens, 12 x 15 windows
    record = _PairTensors(16)
    sdpa = F.scaled_dot_product_attention
    masks = []

    def recorded_sdpa(*args, **kwargs):
        masks.append(tuple(kwargs['attn_mask'].shape))
        record.in_sdpa += 1
        try:
            return sdpa(*args, **kwargs)
        finally:
            record.in_sdpa -= 1

    monkeypatch.setattr(F, 'scaled_dot_product_attention', recorded_sdpa)
    with torch.no_grad(), record:
        model.eval()(x)
        model(x)  # the CPU layer's second forward takes its caches
    # a regular block's one call and a shifted block's four (interior, column, row, corner)
    assert len(masks) == 2 * 5 and set(masks) == {(1, 2, 16, 16)}
    assert record.shapes and all(shape[:-2] in {(), (2,), (1, 2)} for shape in record.shapes), \
        record.shapes
