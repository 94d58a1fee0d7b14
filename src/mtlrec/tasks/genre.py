"""Content classification: an item's categories (multi-label) from its representation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.data.splits import TEST, TRAIN, VALID
from mtlrec.eval import metrics
from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, masked_mean

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows, TrainingData


class CategoryHead(nn.Module):
    """Reads the item representation directly (item-level task): [..., dim] -> [..., n_categories]."""

    def __init__(self, dim: int, n_categories: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, n_categories))

    def forward(self, f: Features) -> torch.Tensor:
        return self.mlp(f.item)


@TASKS.register("genre")
class GenreTask(Task):
    select_metric = "map"

    def prepare(self, data: TrainingData) -> None:
        self.categories = torch.from_numpy(data.categories)
        self.roles = torch.from_numpy(data.category_role)
        self.trainable = self.roles == TRAIN

    def build_head(self, dims: HeadDims) -> nn.Module:
        return CategoryHead(dims.dim, dims.n_categories)

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.from_numpy(rows.items)
        return self.categories[items], self.trainable[items]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_row = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
        return masked_mean(per_row, mask)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """Micro/macro-F1 at 0.5 and mAP on the items held out for ``stage`` (their categories were never trained
        on nor shown in their text)."""
        items = torch.nonzero(self.roles == (VALID if stage == "valid" else TEST)).squeeze(1)
        if len(items) == 0:
            return {}
        prob = torch.sigmoid(ctx.item_outputs(self.name, items)).numpy()
        labels = self.categories[items].numpy()
        micro, macro = metrics.multilabel_f1(prob, labels)
        return {"micro_f1": micro, "macro_f1": macro, "map": metrics.mean_average_precision(prob, labels)}

    def describe(self, prediction: np.ndarray, categories: list[str]) -> Any:
        top = np.argsort(-prediction, kind="stable")[:3]
        return {categories[k]: round(float(prediction[k]), 3) for k in top.tolist()}
