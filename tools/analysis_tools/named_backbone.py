"""The unit the benchmark tools time: a named backbone and how to read its four maps."""
from __future__ import annotations

from typing import Callable

import torch


class Backbone:
    """A named model whose ``features(x)`` returns the four NCHW maps after our output norms."""

    def __init__(self, name: str, module: torch.nn.Module,
                 features: Callable[[torch.Tensor], list[torch.Tensor]]) -> None:
        self.name, self.module, self.features = name, module, features
