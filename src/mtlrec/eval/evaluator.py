"""Evaluation on PROTOCOL.md: full ranking of the catalogue with the blended score, then each task's metrics."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch

from mtlrec.data.splits import Split
from mtlrec.eval import metrics
from mtlrec.models.model import MultiTaskModel
from mtlrec.recommend.scoring import ranking_scores
from mtlrec.tasks.base import Task
from mtlrec.train.data import NegativeSampler, PairRows, TrainingData, heldout_positive_rows, histories, row_logits

LOWER_IS_BETTER = frozenset({"rmse", "mae", "logloss", "sampled_ce"})  # every other metric: higher is better
PAIR_NEGATIVES = 100  # uniform negatives per held-out interaction for binary metrics (AUC, log loss)
PAIR_SEED = 20_240_601


class EvalContext:
    """Model outputs that several tasks' metrics read, computed once per stage."""

    def __init__(self, model: MultiTaskModel, data: TrainingData) -> None:
        self.model, self.data = model, data
        self._pairs: dict[str, tuple[dict[str, torch.Tensor], PairRows]] = {}

    def pair_rows(self, stage: str) -> PairRows:
        """Held-out interactions, each followed by PAIR_NEGATIVES uniform negatives (fixed seed)."""
        sampler = NegativeSampler(self.data.split, seed=PAIR_SEED)
        return sampler.rows(heldout_positive_rows(self.data, stage), PAIR_NEGATIVES)

    @torch.no_grad()
    def pair_outputs(self, stage: str) -> tuple[dict[str, torch.Tensor], PairRows]:
        if stage not in self._pairs:
            rows = self.pair_rows(stage)
            logits = row_logits(self.model, self.data.split, rows)
            self._pairs[stage] = ({task: out.cpu() for task, out in logits.items()}, rows)
        return self._pairs[stage]

    @torch.no_grad()
    def item_outputs(self, task: str, items: torch.Tensor) -> torch.Tensor:
        return self.model.item_logits(task, items).cpu()

    @torch.no_grad()
    def user_outputs(self, task: str, users: np.ndarray, stage: str, batch_users: int = 1024) -> torch.Tensor:
        """Logits of a user-level task for ``users`` (int64 [U]), each represented with the history visible at
        ``stage`` (``split.history_end``: valid sees train only, test also the validation item): [U, ...]."""
        split, out = self.data.split, []
        for start in range(0, len(users), batch_users):
            batch = users[start : start + batch_users]
            hist, mask = histories(split, batch, split.history_end(stage)[batch], self.model.history_len)
            out.append(self.model.user_logits(task, self.model.user_repr(torch.from_numpy(batch), hist, mask)))
        return torch.cat(out).cpu()


ScoreFn = Callable[[np.ndarray, str], torch.Tensor]  # (user indexes [B], stage) -> scores float [B, n_items]


# (user, item) pairs scored per pass: the [users, items, hidden] activations stay in cache-sized memory whatever the
# catalogue (ML-100K: 38 users a pass, twice as fast as 128; a 10^6-item catalogue: one user, 0.5 GB, not 64 GB)
SCORE_PAIRS = 1 << 16


@torch.no_grad()
def rank_users(
    score_fn: ScoreFn,
    split: Split,
    stage: str,
    ks: tuple[int, ...] = (10, 20),
    batch_users: int = 128,
    sample: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per evaluated user, full-ranking metrics of the held-out item at ``stage`` (PROTOCOL.md): every item is
    scored, the user's train items (and for test the validation item) are excluded, ties count at expectation.
    ``sample``: positions in ``split.eval_users`` to rank (default: every evaluated user). ``batch_users`` is an upper
    bound on the users scored at once (see ``SCORE_PAIRS``)."""
    users, targets = split.eval_users, split.target(stage)
    if sample is not None:
        users, targets = users[sample], targets[sample]
    batch_users = max(1, min(batch_users, SCORE_PAIRS // split.n_items))
    seen_users, seen_items = split.seen_pairs(stage)
    seen_start = np.searchsorted(seen_users, np.arange(split.n_users + 1))  # seen pairs are grouped by user
    per_user: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        scores = score_fn(batch, stage).clone()
        counts = seen_start[batch + 1] - seen_start[batch]
        rows = np.repeat(np.arange(len(batch)), counts)
        cols = np.concatenate([seen_items[seen_start[u] : seen_start[u + 1]] for u in batch])
        scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)] = float("-inf")
        result = metrics.rank_metrics(scores, torch.from_numpy(targets[start : start + batch_users]), ks)
        for name, value in result.items():
            per_user[name].append(value)
    return {name: torch.cat(values).cpu().numpy() for name, values in per_user.items()}


def model_score_fn(model: MultiTaskModel, tasks: dict[str, Task], blend: dict[str, float], split: Split) -> ScoreFn:
    """The model's blended ranking score with the history visible at each stage."""

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        end = split.history_end(stage)[users]
        return ranking_scores(model, tasks, blend, users, histories(split, users, end, model.history_len))[0]

    return score


def evaluate(
    model: MultiTaskModel,
    tasks: dict[str, Task],
    data: TrainingData,
    blend: dict[str, float],
    stages: tuple[str, ...] = ("valid", "test"),
    ks: tuple[int, ...] = (10, 20),
    batch_users: int = 128,
    per_user: dict[str, np.ndarray] | None = None,
    sample: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """``stage -> metric -> value``: ranking metrics (when ``blend`` names a task), then every task's own metrics.
    ``per_user``, if given, receives each evaluated user's ranking metrics as ``"stage/metric" -> array``.
    ``sample`` ranks only those positions of ``split.eval_users`` (model selection on a large catalogue).

    A task's metrics are named by the metric alone (``rmse``); when two tasks report the same metric, both are
    prefixed with the task name (``rating/rmse``) so nothing is overwritten.
    """
    was_training = model.training
    model.eval()
    try:
        ctx = EvalContext(model, data)
        out: dict[str, dict[str, float]] = {}
        for stage in stages:
            row: dict[str, float] = {}
            if blend:
                score_fn = model_score_fn(model, tasks, blend, data.split)
                ranked = rank_users(score_fn, data.split, stage, ks, batch_users, sample)
                row = {name: float(values.mean()) for name, values in ranked.items()}
                if per_user is not None:
                    per_user.update({f"{stage}/{name}": values for name, values in ranked.items()})
            task_metrics = {name: task.evaluate(ctx, stage) for name, task in tasks.items()}
            counts: dict[str, int] = defaultdict(int)
            for values in task_metrics.values():
                for key in values:
                    counts[key] += 1
            for name, values in task_metrics.items():
                row.update({(key if counts[key] == 1 else f"{name}/{key}"): v for key, v in values.items()})
            out[stage] = row
        return out
    finally:
        model.train(was_training)
