"""Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019).

Weights change once per epoch, from how fast each task's loss fell over the last two epochs:

    r_t = L_t(e-1) / L_t(e-2),    w_t(e) = T * exp(r_t / tau) / sum_k exp(r_k / tau)

with L_t the mean training loss of an epoch (what the trainer passes to ``end_epoch``; keys that are not tasks,
such as "total", are ignored). w_t = 1 for the first two epochs, before two losses are known. A task whose loss
falls slowly (r_t near or above 1) gets more weight. The weights replace the config's fixed ``task.weight``.
"""

from __future__ import annotations

import torch

from mtlrec.tasks.base import Task
from mtlrec.weighting.base import WEIGHTINGS, WeightingStrategy


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(WeightingStrategy):
    def __init__(self, tasks: dict[str, Task], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        self.temperature = temperature
        self._history: list[torch.Tensor] = []  # mean task losses of the last two epochs, in task order
        self._weights = torch.ones(len(tasks))

    def end_epoch(self, train_losses: dict[str, float]) -> None:
        self._history = [*self._history, torch.tensor([train_losses[t] for t in self.task_names])][-2:]
        if len(self._history) == 2:
            ratio = self._history[1] / self._history[0].clamp_min(1e-12)  # r_t; guard a task with zero loss
            self._weights = len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.weights()
        return sum(weights[name] * losses[name] for name in self.task_names)  # type: ignore[return-value]

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._weights.tolist(), strict=True))

    def get_extra_state(self) -> dict[str, object]:  # in state_dict(): a resumed run goes on with these weights
        return {"weights": self._weights, "history": list(self._history)}

    def set_extra_state(self, state: dict[str, object]) -> None:
        self._weights, self._history = state["weights"], list(state["history"])  # type: ignore[arg-type]
