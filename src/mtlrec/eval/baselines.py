"""Reference rankers scored through the same protocol code as the model (tests and benchmarks)."""

from __future__ import annotations

import numpy as np
import torch

from mtlrec.data.splits import TRAIN, Split
from mtlrec.eval.evaluator import ScoreFn


def most_popular(split: Split) -> ScoreFn:
    """Every user gets the train interaction counts of the items."""
    counts = torch.from_numpy(np.bincount(split.items[split.role == TRAIN], minlength=split.n_items)).double()

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        return counts.expand(len(users), -1)

    return score
