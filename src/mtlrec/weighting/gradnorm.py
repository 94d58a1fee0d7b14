"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018).

Learnable positive weights w_t (start at 1, kept summing to T) replace the config's fixed ``task.weight``. Each
step the model parameters get the gradient of L = sum_t w_t L_t, and the weights get the gradient of the
GradNorm loss only (not of L):

    G_t = ||grad_W w_t L_t||  on W = the last shared layer,    Ltilde_t = L_t / L_t(0),
    r_t = Ltilde_t / mean_k Ltilde_k,    L_grad = sum_t |G_t - [mean_k G_k * r_t^alpha]|   ([.] = constant)

Since w_t is a scalar, G_t = w_t * ||grad_W L_t||: the norms need one ``autograd.grad`` per task from the heads
down to W only (no ``create_graph``), and the GradNorm gradient in w is exact. After the optimizer step the
weights are clamped positive and renormalised to sum T. L_t(0) is each task's first non-zero loss. A task whose
loss does not reach W (e.g. a head that reads only the item representation) cannot be balanced there: it is left
out of both means and of L_grad, and its weight changes only by the renormalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlrec.tasks.base import Task
from mtlrec.weighting.base import WEIGHTINGS, WeightingContext, WeightingStrategy


@WEIGHTINGS.register("gradnorm")
class GradNorm(WeightingStrategy):
    def __init__(self, tasks: dict[str, Task], alpha: float = 1.5) -> None:
        super().__init__(tasks)
        self.alpha = alpha
        self.task_weights = nn.Parameter(torch.ones(len(tasks)))  # w_t, in task order
        self.register_buffer("initial", torch.zeros(len(tasks)))  # L_t(0); 0 until a task's first non-zero loss

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = dict(zip(self.task_names, self.task_weights.detach(), strict=True))
        return sum(weights[name] * losses[name] for name in self.task_names)  # type: ignore[return-value]

    def backward(self, losses: dict[str, torch.Tensor], ctx: WeightingContext) -> torch.Tensor:
        per_task = [losses[name] for name in self.task_names]
        norms = torch.stack([_grad_norm(loss, ctx.last_shared) for loss in per_task]).to(self.task_weights)
        current = torch.stack([loss.detach() for loss in per_task]).to(self.task_weights)
        self.initial = torch.where(self.initial > 0, self.initial, current)
        total = self.combine(losses)
        total.backward()  # model gradients of L; the weights enter it detached
        reached = norms > 0
        if reached.any():
            grads = self.task_weights * norms  # G_t, differentiable in w only
            ratio = current / self.initial.clamp_min(1e-12)  # Ltilde_t (0 for a task with no loss yet)
            ratio = ratio / ratio[reached].mean().clamp_min(1e-12)  # r_t
            target = (grads[reached].mean() * ratio**self.alpha).detach()
            gradnorm_loss = (grads - target).abs()[reached].sum()
            (self.task_weights.grad,) = torch.autograd.grad(gradnorm_loss, self.task_weights)
        return total.detach()

    @torch.no_grad()
    def after_step(self) -> None:
        self.task_weights.clamp_(min=1e-6)
        self.task_weights.mul_(len(self.task_names) / self.task_weights.sum())

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.task_weights.detach().tolist(), strict=True))


def _grad_norm(loss: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    """||grad_params loss||, 0 where the loss does not reach ``params``; the graph is kept for the full backward."""
    if not loss.requires_grad:
        return loss.new_zeros(())
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    flat = [g.reshape(-1) for g in grads if g is not None]
    return torch.linalg.vector_norm(torch.cat(flat)) if flat else loss.new_zeros(())
