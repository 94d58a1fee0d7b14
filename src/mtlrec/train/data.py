"""Turning a split into training rows: (user, item, history) pairs with sampled negatives."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtlrec.data.dataset import Dataset
from mtlrec.data.splits import TEST, TRAIN, VALID, Split

if TYPE_CHECKING:
    from mtlrec.models.model import MultiTaskModel


@dataclass
class TrainingData:
    """Everything tasks and the trainer read, built once from the dataset and its split."""

    dataset: Dataset
    split: Split
    text_vectors: np.ndarray  # float32 [n_items, text_dim]
    categories: np.ndarray  # float32 [n_items, n_categories] multi-hot
    category_role: np.ndarray  # int8 [n_items]: TRAIN, VALID or TEST for the category task (hidden unless TRAIN)
    user_of_position: np.ndarray  # int64 [n_interactions]: the user of each flat split position
    # items held out of training entirely (data.cold_items, eval/cold_start.py): int64, sorted; empty = none
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # users held out of training entirely (data.cold_users, eval/cold_users.py): int64, sorted; empty = none. They
    # have no interaction in ``split``; ``cold_user_split`` holds theirs alone (same order and roles), None = none
    cold_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cold_user_split: Split | None = None

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        split: Split,
        text_vectors: np.ndarray,
        roles: np.ndarray,
        cold_items: np.ndarray | None = None,
        cold_users: np.ndarray | None = None,
        cold_user_split: Split | None = None,
    ) -> TrainingData:
        users = np.repeat(np.arange(split.n_users), split.lengths)
        cold = np.zeros(0, dtype=np.int64) if cold_items is None else np.asarray(cold_items, dtype=np.int64)
        held = np.zeros(0, dtype=np.int64) if cold_users is None else np.asarray(cold_users, dtype=np.int64)
        return cls(dataset, split, text_vectors, dataset.category_matrix(), roles, users, cold, held, cold_user_split)


    def split_fingerprint(self) -> str:
        """sha256 over what is held out and what is trained on: the split (every user's items in order, their roles),
        the category task's item roles and the cold items and users. Equal exactly when evaluation would see the
        same train / validation / test division."""
        h = hashlib.sha256()
        split = self.split
        for array in (split.items, split.offsets, split.role, self.category_role, self.cold_items, self.cold_users):
            h.update(np.ascontiguousarray(array).tobytes())
            h.update(b"|")
        return h.hexdigest()


def category_roles(n_items: int, test: float, valid: float, seed: int) -> np.ndarray:
    """Seeded item roles for the category task: a ``test`` share (PROTOCOL.md's held-out items), a ``valid``
    share for model selection, the rest TRAIN. Held-out items' categories are hidden from training and text."""
    roles = np.full(n_items, TRAIN, dtype=np.int8)
    order = np.random.default_rng(seed).permutation(n_items)
    n_test, n_valid = int(round(test * n_items)), int(round(valid * n_items))
    roles[order[:n_test]] = TEST
    roles[order[n_test : n_test + n_valid]] = VALID
    return roles


@dataclass
class PairRows:
    """A batch of (user, item) rows. ``position`` is the flat split position of an observed interaction, or -1
    for a sampled negative. The user's history is ``split.items[offsets[user]:history_end]``. Rows share a
    user representation with row ``owner`` (negatives with their positive), so it is computed once."""

    users: np.ndarray  # int64 [R]
    items: np.ndarray  # int64 [R]
    history_end: np.ndarray  # int64 [R]
    position: np.ndarray  # int64 [R]
    owner: np.ndarray | None = None  # int64 [R] index of the row whose (user, history) this row has; None = own
    only: np.ndarray | None = None  # int64 [R] -1: a row for every task; k: a row only for task ``only_tasks[k]``
    only_tasks: tuple[str, ...] = ()

    @property
    def positive(self) -> np.ndarray:
        return self.position >= 0

    def for_task(self, task: str) -> np.ndarray:
        """bool [R]: the rows that may carry ``task``'s labels (partial labels: other tasks' extra rows do not)."""
        if self.only is None:
            return np.ones(len(self.items), dtype=bool)
        code = self.only_tasks.index(task) if task in self.only_tasks else -2
        return (self.only == -1) | (self.only == code)

    def extend(self, extra: PairRows, task: str) -> PairRows:
        """These rows followed by ``extra``, which only ``task`` labels. ``extra.owner`` indexes rows of ``self``."""
        n = len(self.items)
        own = np.arange(n) if self.owner is None else self.owner
        only = np.full(n, -1, dtype=np.int64) if self.only is None else self.only
        extra_owner = np.arange(n, n + len(extra.items)) if extra.owner is None else extra.owner
        tasks = (*self.only_tasks, task)
        return PairRows(
            users=np.concatenate([self.users, extra.users]),
            items=np.concatenate([self.items, extra.items]),
            history_end=np.concatenate([self.history_end, extra.history_end]),
            position=np.concatenate([self.position, extra.position]),
            owner=np.concatenate([own, extra_owner]),
            only=np.concatenate([only, np.full(len(extra.items), len(tasks) - 1, dtype=np.int64)]),
            only_tasks=tasks,
        )


def row_logits(model: MultiTaskModel, split: Split, rows: PairRows) -> dict[str, torch.Tensor]:
    """Every task's logits for ``rows``, encoding each distinct (user, history) once (and, with a fine-tuned
    language model, each distinct item text the rows read once: ``MultiTaskModel.reading``)."""
    owners = np.arange(len(rows.users)) if rows.owner is None else rows.owner
    unique, inverse = np.unique(owners, return_inverse=True)
    hist, mask = histories(split, rows.users[unique], rows.history_end[unique], model.history_len)
    items = torch.from_numpy(rows.items)
    with model.reading(torch.cat([hist[mask], items])):
        user = model.user_repr(torch.from_numpy(rows.users[unique]), hist, mask)  # [U, dim]
        return model.pair_logits(user[model.here(torch.from_numpy(inverse))], items)


def histories(split: Split, users: np.ndarray, end: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``length`` most recent items before ``end`` of each user, oldest first, left-padded.

    Returns item indexes long [R, length] (0 where padded) and a bool mask [R, length] of real entries.
    """
    start = split.offsets[users]
    pos = end[:, None] - length + np.arange(length)[None, :]  # [R, L]
    real = pos >= start[:, None]
    idx = np.where(real, split.items[np.clip(pos, 0, len(split.items) - 1)], 0)
    return torch.from_numpy(idx), torch.from_numpy(real)


class NegativeSampler:
    """Uniform negatives over the catalogue, resampled (a few rounds) when they hit one of the user's train items.

    ``exclude``: items never drawn (the cold items held out of training: to the model they do not exist yet).
    """

    def __init__(self, split: Split, seed: int, exclude: np.ndarray | None = None) -> None:
        self.n_items = split.n_items
        users, items = split.seen_pairs("train")
        self._seen = np.unique(users * split.n_items + items)
        self.rng = np.random.default_rng(seed)
        self._pool: np.ndarray | None = None  # None = every item (drawn as integers, as without exclusions)
        if exclude is not None and len(exclude):
            self._pool = np.setdiff1d(np.arange(self.n_items), exclude)
            if not len(self._pool):
                raise ValueError("every item is excluded from negative sampling")

    def _draw(self, size: int | tuple[int, ...]) -> np.ndarray:
        if self._pool is None:
            return self.rng.integers(0, self.n_items, size=size)
        return self._pool[self.rng.integers(0, len(self._pool), size=size)]

    def sample(self, users: np.ndarray, count: int) -> np.ndarray:
        """int64 [len(users), count]."""
        out = self._draw((len(users), count))
        for _ in range(5):
            keys = users[:, None] * self.n_items + out
            pos = np.searchsorted(self._seen, keys).clip(max=len(self._seen) - 1)
            hit = self._seen[pos] == keys
            if not hit.any():
                break
            out[hit] = self._draw(int(hit.sum()))
        return out

    def rows(self, positives: PairRows, count: int) -> PairRows:
        """The positive rows followed by ``count`` negatives per positive, sharing user and history."""
        negatives = self.sample(positives.users, count)  # [P, count]
        users = np.repeat(positives.users, count)
        n = len(positives.users)
        return PairRows(
            users=np.concatenate([positives.users, users]),
            items=np.concatenate([positives.items, negatives.reshape(-1)]),
            history_end=np.concatenate([positives.history_end, np.repeat(positives.history_end, count)]),
            position=np.concatenate([positives.position, np.full(len(users), -1, dtype=np.int64)]),
            owner=np.concatenate([np.arange(n), np.repeat(np.arange(n), count)]),
        )


def train_positive_rows(data: TrainingData, positions: np.ndarray) -> PairRows:
    """Observed train interactions at flat ``positions``; each one's history is what came before it."""
    return PairRows(
        users=data.user_of_position[positions],
        items=data.split.items[positions],
        history_end=positions.copy(),
        position=positions,
    )


def heldout_positive_rows(data: TrainingData, stage: str) -> PairRows:
    """Each evaluated user's held-out interaction at ``stage``, with the history visible at that stage."""
    split = data.split
    users = split.eval_users
    end = split.history_end(stage)[users]
    return PairRows(users=users.astype(np.int64), items=split.target(stage), history_end=end, position=end.copy())
