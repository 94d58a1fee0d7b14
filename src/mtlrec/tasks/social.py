"""Social influence: of the items a user's friends engaged with, which does the user engage with too?

A (user, item) pair is *friend-exposed* when at least one of the user's friends has the item among their train
interactions. The task labels exactly the friend-exposed pairs: 1 when the user engaged with the item, 0 when
not. Training rows are the batch's rows that happen to be friend-exposed (observed positives and uniform
negatives) plus ``negatives`` extra rows per positive drawn from the user's friend-exposed items that the user
never engaged with (``extra_rows``; only this task labels them, the other tasks mask them: partial labels).

Evaluation (``social_auc``): each evaluated user's held-out item when it is friend-exposed (positive) against up
to ``EVAL_NEGATIVES`` friend-exposed items the user never engaged with (seeded), pooled ROC-AUC. Friends' held-out
interactions never count as exposure. ``exposed_share`` is the share of held-out items that were friend-exposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mtlrec.data.splits import TRAIN
from mtlrec.errors import ConfigError
from mtlrec.eval import metrics
from mtlrec.tasks.base import TASKS, HeadDims, Task, TaskOptions, masked_mean
from mtlrec.tasks.interest import InterestHead
from mtlrec.train.data import PairRows, heldout_positive_rows, row_logits

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import TrainingData

EVAL_NEGATIVES = 50
EVAL_SEED = 20_240_602


@dataclass(frozen=True)
class SocialOptions(TaskOptions):
    negatives: int = 2  # extra friend-exposed, not-engaged items per positive row in a training batch


@TASKS.register("social")
class SocialTask(Task):
    options_cls = SocialOptions
    options: SocialOptions
    select_metric = "social_auc"

    def prepare(self, data: TrainingData) -> None:
        graph = data.dataset.friend_graph()
        if graph is None:
            raise ConfigError(f"task '{self.name}' needs a social graph and dataset '{data.dataset.name}' has none; "
                              "drop the task or use a dataset with friends (lastfm-2k)")  # fmt: skip
        split = self.split = data.split
        n_items = split.n_items
        train = split.role == TRAIN
        users_of = np.repeat(np.arange(split.n_users), split.lengths)
        self.engaged = np.unique(users_of[train] * n_items + split.items[train])  # sorted keys u * n_items + i
        item_offsets = np.searchsorted(self.engaged // n_items, np.arange(split.n_users + 1))
        offsets, friends = graph
        # Exposure of u = the union of u's friends' train items, as sorted keys and as per-user lists.
        chunks = []
        for u in range(split.n_users):
            mine = friends[offsets[u] : offsets[u + 1]]
            items = np.concatenate([self.engaged[item_offsets[f] : item_offsets[f + 1]] % n_items for f in mine]
                                   ) if len(mine) else np.empty(0, dtype=np.int64)  # fmt: skip
            chunks.append(np.unique(items) + u * n_items)
        self.exposed = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        fresh = ~_member(self.exposed, self.engaged)  # exposed items the user never engaged with: negatives
        self.fresh = self.exposed[fresh]
        self.fresh_offsets = np.searchsorted(self.fresh // n_items, np.arange(split.n_users + 1))

    def build_head(self, dims: HeadDims) -> torch.nn.Module:
        return InterestHead(dims.shared)

    def _sample_fresh(self, users: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``count`` friend-exposed, not-engaged items per user (with replacement): items [N, count], and a bool
        [N] of users that have any."""
        start, stop = self.fresh_offsets[users], self.fresh_offsets[users + 1]
        has = stop > start
        pick = start[:, None] + (rng.random((len(users), count)) * (stop - start)[:, None]).astype(np.int64)
        items = self.fresh[np.minimum(pick, len(self.fresh) - 1)] % self.split.n_items if len(self.fresh) else pick
        return items, has

    def extra_rows(self, rows: PairRows, rng: np.random.Generator) -> PairRows | None:
        if self.options.negatives <= 0:
            return None
        positive = np.flatnonzero(rows.positive & (rows.only == -1 if rows.only is not None else True))
        items, has = self._sample_fresh(rows.users[positive], self.options.negatives, rng)
        owner = np.repeat(positive[has], self.options.negatives)
        return PairRows(users=rows.users[owner], items=items[has].reshape(-1), history_end=rows.history_end[owner],
                        position=np.full(len(owner), -1, dtype=np.int64), owner=owner)  # fmt: skip

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        keys = rows.users * self.split.n_items + rows.items
        engaged = rows.positive | _member(keys, self.engaged)
        return torch.from_numpy(engaged.astype(np.float32)), torch.from_numpy(_member(keys, self.exposed))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(F.binary_cross_entropy_with_logits(logits, targets, reduction="none"), mask)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def eval_rows(self, data: TrainingData, stage: str) -> tuple[PairRows, np.ndarray]:
        """Held-out items that are friend-exposed, then up to EVAL_NEGATIVES exposed, never-engaged items per
        evaluated user (none of them a held-out item); and the labels."""
        held = heldout_positive_rows(data, stage)
        split, n_items = self.split, self.split.n_items
        exposed = _member(held.users * n_items + held.items, self.exposed)
        rng = np.random.default_rng(EVAL_SEED)
        valid, test = split.target("valid"), split.target("test")
        negative_users, negative_items = [], []
        for row, u in enumerate(held.users):
            fresh = self.fresh[self.fresh_offsets[u] : self.fresh_offsets[u + 1]] % n_items
            fresh = fresh[(fresh != valid[row]) & (fresh != test[row])]
            picked = fresh[rng.permutation(len(fresh))[:EVAL_NEGATIVES]]  # without replacement
            negative_users.append(np.full(len(picked), row))
            negative_items.append(picked)
        users, negatives = np.concatenate(negative_users), np.concatenate(negative_items)
        row_users = np.concatenate([held.users[exposed], held.users[users]])
        _, first, inverse = np.unique(row_users, return_index=True, return_inverse=True)
        rows = PairRows(
            users=row_users,
            items=np.concatenate([held.items[exposed], negatives]),
            history_end=np.concatenate([held.history_end[exposed], held.history_end[users]]),
            position=np.concatenate([held.position[exposed], np.full(len(users), -1, dtype=np.int64)]),
            owner=first[inverse],  # a user's rows share one history at this stage: encode it once
        )
        labels = np.concatenate([np.ones(int(exposed.sum())), np.zeros(len(users))])
        self._exposed_share = float(exposed.mean()) if len(exposed) else 0.0
        return rows, labels

    @torch.no_grad()
    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        rows, labels = self.eval_rows(ctx.data, stage)
        if labels.min(initial=1) == labels.max(initial=0):
            return {"exposed_share": self._exposed_share}
        prob = torch.sigmoid(row_logits(ctx.model, ctx.data.split, rows)[self.name]).numpy()
        return {"social_auc": metrics.roc_auc(prob, labels), "exposed_share": self._exposed_share}


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """bool: which ``keys`` are in ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys
