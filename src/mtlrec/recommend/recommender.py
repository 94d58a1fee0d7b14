"""Top-K recommendation from a trained run, with the same scores the evaluation ranks by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrec.errors import MtlrecError
from mtlrec.recommend.artifact import Artifact, load_artifact
from mtlrec.recommend.scoring import check_blend, ranking_scores
from mtlrec.train.data import histories


class UnknownUserError(MtlrecError):
    pass


class Recommender:
    """Load with ``Recommender.load(run_dir)``. A user's history is everything known about them in the run
    (train, validation and test interactions); seen items are excluded from recommendations by default."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.model, self.tasks, self.split = artifact.model, artifact.tasks, artifact.split
        self.item_ids: list[str] = list(artifact.item_ids)
        self.user_ids: list[str] = list(artifact.user_ids)
        self._user_row = {u: k for k, u in enumerate(self.user_ids)}
        self.default_blend = dict(artifact.config.eval.blend)
        self._titles = artifact.items["title"].tolist()
        self._categories = [list(c) for c in artifact.items["categories"]]

    @classmethod
    def load(cls, run_dir: str | Path) -> Recommender:
        return cls(load_artifact(run_dir))

    def _rows(self, users: list[str]) -> np.ndarray:
        rows = []
        for user in users:
            row = self._user_row.get(str(user))
            if row is None:
                raise UnknownUserError(f"unknown user '{user}': not in this run's {len(self.user_ids):,} users "
                                       f"(e.g. '{self.user_ids[0]}')")  # fmt: skip
            rows.append(row)
        return np.asarray(rows, dtype=np.int64)

    @torch.no_grad()
    def _scores(self, rows: np.ndarray, blend: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        end = self.split.offsets[1:][rows]  # everything known about the user
        history = histories(self.split, rows, end, self.model.history_len)
        return ranking_scores(self.model, self.tasks, blend, rows, history)

    def score_all(self, users: list[str], blend: dict[str, float] | None = None) -> np.ndarray:
        """float32 [len(users), n_items] ranking scores, columns in ``item_ids`` order."""
        blend = check_blend(dict(blend or self.default_blend), self.tasks)
        return self._scores(self._rows(users), blend)[0].numpy().astype(np.float32, copy=False)

    def seen_items(self, user: str) -> np.ndarray:
        row = int(self._rows([user])[0])
        return self.split.items[self.split.offsets[row] : self.split.offsets[row + 1]]

    @torch.no_grad()
    def recommend(
        self, user: str, k: int = 10, exclude_seen: bool = True, blend: dict[str, float] | None = None
    ) -> list[dict[str, Any]]:
        """The top ``k`` items: id, title, categories, the blended score and every task's prediction."""
        if not 1 <= k <= len(self.item_ids):
            raise MtlrecError(f"k must be between 1 and {len(self.item_ids)}, got {k}")
        blend = check_blend(dict(blend or self.default_blend), self.tasks)
        rows = self._rows([user])
        scores, _ = self._scores(rows, blend)
        score = scores[0]
        if exclude_seen:
            score[torch.from_numpy(self.seen_items(user))] = float("-inf")
        k = min(k, int(torch.isfinite(score).sum()))
        top = torch.topk(score, k).indices  # [k]
        end = self.split.offsets[1:][rows]
        hist, mask = histories(self.split, rows, end, self.model.history_len)
        user_repr = self.model.user_repr(torch.from_numpy(rows), hist, mask).expand(k, -1)
        logits = self.model.pair_logits(user_repr, top)
        out = []
        for n, item in enumerate(top.tolist()):
            per_task = {name: task.describe(task.predict(logits[name][n]), self.artifact.categories)
                        for name, task in self.tasks.items()}  # fmt: skip
            out.append({"item_id": self.item_ids[item], "title": self._titles[item],
                        "categories": self._categories[item], "score": round(float(score[item]), 4),
                        "scores": per_task})  # fmt: skip
        return out
