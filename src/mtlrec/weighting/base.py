"""How per-task losses become one loss. A strategy is an ``nn.Module`` so learned weights are parameters the
optimizer sees; the trainer only calls ``combine`` and ``weights``, never a strategy's name."""

from __future__ import annotations

import torch
from torch import nn

from mtlrec.registry import Registry
from mtlrec.tasks.base import Task


class WeightingStrategy(nn.Module):
    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.task_names = list(tasks)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """One scalar loss from ``task -> loss`` (may also act on shared gradients in subclasses)."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        """The per-task weights in use now, for logging and plots."""
        raise NotImplementedError

    def end_epoch(self, train_losses: dict[str, float]) -> None:
        """Hook for strategies that adapt between epochs."""


WEIGHTINGS: Registry[type[WeightingStrategy]] = Registry("weighting strategy")
