"""Next item: which item comes next after the user's history? A sampled softmax over the catalogue.

Score(user, item) = <P_u user, P_i item>, two task-specific projections of the shared user tower's and item
encoder's outputs, so catalogue scoring broadcasts like every other head. Each observed train interaction is a
row whose history ends right before it, so every position of every user's sequence is a next-item step (as in
SASRec, Kang & McAuley 2018, one step per row).

Loss: for each positive row, softmax cross-entropy over its group = the positive and the sampled negatives that
share its user representation (``PairRows.owner``), with the logQ correction of Yi et al. 2019 ("Sampling-Bias-
Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys): every logit s(u, i) of the group is
replaced by s(u, i) - log q(i), q the negative sampler's probability of drawing i, which makes the sampled
softmax an (asymptotically) unbiased estimate of the full softmax over the catalogue. The trainer's sampler is
uniform, so log q is one constant that cancels inside each group; a non-uniform sampler only has to set
``NextItemTask.sampling_log_prob``.

How the loss gets its groups: ``labels(rows)`` returns targets float64 [R, 2] = (owner row, log q(item)) per row
(float64 keeps row indexes exact) and a mask of rows whose owner is a positive. Row g is the target of group g:
positives own themselves (``NegativeSampler.rows``). The loss is the mean over groups; rows outside a labelled
group take part in no softmax.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, masked_mean

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows, TrainingData

OWNER, LOG_Q = 0, 1  # columns of the next_item targets


class NextItemHead(nn.Module):
    """Logit = <P_u user, P_i item> (reads the user tower and item encoder directly, not the shared layers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.user = nn.Linear(dim, dim, bias=False)
        self.item = nn.Linear(dim, dim, bias=False)

    def forward(self, f: Features) -> torch.Tensor:
        assert f.user is not None, "a pair-level head needs the user representation"
        return (self.user(f.user) * self.item(f.item)).sum(-1)  # [...] e.g. [R] or [B, 1, d] x [1, n, d] -> [B, n]


def sampled_softmax_loss(
    logits: torch.Tensor, owner: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-row cross-entropy of group ``owner[r]``'s target (row g of group g) against its group, [R].

    Only rows with ``mask`` enter the softmax; the value is meaningful at target rows (finite everywhere).
    """
    # logits [R], owner long [R] in [0, R), log_q [R], mask bool [R]
    z = logits - log_q.to(logits.dtype)  # [R] logQ-corrected logits
    keep = torch.nonzero(mask).squeeze(1)  # [K] rows inside some softmax
    zk, gk = z[keep], owner[keep]  # [K], [K]
    top = z.new_zeros(len(z)).scatter_reduce(0, gk, zk.detach(), "amax", include_self=False)  # [R] max per group
    total = z.new_zeros(len(z)).index_add(0, gk, torch.exp(zk - top[gk]))  # [R] sum of exp per group
    lse = top + torch.log(torch.where(total > 0, total, torch.ones_like(total)))  # [R] log-sum-exp (0 if empty)
    return lse[owner] - z  # [R] -log softmax of each row within its group


@TASKS.register("next_item")
class NextItemTask(Task):
    rankable = True
    sampling_log_prob: torch.Tensor | None = None  # [n_items] log q(item) of the negative sampler; None = no logQ

    def prepare(self, data: TrainingData) -> None:
        """The trainer's NegativeSampler is uniform over the catalogue (its rare redraws of a user's train items
        are ignored): log q = -log n_items for every item."""
        n_items = data.split.n_items
        self.sampling_log_prob = torch.full((n_items,), -math.log(n_items), dtype=torch.float64)

    def build_head(self, dims: HeadDims) -> nn.Module:
        return NextItemHead(dims.dim)

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        owner = np.arange(len(rows.items)) if rows.owner is None else rows.owner
        log_q = torch.zeros(len(rows.items), dtype=torch.float64)
        if self.sampling_log_prob is not None:
            log_q = self.sampling_log_prob[torch.from_numpy(rows.items)].double()
        targets = torch.stack([torch.from_numpy(owner).double(), log_q], dim=1)  # [R, 2] (OWNER, LOG_Q)
        return targets, torch.from_numpy(rows.positive[owner])  # mask: rows whose group has a positive

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        owner = targets[:, OWNER].long()  # [R]
        is_target = mask & (owner == torch.arange(len(owner), device=owner.device))  # [R] one row per group
        return masked_mean(sampled_softmax_loss(logits, owner, targets[:, LOG_Q], mask), is_target)

    def rank_score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """Softmax cross-entropy of each held-out item against the evaluator's uniform pair negatives (its full
        ranking metrics come from the evaluator when next_item is in ``eval.blend``)."""
        logits, rows = ctx.pair_outputs(stage)
        return {"sampled_ce": float(self.loss(logits[self.name], *self.labels(rows)))}
