"""Top-K recommendation from a trained run, with the same scores the evaluation ranks by."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrec.errors import MtlrecError
from mtlrec.recommend.artifact import Artifact, load_artifact
from mtlrec.recommend.cache import ScoreCache
from mtlrec.recommend.retrieval import CandidateIndex, item_vectors, user_vectors
from mtlrec.recommend.scoring import blend_scores, check_blend, new_user_scores, ranking_scores
from mtlrec.train.data import histories

TEXT_NEIGHBOURS = 10  # items closest to a new user's text that stand in for their history


class UnknownUserError(MtlrecError):
    pass


@dataclass(frozen=True)
class Query:
    """One known user's request to :meth:`Recommender.recommend_many`; ``blend`` None is the run's default."""

    user: str
    k: int = 10
    exclude_seen: bool = True
    blend: dict[str, float] | None = None


class Recommender:
    """Load with ``Recommender.load(run_dir)``. A user's history is everything known about them in the run
    (train, validation and test interactions); seen items are excluded from recommendations by default."""

    def __init__(self, artifact: Artifact, cache_mb: float = 0, candidates: int = 0, index: str = "hnsw") -> None:
        """``cache_mb`` > 0 keeps up to that many MiB of known users' catalogue scores (``ScoreCache``): a returning
        user is ranked without a pass of the network. For servers; 0 computes every time.

        ``candidates`` > 0: for large catalogues, known users' recommendations rank only that many candidates, the
        best by the model's two towers in a FAISS ``index`` ('hnsw' approximate, 'flat' exact; see
        ``recommend.retrieval``), instead of the whole catalogue."""
        self.artifact = artifact
        self.cache = ScoreCache(cache_mb) if cache_mb > 0 else None
        self.model, self.tasks, self.split = artifact.model, artifact.tasks, artifact.split
        self.item_ids: list[str] = list(artifact.item_ids)
        self.user_ids: list[str] = list(artifact.user_ids)
        self._user_row = {u: k for k, u in enumerate(self.user_ids)}
        self._item_row = {i: k for k, i in enumerate(self.item_ids)}
        self._encoder = None  # the language model, loaded on the first text query
        self.default_blend = dict(artifact.config.eval.blend)
        self._titles = artifact.items["title"].tolist()
        self._categories = [list(c) for c in artifact.items["categories"]]
        self.model.eval()
        with torch.no_grad():  # the model is frozen from here on: the catalogue's representations, once
            self.item_reprs = self.model.item_encoder.all()  # [n_items, dim]
        self.candidates = candidates
        self.index = CandidateIndex(item_vectors(self.model, self.item_reprs), index) if candidates > 0 else None

    @classmethod
    def load(cls, run_dir: str | Path, cache_mb: float = 0, candidates: int = 0, index: str = "hnsw") -> Recommender:
        return cls(load_artifact(run_dir), cache_mb, candidates, index)

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
        return self.recommend_many([Query(user, k, exclude_seen, blend)])[0]

    @torch.no_grad()
    def recommend_many(self, queries: Sequence[Query]) -> list[list[dict[str, Any]]]:
        """:meth:`recommend` for several users in one pass of the network (a server batches requests that arrive
        together this way): one list of top items per query, in order."""
        blends = [self._check(q.k, q.blend) for q in queries]
        rows = self._rows([q.user for q in queries])
        if self.index is not None:
            return self._recommend_candidates(queries, blends, rows)
        user, logits = self._user_scores(rows, list(dict.fromkeys(name for blend in blends for name in blend)))
        picks = []
        for n, (query, blend) in enumerate(zip(queries, blends, strict=True)):
            score = blend_scores(self.tasks, blend, logits[n])  # [n_items]
            seen = self.split.items[self.split.offsets[rows[n]] : self.split.offsets[rows[n] + 1]]
            picks.append(_pick(score, query.k, seen if query.exclude_seen else None))
        return self._describe(user, picks)

    def _recommend_candidates(self, queries: Sequence[Query], blends: list[dict[str, float]], rows: np.ndarray
                              ) -> list[list[dict[str, Any]]]:  # fmt: skip
        """recommend_many over each user's ``candidates`` best items by the two towers (FAISS), scored by the model:
        one search for all users, one pass of the heads for all their candidates."""
        assert self.index is not None
        user = self._user_reprs(rows)  # [B, dim]
        seen = [self.split.items[self.split.offsets[r] : self.split.offsets[r + 1]] for r in rows]
        found = self.index.search(user_vectors(self.model, user), self.candidates + max(map(len, seen)))
        pools = []
        for query, own, hits in zip(queries, seen, found, strict=True):
            hits = hits[hits >= 0]
            if query.exclude_seen:
                hits = hits[~np.isin(hits, own)]
            pools.append(hits[: self.candidates])
        owner = torch.from_numpy(np.repeat(np.arange(len(rows)), [len(p) for p in pools]))
        items = torch.from_numpy(np.concatenate(pools).astype(np.int64))
        logits = self.model.pair_logits(user[owner], items)  # task -> [sum of pool sizes]
        picks, start = [], 0
        for query, blend, pool in zip(queries, blends, pools, strict=True):
            part = {name: logits[name][start : start + len(pool)] for name in blend}
            top = _pick(blend_scores(self.tasks, blend, part), query.k, None)
            picks.append((torch.from_numpy(pool)[top[0]], top[1]))
            start += len(pool)
        return self._describe(user, picks)

    def _user_reprs(self, rows: np.ndarray) -> torch.Tensor:
        """Known users' representations [B, dim] from everything known about them."""
        hist, mask = histories(self.split, rows, self.split.offsets[1:][rows], self.model.history_len)
        return self.model.user_repr(torch.from_numpy(rows), hist, mask)

    def _user_scores(self, rows: np.ndarray, tasks: list[str]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        """Known users' representations [B, dim] and, per user, catalogue logits of ``tasks`` (of every rankable
        task with a cache, so one entry serves any blend), from the cache or one pass for the users not in it."""
        found = [None if self.cache is None else self.cache.get(int(row)) for row in rows]
        missing = [n for n, entry in enumerate(found) if entry is None]
        if missing:
            if self.cache is not None:
                tasks = [name for name, task in self.tasks.items() if task.rankable]
            user = self._user_reprs(rows[missing])  # [M, dim]
            logits = self.model.catalogue_logits(user, tasks, self.item_reprs)  # task -> [M, n_items]
            for j, n in enumerate(missing):
                found[n] = (user[j], {name: logits[name][j] for name in tasks})
                if self.cache is not None:
                    self.cache.put(int(rows[n]), *found[n])
        return torch.stack([entry[0] for entry in found]), [entry[1] for entry in found]  # type: ignore[index]

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
        return self._describe(self.model.cold_user_repr(hist, mask), [_pick(score[0], k, liked_rows)])[0]

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
        if self._encoder is None:  # a fine-tuned language model (text.lora) is part of the model; else load one
            from mtlrec.text import build_encoder

            tc = self.artifact.config.text
            tuned = getattr(self.model.item_encoder, "language_model", None)
            self._encoder = tuned if tuned is not None else build_encoder(tc.encoder, tc.model, dim=tc.dim)
        query = torch.as_tensor(np.asarray(self._encoder.encode([text]), dtype=np.float32))[0]  # [text_dim]
        vectors = self.model.item_encoder.text  # [n_items, text_dim]
        centre = vectors.mean(0)  # [text_dim]
        similarity = torch.nn.functional.cosine_similarity(vectors - centre, (query - centre)[None], dim=-1)
        top = torch.topk(similarity, min(TEXT_NEIGHBOURS, len(similarity))).indices.flip(0)
        return top.numpy().astype(np.int64)

    def _describe(self, user: torch.Tensor, picks: list[tuple[torch.Tensor, torch.Tensor]]
                  ) -> list[list[dict[str, Any]]]:  # fmt: skip
        """Each pick (item indexes, scores) of the user in the same row of ``user`` [B, dim] as a list of items with
        every task's prediction; the predictions of all picks come from one forward pass."""
        counts = torch.as_tensor([len(items) for items, _ in picks])
        items = torch.cat([items for items, _ in picks])  # [R]
        logits = self.model.pair_logits(torch.repeat_interleave(user, counts, dim=0), items)
        predictions = {name: task.predict(logits[name]).numpy() for name, task in self.tasks.items()}
        scores = torch.cat([score for _, score in picks]).tolist()
        rows = []
        for r, item in enumerate(items.tolist()):
            per_task = {name: task.describe(predictions[name][r], self.artifact.categories)
                        for name, task in self.tasks.items()}  # fmt: skip
            rows.append({"item_id": self.item_ids[item], "title": self._titles[item],
                         "categories": self._categories[item], "score": round(scores[r], 4),
                         "scores": per_task})  # fmt: skip
        bounds = np.cumsum([0, *counts.tolist()])
        return [rows[a:b] for a, b in itertools.pairwise(bounds)]


def _pick(score: torch.Tensor, k: int, exclude: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items of ``score`` [n_items] outside ``exclude`` (fewer when fewer are left): their indexes
    and scores, best first."""
    if exclude is not None and len(exclude):
        score = score.clone()
        score[torch.from_numpy(exclude)] = float("-inf")
    top = torch.topk(score, min(k, int(torch.isfinite(score).sum())))
    return top.indices, top.values

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
