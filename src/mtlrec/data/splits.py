"""Temporal leave-one-out, exactly as PROTOCOL.md: pure functions over a Dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtlrec.data.dataset import Dataset

TRAIN, VALID, TEST = 0, 1, 2


@dataclass(frozen=True)
class Split:
    """Each user's interactions in time order, and which are train, validation and test.

    Sequences are stored flat (CSR): user ``u``'s items in time order are ``items[offsets[u]:offsets[u + 1]]``.
    An evaluated user's last item is test and the one before is validation; everything else is train.
    """

    n_users: int
    n_items: int
    items: np.ndarray  # int64 [n_interactions], item index, grouped by user, in time order
    ratings: np.ndarray  # float32 [n_interactions], aligned with items (NaN when unknown)
    rows: np.ndarray  # int64 [n_interactions], source row of each entry (for messages and weights)
    offsets: np.ndarray  # int64 [n_users + 1]
    role: np.ndarray  # int8 [n_interactions], TRAIN / VALID / TEST, aligned with items

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def evaluated(self) -> np.ndarray:
        """Bool [n_users]: users whose last interaction is a test item, i.e. who have one validation and one test
        item. From the split: those with at least 3 interactions; after items are held out
        (``eval.cold_start.hold_out_items``) an evaluated user may have fewer left, and stays evaluated."""
        if len(self.role) == 0:
            return np.zeros(self.n_users, dtype=bool)
        return (self.lengths > 0) & (self.role[np.maximum(self.offsets[1:] - 1, 0)] == TEST)

    @property
    def eval_users(self) -> np.ndarray:
        """Users with one validation and one test item (at least 3 interactions in the split)."""
        return np.flatnonzero(self.evaluated)

    def trained_items(self) -> np.ndarray:
        """Bool [n_items]: items with at least one train interaction (the rest are cold to a model)."""
        return np.bincount(self.items[self.role == TRAIN], minlength=self.n_items) > 0

    def target(self, stage: str) -> np.ndarray:
        """Item held out for each evaluated user at ``stage`` ('valid' or 'test'), aligned with ``eval_users``."""
        last = self.offsets[1:][self.eval_users] - 1
        return self.items[last - 1 if stage == "valid" else last]

    def history_end(self, stage: str) -> np.ndarray:
        """Per user, the flat position where the history visible at ``stage`` ends (exclusive).

        'valid' sees train only; 'test' also sees the validation item (PROTOCOL.md); 'train' means everything
        that is train, for users who are not evaluated too.
        """
        end = self.offsets[1:].copy()
        evaluated = self.evaluated
        end[evaluated] -= 1 if stage == "test" else 2
        return end

    def train_positions(self) -> np.ndarray:
        """Flat positions of all train interactions."""
        return np.flatnonzero(self.role == TRAIN)

    def seen_pairs(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) pairs excluded from ranking at ``stage``: train items, plus the validation item for test."""
        keep = self.role == TRAIN
        if stage == "test":
            keep |= self.role == VALID
        users = np.repeat(np.arange(self.n_users), self.lengths)
        return users[keep], self.items[keep]


SPLIT_DESCRIPTIONS = {
    "temporal": "temporal leave-one-out (seeded ties)",
    "random": "seeded random leave-one-out (no timestamps)",
}


def leave_one_out(dataset: Dataset, seed: int = 0) -> Split:
    """The split the dataset calls for (``dataset.split``): temporal, or random where there is no usable time."""
    if dataset.split == "temporal":
        return temporal_leave_one_out(dataset, seed)
    if dataset.split == "random":
        return random_leave_one_out(dataset, seed)
    raise ValueError(f"unknown split kind {dataset.split!r}; valid: {', '.join(SPLIT_DESCRIPTIONS)}")


def random_leave_one_out(dataset: Dataset, seed: int = 0) -> Split:
    """Order each user's interactions by a seeded uniform draw alone, then hold out the last two, as
    ``temporal_leave_one_out`` does (PROTOCOL.md's other rules unchanged). For data without timestamps
    (Last.fm listening counts): the held-out items are a seeded random choice per user."""
    return _leave_last_two(dataset, np.zeros(len(dataset.interactions), dtype=np.int64), seed)


def temporal_leave_one_out(dataset: Dataset, seed: int = 0) -> Split:
    """Order each user's interactions by (timestamp, seeded uniform draw), hold out the last two.

    Ties in time are broken by ``numpy.random.default_rng(seed).random(n)`` drawn over the rows in source-file
    order, then a stable sort by (user, timestamp, draw): never by item id (PROTOCOL.md).
    """
    return _leave_last_two(dataset, dataset.interactions["timestamp"].to_numpy(dtype=np.int64), seed)


def _leave_last_two(dataset: Dataset, timestamps: np.ndarray, seed: int) -> Split:
    users, items = dataset.encoded_interactions()
    draw = np.random.default_rng(seed).random(len(users))
    order = np.lexsort((draw, timestamps, users))  # last key is primary
    users_sorted = users[order]
    counts = np.bincount(users_sorted, minlength=dataset.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    role = np.full(len(order), TRAIN, dtype=np.int8)
    evaluated = np.flatnonzero(counts >= 3)
    role[offsets[evaluated + 1] - 1] = TEST
    role[offsets[evaluated + 1] - 2] = VALID
    ratings = dataset.interactions["rating"].to_numpy(dtype=np.float32)[order]
    return Split(dataset.n_users, dataset.n_items, items[order], ratings, order.astype(np.int64), offsets, role)
