"""Top-K recommendation from a trained run, with the same scores the evaluation ranks by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrec.errors import MtlrecError
from mtlrec.recommend.artifact import Artifact, load_artifact
from mtlrec.recommend.scoring import check_blend, new_user_scores, ranking_scores
from mtlrec.train.data import histories

TEXT_NEIGHBOURS = 10  # items closest to a new user's text that stand in for their history


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
        self._item_row = {i: k for k, i in enumerate(self.item_ids)}
        self._encoder = None  # the language model, loaded on the first text query
        self.default_blend = dict(artifact.config.eval.blend)
        self._titles = artifact.items["title"].tolist()
        self._categories = [list(c) for c in artifact.items["categories"]]

    @classmethod
    def load(cls, run_dir: str | Path) -> Recommender:
        return cls(load_artifact(run_dir))

    def _rows(self, users: list[str]) -> np.ndarray:
        return _lookup(users, self._user_row, self.user_ids, "user", UnknownUserError)

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
        blend = self._check(k, blend)
        rows = self._rows([user])
        end = self.split.offsets[1:][rows]  # everything known about the user
        hist, mask = histories(self.split, rows, end, self.model.history_len)
        score = ranking_scores(self.model, self.tasks, blend, rows, (hist, mask))[0][0]
        user_repr = self.model.user_repr(torch.from_numpy(rows), hist, mask)  # [1, dim]
        return self._top(score, user_repr, k, self.seen_items(user) if exclude_seen else None)

    @torch.no_grad()
    def recommend_new_user(
        self,
        liked: list[str] | None = None,
        text: str | None = None,
        k: int = 10,
        blend: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """Cold start: top ``k`` for a user the model never saw, from a few ``liked`` item ids and/or a ``text``
        about their tastes ("I love 90s science fiction").

        The text is encoded by the run's language model and matched (cosine) against the items' text vectors; its
        ``TEXT_NEIGHBOURS`` closest items become a pseudo-history (the closest as the most recent), followed by
        the liked items. That history goes through the trained user tower with the mean id of the trained users
        (``MultiTaskModel.cold_user_repr``), so the new user lands in the learned user space and is ranked by the
        same heads as everyone else. Liked items are not recommended back.
        """
        blend = self._check(k, blend)
        liked_rows = self._item_rows(liked or [])
        text_rows = self._text_neighbours(text) if text and text.strip() else np.empty(0, dtype=np.int64)
        if len(liked_rows) == 0 and len(text_rows) == 0:
            raise MtlrecError("a new user needs liked items or a text about their tastes (both are empty)")
        items = np.concatenate([text_rows, liked_rows])  # oldest first: the liked items are the most recent
        score, (hist, mask) = new_user_scores(self.model, self.tasks, blend, [items])  # the cold-users evaluation's
        return self._top(score[0], self.model.cold_user_repr(hist, mask), k, liked_rows)

    def _check(self, k: int, blend: dict[str, float] | None) -> dict[str, float]:
        if not 1 <= k <= len(self.item_ids):
            raise MtlrecError(f"k must be between 1 and {len(self.item_ids)}, got {k}")
        return check_blend(dict(blend or self.default_blend), self.tasks)

    def _item_rows(self, items: list[str]) -> np.ndarray:
        return _lookup(items, self._item_row, self.item_ids, "item", MtlrecError)

    def _text_neighbours(self, text: str) -> np.ndarray:
        """The items whose text vectors are closest (cosine) to ``text``'s, least similar first.

        Both sides are centred on the catalogue's mean text vector first: every item text shares the template's
        form ("Title (year). Genres: ..."), which a user's sentence lacks, so raw cosine favours titles that merely
        sound like the sentence ("I Like It Like That" for "I love 90s science fiction"); centring removes that
        shared direction and leaves the content (there, 7 of the 10 nearest MovieLens films are Sci-Fi, 3 raw)."""
        if self._encoder is None:
            from mtlrec.text import build_encoder

            tc = self.artifact.config.text
            self._encoder = build_encoder(tc.encoder, tc.model, dim=tc.dim)
        query = torch.as_tensor(np.asarray(self._encoder.encode([text]), dtype=np.float32))[0]  # [text_dim]
        vectors = self.model.item_encoder.text  # [n_items, text_dim]
        centre = vectors.mean(0)  # [text_dim]
        similarity = torch.nn.functional.cosine_similarity(vectors - centre, (query - centre)[None], dim=-1)
        top = torch.topk(similarity, min(TEXT_NEIGHBOURS, len(similarity))).indices.flip(0)
        return top.numpy().astype(np.int64)

    def _top(self, score: torch.Tensor, user_repr: torch.Tensor, k: int, exclude: np.ndarray | None
             ) -> list[dict[str, Any]]:  # fmt: skip
        """The ``k`` best of ``score`` [n_items] (minus ``exclude``), each with every task's prediction."""
        score = score.clone()
        if exclude is not None and len(exclude):
            score[torch.from_numpy(exclude)] = float("-inf")
        k = min(k, int(torch.isfinite(score).sum()))
        top = torch.topk(score, k).indices  # [k]
        logits = self.model.pair_logits(user_repr.expand(k, -1), top)
        out = []
        for n, item in enumerate(top.tolist()):
            per_task = {name: task.describe(task.predict(logits[name][n]), self.artifact.categories)
                        for name, task in self.tasks.items()}  # fmt: skip
            out.append({"item_id": self.item_ids[item], "title": self._titles[item],
                        "categories": self._categories[item], "score": round(float(score[item]), 4),
                        "scores": per_task})  # fmt: skip
        return out


def _lookup(ids: list[str], row_of: dict[str, int], known: list[str], kind: str, error: type[MtlrecError]
            ) -> np.ndarray:  # fmt: skip
    """Rows of ``ids`` (int64); the first unknown one raises ``error`` naming it and an example of a valid id."""
    rows = []
    for value in ids:
        row = row_of.get(str(value))
        if row is None:
            raise error(f"unknown {kind} '{value}': not in this run's {len(known):,} {kind}s (e.g. '{known[0]}')")
        rows.append(row)
    return np.asarray(rows, dtype=np.int64)
