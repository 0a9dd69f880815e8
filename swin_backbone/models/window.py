"""Pure tensor functions for (shifted) window attention.

Maps are channel-last, ``(B, H, W, C)``. Padding, shift and masks are decided per call from
the actual map size, never from a nominal image size fixed at construction.
"""
from __future__ import annotations

import math
from collections.abc import Callable

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
    row-major over windows."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return contiguous_copy(x.permute(0, 1, 3, 2, 4, 5)).view(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int],
                   padded: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, Wh * Ww, C)`` -> ``(B, Hp, Wp, C)``."""
    batch = windows.shape[0] // (padded[0] // window[0] * (padded[1] // window[1]))
    x = windows_as_map(windows, window, (batch, *padded))
    return contiguous_copy(x).view(batch, padded[0], padded[1], windows.shape[-1])


def edge_masks(window: tuple[int, int], shift: tuple[int, int],
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The additive masks of a shifted layout's edge windows: bottom row, right column, corner.

    After ``roll(-shift)`` only the last window along a dimension holds two regions that were
    not neighbours in the image: its first ``window - shift`` rows (or columns) and its last
    ``shift``. Every other window holds one region and needs no mask, so a layout of any size
    needs these three ``(N, N)`` patterns, never one per window. With ``shift = 0`` along a
    dimension its pattern is zero.

    Returns:
        Three ``(N, N)`` float tensors, ``N = Wh * Ww``: 0 for pairs in the same region,
        ``MASKED`` elsewhere; for the windows of the last row (not the corner), of the last
        column (not the corner), and the corner.
    """
    (wh, ww), (sh, sw) = window, shift
    # Region of each row / column of a last window: 0 before the wrap-around, 1 after it.
    rows = (torch.arange(wh, device=device) >= wh - sh).long().view(wh, 1).expand(wh, ww)
    cols = (torch.arange(ww, device=device) >= ww - sw).long().view(1, ww).expand(wh, ww)
    masks = []
    for ids in (rows, cols, rows * 2 + cols):
        ids = ids.reshape(wh * ww)
        same = ids[:, None] == ids[None, :]
        masks.append(torch.zeros(same.shape, device=device).masked_fill_(~same, MASKED))
    return masks[0], masks[1], masks[2]


def attend_by_region(x: torch.Tensor, window: tuple[int, int],
                     attend: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                     masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Window attention over a shifted map, each group of windows with its own mask.

    The map splits into four regions: the interior windows (no mask), the last row, the last
    column and the corner (the three :func:`edge_masks`). Each region is partitioned and
    attended in one call whose ``(N, N)`` mask is broadcast over its windows, so no tensor
    grows with ``windows x N x N``. The results are put back together by concatenation.

    Args:
        x: ``(B, Hp, Wp, C)`` padded, cyclically shifted map, ``Hp, Wp`` window multiples.
        window: ``(Wh, Ww)``.
        attend: ``(b, N, C)`` windows and an ``(N, N)`` mask or None -> ``(b, N, C)``.
        masks: bottom row, right column and corner masks, each ``(N, N)``.

    Returns:
        ``(B, Hp, Wp, C)``.
    """
    b, hp, wp, c = x.shape
    wh, ww = window
    # split rather than slicing: its sizes stay the symbolic sizes given under torch.export
    top, bottom = x.split([hp - wh, wh], dim=1)
    regions = ((top, (None, masks[1])), (bottom, (masks[0], masks[2])))
    bands = []
    for band, band_masks in regions:
        row = []
        for part, mask in zip(band.split([wp - ww, ww], dim=2), band_masks):
            if known_zero(part.shape[1] * part.shape[2]):
                continue  # a single row (or column) of windows: the regions before it are empty
            out = attend(window_partition(part, window), mask)  # (B * windows, N, C)
            row.append(windows_as_map(out, window, (b, part.shape[1], part.shape[2])))
        if row:  # (B, rows of windows, Wh, columns of windows, Ww, C), contiguous
            bands.append(torch.cat(row, dim=3))
    return (bands[0] if len(bands) == 1 else torch.cat(bands, dim=1)).view(b, hp, wp, c)


def windows_as_map(windows: torch.Tensor, window: tuple[int, int],
                   size: tuple[int, int, int]) -> torch.Tensor:
    """``(B * nW, Wh * Ww, C)`` windows of a ``size = (B, Hp, Wp)`` map as the view
    ``(B, Hp / Wh, Wh, Wp / Ww, Ww, C)`` of it, whose contiguous copy is the map (the batch
    is given: a region of a map may hold no window)."""
    wh, ww = window
    x = windows.view(size[0], size[1] // wh, size[2] // ww, wh, ww, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5)


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
