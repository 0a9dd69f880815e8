"""Pure tensor functions for (shifted) window attention.

Maps are channel-last, ``(B, H, W, C)``. Padding, shift and masks are decided per call from
the actual map size, never from a nominal image size fixed at construction.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The additive mask value of the official code for token pairs in different shifted regions.
MASKED = -100.0


def window_grid(size: tuple[int, int], window: tuple[int, int],
                shift: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the padded size and the effective shift for a map.

    The map is padded right/bottom to a multiple of the window. Along a dimension whose
    padded size is not larger than the window, one window covers it and there is no shift
    (what the official models do at their pre-training size). Integer arithmetic only, no
    branch: under ``torch.export`` the sizes are symbolic and the decision stays in the graph.

    Args:
        size: ``(H, W)`` of the map.
        window: ``(Wh, Ww)``.
        shift: requested ``(Sh, Sw)``, usually ``window // 2`` in odd blocks, else 0.

    Returns:
        ``((Hp, Wp), (Sh, Sw))``.
    """
    counts = tuple((s + w - 1) // w for s, w in zip(size, window))  # windows per dimension
    padded = tuple(n * w for n, w in zip(counts, window))
    effective = tuple(s * (1 - 1 // n) for s, n in zip(shift, counts))  # 1 - 1 // n: n > 1
    return padded, effective  # type: ignore[return-value]


def known_zero(*sizes: int) -> bool:
    """Whether every size is the Python int 0.

    Sizes that depend on an input dimension exported as dynamic are symbolic under
    ``torch.export`` and never known; the caller then takes its general path (pad by an
    amount, roll by a shift, mask) for every value, including 0, which gives the same numbers
    as the shortcut.
    """
    return all(isinstance(s, int) and s == 0 for s in sizes)


def pad_to(x: torch.Tensor, padded: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``(B, H, W, C)`` right/bottom to ``(B, Hp, Wp, C)`` (no copy if already there)."""
    pad_h, pad_w = padded[0] - x.shape[1], padded[1] - x.shape[2]
    if known_zero(pad_h, pad_w):
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h))


def cyclic_shift(x: torch.Tensor, shifts: tuple[int, int], dims: tuple[int, int] = (1, 2)
                 ) -> torch.Tensor:
    """``torch.roll(x, shifts, dims)``; shifts that are symbolic (``torch.export`` with
    dynamic sizes) roll by :func:`roll_by_gather`, because ONNX export cannot translate
    ``aten::roll`` with a shift computed in the graph."""
    if all(isinstance(s, int) for s in shifts):
        return torch.roll(x, shifts=shifts, dims=dims)
    return roll_by_gather(x, shifts, dims)


def roll_by_gather(x: torch.Tensor, shifts: tuple[int, int], dims: tuple[int, int]
                   ) -> torch.Tensor:
    """``torch.roll`` as one ``index_select`` per dimension, ``out[i] = x[(i - s) mod n]``,
    for ``|s| <= n``; the wrap-around is a comparison rather than ``%``, which the ONNX
    exporter translates only for constant divisors."""
    for shift, dim in zip(shifts, dims):
        n = x.shape[dim]
        index = torch.arange(n, device=x.device) - shift
        index = torch.where(index < 0, index + n, index)
        index = torch.where(index >= n, index - n, index)
        x = x.index_select(dim, index)
    return x


def contiguous_copy(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy, always. ``reshape`` and ``contiguous`` would skip the copy when the
    strides allow it (a single window along a dimension), a size-dependent decision that
    torch.export freezes at the example's sizes."""
    return x.clone(memory_format=torch.contiguous_format)


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Split ``(B, Hp, Wp, C)`` into ``(B * nW, Wh * Ww, C)`` windows: image-major, then
    row-major over windows, so window ``i`` of every image meets ``shift_mask[i]``."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return contiguous_copy(x.permute(0, 1, 3, 2, 4, 5)).view(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int],
                   padded: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, Wh * Ww, C)`` -> ``(B, Hp, Wp, C)``."""
    wh, ww = window
    hp, wp = padded
    c = windows.shape[-1]
    x = windows.view(-1, hp // wh, wp // ww, wh, ww, c)
    return contiguous_copy(x.permute(0, 1, 3, 2, 4, 5)).view(-1, hp, wp, c)


def shift_region_ids(padded: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Region id of each row (or column) of a padded, cyclically shifted map.

    After ``roll(-shift)``, the last ``window`` positions mix two regions that were not
    neighbours in the image: ``[Hp - window, Hp - shift)`` and ``[Hp - shift, Hp)``. With
    ``shift = 0`` the id is constant inside every window (``Hp - window`` is a window
    boundary), so the mask built from it is zero.
    """
    idx = torch.arange(padded, device=device)
    return (idx >= padded - window).long() + (idx >= padded - shift).long()


def shift_attention_mask(padded: tuple[int, int], window: tuple[int, int],
                         shift: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Additive mask that keeps attention inside the regions of a shifted window.

    Returns:
        ``(nW, N, N)`` float tensor with 0 for pairs in the same region and ``MASKED``
        elsewhere, where ``nW = (Hp / Wh) * (Wp / Ww)`` and ``N = Wh * Ww``.
    """
    (wh, ww), (nh, nw) = window, (padded[0] // window[0], padded[1] // window[1])
    rows = shift_region_ids(padded[0], wh, shift[0], device).view(nh, 1, wh, 1)
    cols = shift_region_ids(padded[1], ww, shift[1], device).view(1, nw, 1, ww)
    ids = (rows * 3 + cols).view(nh * nw, wh * ww)  # (nW, N) in window_partition's order
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill_(~same, MASKED)


def relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    """Index into a ``((2Wh - 1) * (2Ww - 1), heads)`` table for every token pair: ``(N, N)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]),
                                        indexing='ij')).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2)
    rel[:, :, 0] += window[0] - 1
    rel[:, :, 1] += window[1] - 1
    return rel[:, :, 0] * (2 * window[1] - 1) + rel[:, :, 1]


def log_cpb_coordinates(window: tuple[int, int], pretrained_window: tuple[int, int],
                        device: torch.device | None = None) -> torch.Tensor:
    """Log-spaced relative coordinates fed to the continuous position bias MLP (SwinV2 3.3).

    Offsets are normalised by ``pretrained_window - 1`` (or ``window - 1`` when no pretrained
    window is given), so a window-8 model fine-tuned at window 16 sees the same coordinate
    range it was trained on, extended beyond it; then ``sign(x) * log2(1 + 8|x|) / log2(8)``.

    Returns:
        ``((2Wh - 1) * (2Ww - 1), 2)`` float32 table, row-major like :func:`relative_position_index`.
    """
    axes = []
    for size, pretrained in zip(window, pretrained_window):
        norm = (pretrained if pretrained > 0 else size) - 1
        axes.append(torch.arange(-(size - 1), size, dtype=torch.float32, device=device)
                    / max(norm, 1))
    table = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.view(-1, 2)
