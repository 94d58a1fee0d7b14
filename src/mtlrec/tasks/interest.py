"""User interest: did the user interact with the item? Observed train pairs against sampled negatives."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.eval import metrics
from mtlrec.models.architectures import is_catalogue
from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, masked_mean

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows


class InterestHead(nn.Module):
    """Logit = <user, item> (read from the input directly) + a linear read-out of the shared layers."""

    def __init__(self, shared: int) -> None:
        super().__init__()
        self.out = nn.Linear(shared, 1)

    def forward(self, f: Features) -> torch.Tensor:
        assert f.user is not None and f.shared is not None, "a pair-level head needs user and shared features"
        if is_catalogue(f.user, f.item):  # <user, item> for a whole catalogue: a matmul, no [B, n, dim] product
            dot = torch.matmul(f.item, f.user.transpose(1, 2)).squeeze(-1)  # [1, n, d] @ [B, d, 1] -> [B, n]
        else:
            dot = (f.user * f.item).sum(-1)  # [...]
        return dot + self.out(f.shared).squeeze(-1)  # [...]


@TASKS.register("interest")
class InterestTask(Task):
    rankable = True

    def build_head(self, dims: HeadDims) -> nn.Module:
        return InterestHead(dims.shared)

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        target = torch.from_numpy(rows.positive.astype(np.float32))
        return target, torch.ones_like(target, dtype=torch.bool)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), mask)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def rank_score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """ROC-AUC and log loss of the held-out interaction against ``ctx.pair_negatives`` uniform negatives."""
        logits, rows = ctx.pair_outputs(stage)
        prob = torch.sigmoid(logits[self.name]).numpy()
        label = rows.positive.astype(np.float64)
        return {"auc": metrics.roc_auc(prob, label), "logloss": metrics.log_loss(prob, label)}
