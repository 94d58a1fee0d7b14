"""Rating: regress the rating of observed interactions (rows without a rating are masked, not dropped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mtlrec.eval import metrics
from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, TaskOptions, masked_mean

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows, TrainingData


@dataclass(frozen=True)
class RatingOptions(TaskOptions):
    dropout: float = 0.5  # inside the head: ratings are few and noisy, and the shared layers fit them fast


class RatingHead(nn.Module):
    """Rating = global mean (a buffer set from train) + user and item biases read linearly from their
    representations (no dropout: biases are what ratings need most, as in biased matrix factorisation)
    + a small MLP over the shared layers (heavy dropout: the pair-specific part is what overfits)."""

    def __init__(self, dim: int, shared: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(shared, shared), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(shared, 1))  # fmt: skip
        self.user_bias = nn.Linear(dim, 1, bias=False)
        self.item_bias = nn.Linear(dim, 1, bias=False)
        self.register_buffer("mean", torch.zeros(()))

    def forward(self, f: Features) -> torch.Tensor:
        assert f.user is not None and f.shared is not None, "a pair-level head needs user and shared features"
        biases = self.user_bias(f.user) + self.item_bias(f.item)  # [..., 1]
        return self.mean + (biases + self.mlp(f.shared)).squeeze(-1)  # [...]


@TASKS.register("rating")
class RatingTask(Task):
    options_cls = RatingOptions
    options: RatingOptions
    rankable = True
    select_metric = "rmse"

    def prepare(self, data: TrainingData) -> None:
        self.ratings = data.split.ratings
        train = self.ratings[data.split.train_positions()]
        train = train[~np.isnan(train)]
        self.mean = float(train.mean()) if len(train) else 0.0
        self.low, self.high = (float(train.min()), float(train.max())) if len(train) else (0.0, 1.0)

    def build_head(self, dims: HeadDims) -> nn.Module:
        head = RatingHead(dims.dim, dims.shared, self.options.dropout)
        head.mean.fill_(getattr(self, "mean", 0.0))
        return head

    def rank_score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        target = np.where(rows.positive, self.ratings[rows.position.clip(min=0)], np.nan).astype(np.float32)
        mask = ~np.isnan(target)
        return torch.from_numpy(np.nan_to_num(target)), torch.from_numpy(mask)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean((logits - targets) ** 2, mask)

    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """RMSE and MAE on each evaluated user's held-out interaction (PROTOCOL.md)."""
        logits, rows = ctx.pair_outputs(stage)
        target, mask = self.labels(rows)
        if not bool(mask.any()):
            return {}
        pred = logits[self.name][mask].clamp(self.low, self.high).numpy()
        true = target[mask].numpy()
        return {"rmse": metrics.rmse(pred, true), "mae": metrics.mae(pred, true)}
