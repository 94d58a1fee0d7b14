"""The one ranking score: evaluation, ``score_all`` and ``recommend`` all blend task logits with ``blend_scores``
(evaluation through ``ranking_scores``); new users (cold start: ``recommend_new_user`` and the cold-users
evaluation) go through ``new_user_scores``, which calls ``ranking_scores`` too."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from mtlrec.errors import ConfigError
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import Task

MAX_BLEND_WEIGHT = 1e6  # beyond this, blended float32 scores overflow to inf and rankings become meaningless


def check_blend(blend: dict[str, float], tasks: dict[str, Task]) -> dict[str, float]:
    """Blend weights must name rankable tasks of the model; unknown names fail listing the valid ones."""
    rankable = [name for name, task in tasks.items() if task.rankable]
    for name, weight in blend.items():
        if not math.isfinite(weight) or abs(weight) > MAX_BLEND_WEIGHT:
            raise ConfigError(f"blend: the weight of '{name}' must be a finite number of size at most "
                              f"{MAX_BLEND_WEIGHT:g} (scores are blended in float32), got {weight}")  # fmt: skip
    for name in blend:
        if name not in rankable:
            valid = ", ".join(rankable)
            raise ConfigError(f"blend: '{name}' is not a rankable task of this model; use one of {valid}")
    if not blend or all(w == 0 for w in blend.values()):
        if not rankable:
            raise ConfigError("this model has no rankable task (e.g. interest), so it cannot rank items")
        raise ConfigError(f"blend: give at least one non-zero weight among {', '.join(rankable)}")
    return blend


@torch.no_grad()
def ranking_scores(
    model: MultiTaskModel,
    tasks: dict[str, Task],
    blend: dict[str, float],
    users: np.ndarray | None,
    history: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Blended score over all items, float32 [B, n_items], and each blended task's logits. ``users`` None: new
    users known only by ``history`` (cold start)."""
    users_t = None if users is None else torch.from_numpy(users)
    logits = model.score_items(users_t, history[0], history[1], list(blend))
    return blend_scores(tasks, blend, logits), logits


def blend_scores(tasks: dict[str, Task], blend: dict[str, float], logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over the blend of weight * the task's ranking score of its logits, as float32."""
    score = sum(weight * tasks[name].rank_score(logits[name]) for name, weight in blend.items())
    return score.float()  # type: ignore[union-attr]


def new_user_history(items: Sequence[np.ndarray], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories of users the model never saw, from their items oldest first (the last is the most recent): the
    ``length`` most recent of each, left-padded like ``train.data.histories``. Item indexes long [B, length] (0 where
    padded) and a bool mask [B, length] of real entries."""
    hist = torch.zeros(len(items), length, dtype=torch.long)
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for row, own in enumerate(items):
        own = np.asarray(own, dtype=np.int64)[-length:]
        if len(own):  # (a slice [-0:] would be the whole row)
            hist[row, -len(own) :], mask[row, -len(own) :] = torch.from_numpy(own), True
    return hist, mask


@torch.no_grad()
def new_user_scores(
    model: MultiTaskModel, tasks: dict[str, Task], blend: dict[str, float], items: Sequence[np.ndarray]
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Blended scores float32 [B, n_items] of new users known only by their items (oldest first, e.g. a few liked
    ones), and the histories used: :func:`ranking_scores` with no user id, so the trained user tower reads the
    history with the mean user id (``MultiTaskModel.cold_user_repr``). Nothing is excluded here."""
    history = new_user_history(items, model.history_len)
    return ranking_scores(model, tasks, blend, None, history)[0], history
