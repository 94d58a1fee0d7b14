"""PCGrad, gradient surgery (Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020).

On the shared parameters, g_t is the gradient of w_t * L_t, with w_t the config's fixed ``task.weight``. Each
task, in a random order drawn per task from a seeded generator (so runs repeat), removes from its gradient the
component along every other task's original gradient it conflicts with:

    if g_t' . g_k < 0:   g_t' <- g_t' - (g_t' . g_k) / ||g_k||^2 * g_k

and the shared parameters get sum_t g_t'. The other parameters (heads) get their ordinary gradient of
sum_t w_t L_t. Cost: one backward pass per task and no more; a parameter a task's loss does not reach counts as
a zero gradient for that task.
"""

from __future__ import annotations

import torch

from mtlrec.tasks.base import Task
from mtlrec.weighting.base import WEIGHTINGS, WeightingContext, WeightingStrategy


@WEIGHTINGS.register("pcgrad")
class PCGrad(WeightingStrategy):
    def __init__(self, tasks: dict[str, Task], seed: int = 0) -> None:
        super().__init__(tasks)
        self._weights = {name: task.weight for name, task in tasks.items()}
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self._weights[name] * losses[name] for name in self.task_names)  # type: ignore[return-value]

    def backward(self, losses: dict[str, torch.Tensor], ctx: WeightingContext) -> torch.Tensor:
        shared = ctx.shared
        earlier = [p.grad for p in shared]  # keep any gradient accumulated before this call
        rows = []
        for i, name in enumerate(self.task_names):
            for p in shared:
                p.grad = None
            # accumulates the heads' gradients of sum_t w_t L_t across the passes; shared ones are read out
            (self._weights[name] * losses[name]).backward(retain_graph=i < len(self.task_names) - 1)
            rows.append(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in shared]))
        merged = _project(torch.stack(rows), self.generator).sum(0)  # [n_shared_values]
        for p, g, old in zip(shared, merged.split([p.numel() for p in shared]), earlier, strict=True):
            p.grad = g.view_as(p) if old is None else old + g.view_as(p)
        return self.combine(losses).detach()

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def get_extra_state(self) -> torch.Tensor:  # in state_dict(): a resumed run draws the same task orders
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _project(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad on task gradients [T, P]: each row projected off the original rows it conflicts with."""
    out = grads.clone()
    sq_norms = (grads * grads).sum(1)  # [T]
    for t in range(len(grads)):
        for k in torch.randperm(len(grads), generator=generator).tolist():
            if k == t:
                continue
            dot = out[t] @ grads[k]
            if dot < 0:  # a zero g_k has dot 0, so the division is safe
                out[t] -= dot / sq_norms[k] * grads[k]
    return out
