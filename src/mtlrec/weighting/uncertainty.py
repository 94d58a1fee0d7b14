"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics", CVPR 2018).

One learnable log-variance s_t = log sigma_t^2 per task, trained by the same optimizer as the model:

    L = sum_t exp(-s_t) * L_t + s_t

This is the common simplification (as in LibMTL) that drops the paper's 1/2 factors for regression tasks, so
every task, classification or regression, gets the same form; it only rescales the learned variances. A task
whose loss stays large learns a large s_t and so a small weight; at a fixed L_t the optimum is s_t = log L_t.
The config's fixed weights (``task.weight``) are replaced by exp(-s_t), which start at 1 (s_t = 0).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlrec.tasks.base import Task
from mtlrec.weighting.base import WEIGHTINGS, WeightingStrategy


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(WeightingStrategy):
    def __init__(self, tasks: dict[str, Task]) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks)))  # s_t, in task order

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        # indexing gives 0-dim tensors, which combine with losses on any device
        return sum(  # type: ignore[return-value]
            torch.exp(-s) * losses[name] + s for name, s in zip(self.task_names, self.log_vars, strict=True)
        )

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, torch.exp(-self.log_vars.detach()).tolist(), strict=True))
