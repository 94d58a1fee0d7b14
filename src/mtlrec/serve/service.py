"""What the server computes, without the web framework: a loaded run plus what serving adds to ``Recommender``
(reasons, similar items, pair scores, the most-popular fallback). Every user-fixable problem is a
:class:`ServeError` carrying its HTTP status, so the app turns it into a JSON error and never a 500."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtlrec.errors import ConfigError, MtlrecError
from mtlrec.recommend import Query, Recommender
from mtlrec.recommend.scoring import blend_scores, check_blend
from mtlrec.train.data import histories

MAX_K = 1000
REASON_ITEMS = 2  # history items named per recommendation (the first is the one in the sentence)
SCORE_CHUNK = 4096  # (user, item) pairs per forward pass in score()


class ServeError(MtlrecError):
    """A request the server cannot serve: ``status`` is the HTTP status, ``detail`` JSON-friendly context."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


def parse_blend(text: str | None) -> dict[str, float] | None:
    """'interest:1,rating:0.3' -> {'interest': 1.0, 'rating': 0.3}; None or '' -> None (the run's default)."""
    if text is None or not text.strip():
        return None
    blend: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not name.strip() or not math.isfinite(weight):
            raise ServeError(
                400,
                f"blend: expected NAME:WEIGHT[,NAME:WEIGHT...] with finite weights, got '{part}'",
                {"example": "interest:1,rating:0.3"},
            )
        blend[name.strip()] = weight
    return blend


def _listing(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class ServingModel:
    """A run loaded once for serving. Thread-safe for concurrent requests: the model is only read (eval mode, no
    gradients); text queries, which use the lazily loaded language model, take a lock."""

    def __init__(self, recommender: Recommender) -> None:
        rec = self.rec = recommender
        self.run_dir = Path(rec.artifact.run_dir)
        self.meta: dict[str, Any] = dict(rec.artifact.meta)
        self.metrics: dict[str, Any] = {}  # metrics.json, then run.json (times) of runs written since it split off
        for name in ("metrics.json", "run.json"):
            if (self.run_dir / name).is_file():
                self.metrics.update(json.loads((self.run_dir / name).read_text()))
        self.item_ids, self.user_ids = rec.item_ids, rec.user_ids
        self.n_items = len(self.item_ids)
        self._item_row = {item: row for row, item in enumerate(self.item_ids)}
        self._user_row = {user: row for row, user in enumerate(self.user_ids)}
        self.rankable = [name for name, task in rec.tasks.items() if task.rankable]
        with torch.no_grad():  # unit vectors for cosine similarity: the model's item representations and texts'
            self.item_vectors = F.normalize(rec.item_reprs.float(), dim=-1).numpy()  # [n_items, dim]
            self.text_vectors = F.normalize(rec.model.item_encoder.text.float(), dim=-1).numpy()  # [n, text_dim]
        split = rec.split
        self.popularity = np.bincount(split.items, minlength=self.n_items)  # users who have each item, in the run
        items = rec.artifact.items
        self._titles: list[str] = [str(t) for t in items["title"]]
        self._categories: list[list[str]] = [[str(c) for c in cats] for cats in items["categories"]]
        self._years = items["year"].tolist() if "year" in items else [None] * self.n_items
        self._texts = items["text"].tolist() if "text" in items else [""] * self.n_items
        self._text_lock = threading.Lock()

    @classmethod
    def load(cls, run_dir: str | Path, cache_mb: float = 0, candidates: int = 0) -> ServingModel:
        """``cache_mb``: MiB of known users' catalogue scores kept between requests; ``candidates`` > 0: rank that
        many FAISS candidates per known user instead of the catalogue (see ``Recommender``)."""
        return cls(Recommender.load(run_dir, cache_mb, candidates))

    # -- describing the run ----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        config = self.rec.artifact.config
        metrics = {k: v for k, v in self.metrics.items() if isinstance(v, dict)}
        training = {k: self.metrics[k] for k in ("seed", "best_epoch", "train_seconds") if k in self.metrics}
        return {
            "run": str(self.run_dir),
            "run_name": self.run_dir.name,
            "dataset": self.meta.get("dataset", config.data.dataset),
            "created": self.meta.get("created"),
            "mtlrec_version": self.meta.get("mtlrec_version"),
            "encoder": self.meta.get("encoder"),
            "n_users": len(self.user_ids),
            "n_items": self.n_items,
            "tasks": list(self.rec.tasks),
            "rankable_tasks": self.rankable,
            "default_blend": dict(self.rec.default_blend),
            "metrics": metrics,
            "training": training,
        }

    # -- items -----------------------------------------------------------------------------------------------------
    def item_row(self, item_id: str) -> int:
        row = self._item_row.get(item_id)
        if row is None:
            raise ServeError(
                404,
                f"unknown item '{item_id}': not in this run's {self.n_items:,} items (e.g. '{self.item_ids[0]}')",
                {"unknown_items": [item_id]},
            )
        return row

    def _item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        unknown = [i for i in dict.fromkeys(item_ids) if i not in self._item_row]
        if unknown:
            raise ServeError(
                404,
                f"unknown item(s) {_listing(unknown)}: not in this run's {self.n_items:,} items",
                {"unknown_items": unknown},
            )
        return np.asarray([self._item_row[i] for i in item_ids], dtype=np.int64)

    def brief(self, row: int) -> dict[str, Any]:
        return {"item_id": self.item_ids[row], "title": self._titles[row], "categories": self._categories[row]}

    def item(self, item_id: str) -> dict[str, Any]:
        row = self.item_row(item_id)
        year = self._years[row]
        year = None if year is None or (isinstance(year, float) and math.isnan(year)) else year
        if isinstance(year, float) and year.is_integer():
            year = int(year)
        return {
            **self.brief(row),
            "year": year,
            "text": str(self._texts[row] or ""),
            "popularity": int(self.popularity[row]),
        }

    def similar(self, item_id: str, k: int, by: str) -> list[dict[str, Any]]:
        """The ``k`` items closest to ``item_id`` by cosine: of the model's item representations (``learned``) or
        of the language model's text vectors stored in the run (``text``). The item itself is left out."""
        row = self.item_row(item_id)
        _check_k(k)
        if by not in ("learned", "text"):
            raise ServeError(400, f"by must be 'learned' or 'text', got '{by}'", {"valid": ["learned", "text"]})
        vectors = self.item_vectors if by == "learned" else self.text_vectors
        similarity = vectors @ vectors[row]  # [n_items]
        similarity[row] = -math.inf
        top = np.argsort(-similarity, kind="stable")[: min(k, self.n_items - 1)]
        return [{**self.brief(r), "similarity": round(float(similarity[r]), 4)} for r in top.tolist()]

    # -- recommendations -------------------------------------------------------------------------------------------
    def _blend(self, blend: dict[str, float] | None) -> dict[str, float]:
        blend = dict(self.rec.default_blend) if blend is None else dict(blend)
        try:
            return check_blend(blend, self.rec.tasks)
        except ConfigError as exc:
            raise ServeError(400, str(exc), {"valid": self.rankable}) from None

    def user_row(self, user: str) -> int | None:
        return self._user_row.get(user)

    def liked_history(self, row: int) -> np.ndarray:
        """Items of a known user that reasons may name: everything known about them, except items they rated below
        their own mean rating (when they have ratings); if that leaves nothing, everything."""
        split = self.rec.split
        lo, hi = split.offsets[row], split.offsets[row + 1]
        items, ratings = split.items[lo:hi], split.ratings[lo:hi]
        rated = ~np.isnan(ratings)
        if rated.any():
            keep = ~rated | (ratings >= ratings[rated].mean() - 1e-6)
            if keep.any():
                items = items[keep]
        return np.unique(items)

    def _with_reasons(self, recs: list[dict[str, Any]], liked: np.ndarray) -> list[dict[str, Any]]:
        """Each recommendation gets ``because``: the ``liked`` items most similar to it (cosine of the model's item
        representations, itself excluded), and ``reason``: "because you liked <title of the most similar>"."""
        if not recs or not len(liked):
            return [{**rec, "reason": None, "because": []} for rec in recs]
        rows = np.asarray([self._item_row[r["item_id"]] for r in recs], dtype=np.int64)
        similarity = self.item_vectors[rows] @ self.item_vectors[liked].T  # [k, n_liked]
        similarity[rows[:, None] == liked[None, :]] = -math.inf  # never "because you liked <itself>"
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :REASON_ITEMS]  # [k, <= REASON_ITEMS]
        out = []
        for rec, sims, order in zip(recs, similarity, nearest.tolist(), strict=True):
            because = [{**self.brief(int(liked[j])), "similarity": round(float(sims[j]), 4)}
                       for j in order if math.isfinite(sims[j])]  # fmt: skip
            reason = f"because you liked {because[0]['title']}" if because else None
            out.append({**rec, "reason": reason, "because": because})
        return out

    def query(
        self, user: str, k: int = 10, exclude_seen: bool = True, blend: dict[str, float] | None = None
    ) -> Query | None:
        """A checked request for ``user``'s top ``k`` (ServeError on a bad k or blend); None for an unknown user
        (see :meth:`unknown_user`)."""
        _check_k(k)
        weights = self._blend(blend)
        if self.user_row(user) is None:
            return None
        return Query(user, min(k, self.n_items), exclude_seen, weights)

    def unknown_user(self, user: str, k: int, cold_start: bool) -> dict[str, Any]:
        """The answer for a user the run does not know: a 404, or with ``cold_start`` the most popular items of the
        run (most users first; no personal scores, no reasons)."""
        if not cold_start:
            raise ServeError(
                404,
                f"unknown user '{user}': not in this run's {len(self.user_ids):,} users (e.g. "
                f"'{self.user_ids[0]}'); add cold_start=true for the most popular items, or POST /recommend "
                '{"liked": [...]} or {"text": "..."} for a personal list from a few items or a description',
                {"unknown_users": [user]},
            )
        return {"user": user, "strategy": "most_popular", "blend": None, "items": self.most_popular(k)}

    def recommend_many(self, queries: Sequence[Query]) -> list[dict[str, Any]]:
        """Known users' top items with reasons (``Recommender.recommend_many``: one pass of the network for all),
        one response per query from :meth:`query`."""
        lists = self.rec.recommend_many(queries)
        return [
            {"user": q.user, "strategy": "model", "blend": q.blend,
             "items": self._with_reasons(items, self.liked_history(self._user_row[q.user]))}
            for q, items in zip(queries, lists, strict=True)
        ]  # fmt: skip

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude_seen: bool = True,
        blend: dict[str, float] | None = None,
        cold_start: bool = False,
    ) -> dict[str, Any]:
        """A known user's top ``k`` (``Recommender.recommend``) with reasons; an unknown one: :meth:`unknown_user`."""
        query = self.query(user, k, exclude_seen, blend)
        return self.unknown_user(user, k, cold_start) if query is None else self.recommend_many([query])[0]

    def most_popular(self, k: int) -> list[dict[str, Any]]:
        order = np.argsort(-self.popularity, kind="stable")[: min(k, self.n_items)]
        return [
            {
                **self.brief(int(r)),
                "score": float(self.popularity[r]),
                "scores": {},
                "reason": f"popular: {int(self.popularity[r]):,} users have it",
                "because": [],
            }
            for r in order
        ]

    def recommend_new_user(
        self,
        liked: Sequence[str] | None = None,
        text: str | None = None,
        k: int = 10,
        blend: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """A user the model never saw, from liked item ids and/or a text (``Recommender.recommend_new_user``);
        reasons name the liked items."""
        _check_k(k)
        weights = self._blend(blend)
        liked = list(liked or [])
        liked_rows = self._item_rows(liked)
        has_text = bool(text and text.strip())
        if not liked and not has_text:
            raise ServeError(
                400, 'a new user needs "liked" item ids and/or a "text" about their tastes (both are empty)'
            )
        k = min(k, self.n_items)
        if has_text:
            with self._text_lock:  # the language model loads on first use; its tokenizer is not thread-safe
                encoder_loaded = self.rec._encoder is not None
                try:
                    recs = self.rec.recommend_new_user(liked=liked, text=text, k=k, blend=weights)
                except Exception as exc:  # the request itself was checked above: this is the language model
                    if encoder_loaded:
                        raise
                    raise ServeError(
                        503,
                        f"the run's language model could not be loaded for text queries: {exc}; "
                        "use liked items instead",
                    ) from exc
        else:
            recs = self.rec.recommend_new_user(liked=liked, k=k, blend=weights)
        items = self._with_reasons(recs, np.unique(liked_rows))
        if not liked:
            items = [{**r, "reason": "close to what you described"} for r in items]
        return {"user": None, "strategy": "new_user", "blend": weights, "items": items}

    # -- pair scores -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[str, str]], blend: dict[str, float] | None = None) -> dict[str, Any]:
        """Every task's prediction for explicit (user, item) pairs of known users and items, and the blended
        ranking score (the number ``recommend`` ranks by). Unknown ids fail together, all named."""
        weights = self._blend(blend)
        if not pairs:
            raise ServeError(400, "give at least one (user, item) pair")
        unknown_users = [u for u in dict.fromkeys(u for u, _ in pairs) if u not in self._user_row]
        unknown_items = [i for i in dict.fromkeys(i for _, i in pairs) if i not in self._item_row]
        if unknown_users or unknown_items:
            parts = []
            if unknown_users:
                parts.append(f"unknown user(s) {_listing(unknown_users)}")
            if unknown_items:
                parts.append(f"unknown item(s) {_listing(unknown_items)}")
            raise ServeError(
                404,
                "; ".join(parts) + " (not in this run)",
                {"unknown_users": unknown_users, "unknown_items": unknown_items},
            )
        rec, split = self.rec, self.rec.split
        users = list(dict.fromkeys(u for u, _ in pairs))
        rows = np.asarray([self._user_row[u] for u in users], dtype=np.int64)
        position = {u: n for n, u in enumerate(users)}
        hist, mask = histories(split, rows, split.offsets[1:][rows], rec.model.history_len)  # all that is known
        user_repr = rec.model.user_repr(torch.from_numpy(rows), hist, mask)  # [n_users, dim]
        out: list[dict[str, Any]] = []
        for start in range(0, len(pairs), SCORE_CHUNK):
            chunk = pairs[start : start + SCORE_CHUNK]
            which = torch.as_tensor([position[u] for u, _ in chunk])
            items = torch.as_tensor([self._item_row[i] for _, i in chunk])
            logits = rec.model.pair_logits(user_repr[which], items)
            blended = blend_scores(rec.tasks, weights, logits).tolist()
            predictions = {name: task.predict(logits[name]).numpy() for name, task in rec.tasks.items()}
            for n, (user, item) in enumerate(chunk):
                per_task = {name: task.describe(predictions[name][n], rec.artifact.categories)
                            for name, task in rec.tasks.items()}  # fmt: skip
                out.append({"user": user, "item": item, "score": round(blended[n], 4), "scores": per_task})
        return {"blend": weights, "predictions": out}


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ServeError(422, f"k must be between 1 and {MAX_K}, got {k}", {"k": k})
