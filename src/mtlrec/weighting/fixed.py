"""Fixed weights from the config: L = sum_t w_t * L_t (the design brief's weighted multi-task loss)."""

from __future__ import annotations

import torch

from mtlrec.tasks.base import Task
from mtlrec.weighting.base import WEIGHTINGS, WeightingStrategy


@WEIGHTINGS.register("fixed")
class FixedWeighting(WeightingStrategy):
    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__(tasks)
        self._weights = {name: task.weight for name, task in tasks.items()}

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self._weights[name] * loss for name, loss in losses.items())  # type: ignore[return-value]

    def weights(self) -> dict[str, float]:
        return dict(self._weights)
