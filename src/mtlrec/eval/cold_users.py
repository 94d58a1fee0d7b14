"""Cold-start users: how well does the model serve a user it never saw, from the first few items they liked?

The protocol (README, "Cold-start users"), switched on by ``data.cold_users`` (a share of the users, 0 = off):

- Held out: the first ``round(share * n_users)`` users of
  ``numpy.random.default_rng([data.split_seed, COLD_USER_STREAM]).permutation(n_users)`` (PROTOCOL.md's split
  seed, 0 by default: the same users for every training seed). The split (PROTOCOL.md) is computed first; then
  every interaction of a held-out user is removed from it (:func:`hold_out_users`): no train row, no history, not
  a validation or test target, so the normal PROTOCOL.md evaluation is over the remaining users. Their id rows
  stay in the model untrained and out of the mean id a new user gets (``MultiTaskModel.set_warm_users``).
- Evaluated: the held-out users with at least ``LIKED + 1`` interactions. Each one's first ``LIKED`` interactions
  in PROTOCOL.md's order (time, ties by the split's seeded draw) are the "liked" items; the rest of their items
  are the relevant ones.
- Ranked: every item except the liked ones, scored exactly as ``Recommender.recommend_new_user(liked=...)`` scores
  (``recommend.scoring.new_user_scores``: the liked items, oldest first, as the history of the trained user tower
  with the mean trained user id; the run's blended ranking score).
- Reported: HR@K (some relevant item in the top K), NDCG@K (binary gains, ideal DCG over min(K, |relevant|)) and
  Recall@K (|relevant in the top K| / |relevant|), each the exact expectation over a random order of tied scores
  (:func:`~mtlrec.eval.metrics.multi_rank_metrics`), averaged over the evaluated users, beside most-popular (train
  counts of the reduced split) and content k-NN from the liked items (``baselines.content_knn``, the language-model
  vectors the model reads), through the same code with the same exclusions. Also, as ``next/...``, PROTOCOL.md's
  single-target metrics of the one item that came right after the liked ones (how a known user is measured).

With ``data.cold_items`` too, the users are held out first, from the full split, so a held-out user's items may
include cold items. With ``model.friends``, a held-out user can still be someone's friend (untrained id, no taste).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtlrec.data.splits import TRAIN, Split
from mtlrec.eval import metrics
from mtlrec.eval.baselines import content_knn, most_popular
from mtlrec.eval.cold_start import seeded_share
from mtlrec.eval.evaluator import ScoreFn
from mtlrec.models.model import MultiTaskModel
from mtlrec.recommend.scoring import new_user_scores
from mtlrec.tasks.base import Task
from mtlrec.train.data import TrainingData

COLD_USER_STREAM = 2  # second key of the held-out users' seed: [split_seed, COLD_USER_STREAM] (cold items use 1)
LIKED = 3  # interactions given to the model as liked items; the user's other items are relevant
STAGE = "test"  # what ScoreFns are called with (content_knn wants a stage; its liked split has no held-out item)
METHODS = ("mtlrec", "most_popular", "content_knn")


def cold_user_set(n_users: int, share: float, seed: int = 0) -> np.ndarray:
    """The held-out users, int64 sorted: a seeded ``share`` of ``n_users`` (empty when ``share`` is 0)."""
    return seeded_share(n_users, share, seed, COLD_USER_STREAM, "users")


def _keep(split: Split, keep: np.ndarray) -> Split:
    """``split`` with only the flat positions where ``keep`` is True (order and roles unchanged)."""
    users = np.repeat(np.arange(split.n_users), split.lengths)
    counts = np.bincount(users[keep], minlength=split.n_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Split(split.n_users, split.n_items, split.items[keep], split.ratings[keep], split.rows[keep], offsets,
                 split.role[keep])  # fmt: skip


def hold_out_users(split: Split, users: np.ndarray) -> tuple[Split, Split]:
    """(``split`` without any interaction of ``users``, ``split`` with only theirs). In the first, those users have
    no interaction at all: nothing trains on them, they are in no history and not evaluated (:attr:`Split.evaluated`
    needs a test item). The second keeps their sequences in PROTOCOL.md's order for :func:`new_user_cases`."""
    held = np.zeros(split.n_users, dtype=bool)
    held[np.asarray(users, dtype=np.int64)] = True
    mine = held[np.repeat(np.arange(split.n_users), split.lengths)]
    return _keep(split, ~mine), _keep(split, mine)


@dataclass(frozen=True)
class NewUserCases:
    """The evaluated held-out users: each one's liked items (given) and relevant items (to find)."""

    users: np.ndarray  # int64 [U] user indexes
    liked: np.ndarray  # int64 [U, LIKED] the first interactions in time order, oldest first
    relevant_offsets: np.ndarray  # int64 [U + 1] CSR over relevant_items
    relevant_items: np.ndarray  # int64: each user's other items (distinct, none of them liked)
    next_items: np.ndarray  # int64 [U] the first item after the liked ones in time order (not itself liked)

    def __len__(self) -> int:
        return len(self.users)

    def relevant(self, positions: np.ndarray, n_items: int) -> torch.Tensor:
        """Bool [len(positions), n_items]: the relevant items of those cases."""
        out = torch.zeros(len(positions), n_items, dtype=torch.bool)
        for row, p in enumerate(positions):
            items = self.relevant_items[self.relevant_offsets[p] : self.relevant_offsets[p + 1]]
            out[row, torch.from_numpy(items)] = True
        return out

    def liked_split(self, n_items: int) -> Split:
        """A Split whose "user" ``p`` is case ``p`` with the liked items alone, all TRAIN (so not evaluated, and
        ``history_end`` is the whole sequence): what history-based baselines such as content k-NN read."""
        n = self.liked.size
        offsets = np.arange(0, n + 1, self.liked.shape[1], dtype=np.int64)
        return Split(len(self), n_items, self.liked.reshape(-1).copy(), np.full(n, np.nan, np.float32),
                     np.arange(n, dtype=np.int64), offsets, np.full(n, TRAIN, dtype=np.int8))  # fmt: skip


def new_user_cases(held: Split, users: np.ndarray, liked: int = LIKED) -> NewUserCases:
    """The cases of ``users`` (held out, their interactions in ``held``) with at least ``liked + 1`` interactions
    and at least one item besides the liked ones."""
    rows, likes, counts, relevant, following = [], [], [], [], []
    for u in np.asarray(users, dtype=np.int64):
        seq = held.items[held.offsets[u] : held.offsets[u + 1]]
        if len(seq) <= liked:
            continue
        rest = np.setdiff1d(seq[liked:], seq[:liked])  # distinct, sorted, none liked (a repeat is not a new item)
        if not len(rest):
            continue
        rows.append(u)
        likes.append(seq[:liked])
        counts.append(len(rest))
        relevant.append(rest)
        following.append(next(i for i in seq[liked:] if i not in seq[:liked]))
    return NewUserCases(
        users=np.asarray(rows, dtype=np.int64),
        liked=np.asarray(likes, dtype=np.int64).reshape(len(rows), liked),
        relevant_offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        relevant_items=np.concatenate(relevant).astype(np.int64) if relevant else np.zeros(0, dtype=np.int64),
        next_items=np.asarray(following, dtype=np.int64),
    )


def model_new_user_fn(model: MultiTaskModel, tasks: dict[str, Task], blend: dict[str, float], cases: NewUserCases
                      ) -> ScoreFn:  # fmt: skip
    """The model's scores for cases (positions in ``cases``) from their liked items: ``new_user_scores``, the
    function ``Recommender.recommend_new_user(liked=...)`` ranks with."""

    def score(positions: np.ndarray, stage: str) -> torch.Tensor:
        return new_user_scores(model, tasks, blend, list(cases.liked[np.asarray(positions, dtype=np.int64)]))[0]

    return score


@torch.no_grad()
def rank_new_users(
    score_fn: ScoreFn, cases: NewUserCases, n_items: int, ks: tuple[int, ...] = (10, 20), batch_users: int = 128
) -> dict[str, np.ndarray]:
    """Per case, HR/NDCG/Recall@K of ranking every item but the liked ones against all the user's other items, and
    ``next/``-prefixed single-target metrics of the item that came right after the liked ones (``score_fn`` is
    called with positions in ``cases``)."""
    per_case: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(cases), batch_users):
        positions = np.arange(start, min(start + batch_users, len(cases)))
        scores = score_fn(positions, STAGE).clone()
        rows = torch.from_numpy(np.repeat(np.arange(len(positions)), cases.liked.shape[1]))
        scores[rows, torch.from_numpy(cases.liked[positions].reshape(-1))] = float("-inf")
        result = metrics.multi_rank_metrics(scores, cases.relevant(positions, n_items), ks)
        # The next item alone, as PROTOCOL.md measures a known user (one target, ties at expectation).
        single = metrics.rank_metrics(scores, torch.from_numpy(cases.next_items[positions]), ks)
        result |= {f"next/{name}": value for name, value in single.items()}
        for name, value in result.items():
            per_case.setdefault(name, []).append(value)
    return {name: torch.cat(values).numpy() for name, values in per_case.items()}


def cold_user_report(
    model: MultiTaskModel,
    tasks: dict[str, Task],
    data: TrainingData,
    blend: dict[str, float],
    ks: tuple[int, ...] = (10, 20),
    batch_users: int = 128,
    share: float | None = None,
) -> dict[str, Any]:
    """The cold-user metrics of ``model`` (trained on ``data.split``, without the held-out ``data.cold_users``,
    whose interactions are ``data.cold_user_split``) beside most-popular and content k-NN, for metrics.json."""
    split, users = data.split, data.cold_users
    held = data.cold_user_split if data.cold_user_split is not None else _keep(split, np.zeros(len(split.items), bool))
    cases = new_user_cases(held, users)
    report: dict[str, Any] = {"share": share, "held_out": int(len(users)), "users": int(len(cases)), "liked": LIKED,
                              "ties": "expectation"}  # fmt: skip
    if not len(cases):
        return report
    report["mean_relevant"] = float(np.diff(cases.relevant_offsets).mean())
    scorers: dict[str, ScoreFn] = {
        "mtlrec": model_new_user_fn(model, tasks, blend, cases),
        "most_popular": most_popular(split),  # train counts of the reduced split: the same for every case
        "content_knn": content_knn(cases.liked_split(split.n_items), torch.from_numpy(data.text_vectors)),
    }
    was_training = model.training
    model.eval()
    try:
        for name, score_fn in scorers.items():
            per_case = rank_new_users(score_fn, cases, split.n_items, ks, batch_users)
            report[name] = {metric: float(values.mean()) for metric, values in per_case.items()}
    finally:
        model.train(was_training)
    return report


def log_cold_users(report: dict[str, Any], log: Callable[[str], None] = print, k: int = 10) -> None:
    """One line per method: HR@k, NDCG@k and Recall@k over the evaluated held-out users."""
    log(f"cold users: {report['held_out']:,} users held out of training, {report['users']:,} evaluated from their "
        f"first {report['liked']} items")  # fmt: skip
    for name in METHODS:
        if report.get(name):
            r = report[name]
            log(f"  {name:<13} hr@{k} {r[f'hr@{k}']:.4f}  ndcg@{k} {r[f'ndcg@{k}']:.4f}  "
                f"recall@{k} {r[f'recall@{k}']:.4f}  next item: hr@{k} {r[f'next/hr@{k}']:.4f}  "
                f"ndcg@{k} {r[f'next/ndcg@{k}']:.4f}")  # fmt: skip
