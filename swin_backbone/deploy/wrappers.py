"""The exportable forms of OpenMMLab models: a plain ``tensor -> tensors`` module each.

Inputs are what the model's data preprocessor produces (normalised ``(B, 3, H, W)`` float
tensors, padded as it pads); normalisation and resizing stay with the caller, as in
MMSegmentation's and MMDetection's ``tensor`` mode.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['DetectorFeatures', 'SegmentorLogits']


class SegmentorLogits(nn.Module):
    """An MMSegmentation segmentor in ``tensor`` mode: ``(B, 3, H, W)`` -> the decode head's
    logits ``(B, num_classes, ceil(H / 4), ceil(W / 4))`` for UPerNet (before resizing to
    the input, which is the caller's)."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentor(x, mode='tensor')


class DetectorFeatures(nn.Module):
    """An MMDetection detector's ``extract_feat``: ``(B, 3, H, W)`` -> the neck's maps
    (FPN: one ``(B, C, H_l, W_l)`` tensor per level, strides 4 ... 64)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(x))
