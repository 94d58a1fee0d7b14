"""Cold-start items: can the model recommend an item it never saw in training, from its text alone?

The protocol (README, "Cold-start items"), switched on by ``data.cold_items`` (a share of the catalogue, 0 = off):

- Held out: the first ``round(share * n_items)`` items of
  ``numpy.random.default_rng([data.split_seed, COLD_STREAM]).permutation(n_items)`` (PROTOCOL.md's split seed,
  0 by default; the second key keeps this draw apart from the category task's held-out items). The split
  (PROTOCOL.md) is computed first; then every TRAIN interaction with a cold item is removed
  (:func:`hold_out_items`): nothing trains on it, it is in no history, no user has it among their train items,
  and the trainer never draws it as a negative. Validation and test targets stay exactly as they are.
- Evaluated: the users whose TEST item is a cold item.
- Ranked: every item of the catalogue, as PROTOCOL.md says (the user's train items in the reduced split and the
  validation item excluded, ties at their expectation), through :func:`~mtlrec.eval.evaluator.rank_users`.
- Reported: HR@K, NDCG@K, MRR@K of the model and, through the same code on the same reduced split, of content
  k-NN over the same language-model item vectors, a random ranker, most-popular (which cannot place a cold item
  above a warm one), and the exact expectation of a random ranking (``chance``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mtlrec.data.splits import TRAIN, Split
from mtlrec.eval.baselines import content_knn, most_popular, random_scores
from mtlrec.eval.evaluator import ScoreFn, model_score_fn, rank_users
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import Task
from mtlrec.train.data import TrainingData

COLD_STREAM = 1  # second key of the cold items' seed: [split_seed, COLD_STREAM]
STAGE = "test"


def seeded_share(n: int, share: float, seed: int, stream: int, what: str) -> np.ndarray:
    """The first ``round(share * n)`` of ``default_rng([seed, stream]).permutation(n)``, int64 sorted: the held-out
    items or users of a cold-start protocol (each protocol has its own ``stream``)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the share of cold {what} must be in [0, 1), got {share}")
    count = int(round(share * n))
    return np.sort(np.random.default_rng([seed, stream]).permutation(n)[:count]).astype(np.int64)


def cold_item_set(n_items: int, share: float, seed: int = 0) -> np.ndarray:
    """The held-out items, int64 sorted: a seeded ``share`` of ``n_items`` (empty when ``share`` is 0)."""
    return seeded_share(n_items, share, seed, COLD_STREAM, "items")


def hold_out_items(split: Split, items: np.ndarray) -> Split:
    """``split`` without any TRAIN interaction with ``items``; validation and test interactions are kept (so every
    evaluated user keeps their targets, see :attr:`Split.evaluated`)."""
    cold = np.zeros(split.n_items, dtype=bool)
    cold[np.asarray(items, dtype=np.int64)] = True
    keep = ~(cold[split.items] & (split.role == TRAIN))
    users = np.repeat(np.arange(split.n_users), split.lengths)
    counts = np.bincount(users[keep], minlength=split.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Split(split.n_users, split.n_items, split.items[keep], split.ratings[keep], split.rows[keep], offsets,
                 split.role[keep])  # fmt: skip


def cold_targets(split: Split, cold_items: np.ndarray) -> np.ndarray:
    """Bool, aligned with ``split.eval_users``: the user's test item is a cold item."""
    return np.isin(split.target(STAGE), cold_items)


def chance(split: Split, users: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Expected HR/NDCG/MRR@K of a uniformly random ranking for ``users`` at test: with n unmasked candidates
    the target's rank is uniform on 1..n."""
    seen_users, seen_items = split.seen_pairs(STAGE)
    seen = np.unique(seen_users.astype(np.int64) * split.n_items + seen_items)
    n_masked = np.bincount(seen // split.n_items, minlength=split.n_users)[users]
    n = (split.n_items - n_masked).astype(np.float64)  # candidates per user, the target among them
    out = {}
    for k in ks:
        ranks = np.arange(1, k + 1, dtype=np.float64)
        top = np.minimum(k, n).astype(np.int64) - 1  # index of the last rank that counts (n >= 1)
        out[f"hr@{k}"] = float(np.mean((top + 1) / n))
        out[f"ndcg@{k}"] = float(np.mean(np.cumsum(1 / np.log2(ranks + 1))[top] / n))
        out[f"mrr@{k}"] = float(np.mean(np.cumsum(1 / ranks)[top] / n))
    return out


def rank_cold(
    score_fn: ScoreFn, split: Split, cold_items: np.ndarray, ks: tuple[int, ...] = (10, 20), batch_users: int = 128
) -> dict[str, float]:
    """Mean full-ranking metrics at test over the users whose test item is cold ({} when there is none)."""
    mask = cold_targets(split, cold_items)
    if not mask.any():
        return {}
    per_user = rank_users(score_fn, split, STAGE, ks, batch_users)
    return {name: float(values[mask].mean()) for name, values in per_user.items()}


def cold_item_report(
    model: MultiTaskModel,
    tasks: dict[str, Task],
    data: TrainingData,
    blend: dict[str, float],
    ks: tuple[int, ...] = (10, 20),
    seed: int = 0,
    batch_users: int = 128,
    share: float | None = None,
) -> dict[str, Any]:
    """The cold-item metrics of ``model`` (trained on ``data.split``, already without the cold items' train
    interactions) beside content k-NN, random (seeded with ``seed``), most-popular and chance, for metrics.json."""
    split, cold = data.split, data.cold_items
    mask = cold_targets(split, cold)
    report: dict[str, Any] = {"share": share, "items": int(len(cold)), "users": int(mask.sum()), "stage": STAGE}
    if not mask.any():
        return report
    scorers: dict[str, ScoreFn] = {
        "mtlrec": model_score_fn(model, tasks, blend, split),
        "content_knn": content_knn(split, torch.from_numpy(data.text_vectors)),
        "random": random_scores(split, seed),
        "most_popular": most_popular(split),
    }
    was_training = model.training
    model.eval()
    try:
        for name, score_fn in scorers.items():
            report[name] = rank_cold(score_fn, split, cold, ks, batch_users)
    finally:
        model.train(was_training)
    report["chance"] = chance(split, split.eval_users[mask], ks)
    return report


def log_cold_items(report: dict[str, Any], log: Callable[[str], None] = print, k: int = 10) -> None:
    """One line per method: HR@k and NDCG@k over the users whose test item is cold."""
    log(f"cold items: {report['items']:,} items held out, {report['users']:,} users with a cold test item")
    for name in ("mtlrec", "content_knn", "random", "most_popular", "chance"):
        if report.get(name):
            log(f"  {name:<13} hr@{k} {report[name][f'hr@{k}']:.4f}  ndcg@{k} {report[name][f'ndcg@{k}']:.4f}")
