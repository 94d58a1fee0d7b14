"""How per-task losses become one update. A strategy is an ``nn.Module`` so learned weights are parameters the
optimizer sees; the trainer only calls ``backward``, ``after_step``, ``end_epoch`` and ``weights``, never a
strategy's name."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtlrec.registry import Registry
from mtlrec.tasks.base import Task


@dataclass(frozen=True)
class WeightingContext:
    """What gradient-based strategies may act on."""

    shared: list[nn.Parameter]  # parameters every task's loss reaches (encoders and shared layers)
    last_shared: list[nn.Parameter]  # the last shared layer, where GradNorm measures gradient norms


class WeightingStrategy(nn.Module):
    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.task_names = list(tasks)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """One scalar loss from ``task -> loss``."""
        raise NotImplementedError

    def backward(self, losses: dict[str, torch.Tensor], ctx: WeightingContext) -> torch.Tensor:
        """Fill ``.grad`` of every parameter for this step and return the combined loss (detached). Strategies
        that reshape gradients (PCGrad) or learn weights from them (GradNorm) override this."""
        total = self.combine(losses)
        total.backward()
        return total.detach()

    def after_step(self) -> None:
        """Called after the optimizer step (e.g. to renormalise learned weights)."""

    def end_epoch(self, train_losses: dict[str, float]) -> None:
        """Called with the epoch's mean task losses, for strategies that adapt between epochs."""

    def weights(self) -> dict[str, float]:
        """The per-task weights in use now, for logging and plots."""
        raise NotImplementedError


WEIGHTINGS: Registry[type[WeightingStrategy]] = Registry("weighting strategy")
