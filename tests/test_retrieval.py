"""Candidate retrieval (FAISS over the model's two towers) for large catalogues: with every item as a candidate it
recommends exactly what full ranking does, it never returns seen items, and it says what to install without FAISS."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from mtlrec.errors import MtlrecError  # noqa: E402
from mtlrec.recommend import Query, Recommender  # noqa: E402
from mtlrec.recommend.retrieval import CandidateIndex, item_vectors, user_vectors  # noqa: E402

QUERIES = [Query(f"u{n}", k=10) for n in range(0, 60, 3)] + [Query("u7", k=5, blend={"interest": 1, "rating": 0.5})]


def ids(lists: list[list[dict]]) -> list[list[str]]:
    return [[item["item_id"] for item in items] for items in lists]


def test_every_item_a_candidate_is_full_ranking(tiny_run: Path) -> None:
    exact = Recommender.load(tiny_run)
    flat = Recommender.load(tiny_run, candidates=80, index="flat")
    got, expected = flat.recommend_many(QUERIES), exact.recommend_many(QUERIES)
    assert ids(got) == ids(expected)
    for a, b in zip(got, expected, strict=True):
        assert [i["score"] for i in a] == pytest.approx([i["score"] for i in b], abs=2e-4)


def test_candidates_are_the_best_by_the_two_towers_and_never_seen(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run, candidates=12, index="hnsw")
    for query, items in zip(QUERIES, rec.recommend_many(QUERIES), strict=True):
        seen = {rec.item_ids[i] for i in rec.seen_items(query.user)}
        assert len(items) == query.k and not seen & {i["item_id"] for i in items}
    user = torch.randn(3, rec.item_reprs.shape[1])
    scores = user_vectors(rec.model, user) @ item_vectors(rec.model, rec.item_reprs).T  # [3, n_items]
    exact = np.argsort(-scores, axis=1)[:, :10]
    found = CandidateIndex(item_vectors(rec.model, rec.item_reprs), "hnsw").search(user_vectors(rec.model, user), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)])
    assert recall >= 0.9  # HNSW finds (nearly) the exact inner-product neighbours


def test_without_faiss_the_error_says_what_to_install(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(MtlrecError, match=r"pip install 'mtlrec\[faiss\]'"):
        Recommender.load(tiny_run, candidates=10)


def test_the_server_ranks_candidates_when_asked(tiny_run: Path) -> None:
    from fastapi.testclient import TestClient

    from mtlrec.serve import create_app

    expected = Recommender.load(tiny_run, candidates=30).recommend("u4", k=5)
    with TestClient(create_app(tiny_run, candidates=30, score_cache_mb=0)) as client:
        assert client.app.state.model.rec.index is not None  # type: ignore[attr-defined]
        body = client.get("/recommend?user=u4&k=5").json()
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in expected]


def test_a_model_with_the_next_item_task_retrieves_with_its_two_towers(world: Path, tmp_path: Path) -> None:
    from conftest import tiny_overrides
    from mtlrec.config import load_config
    from mtlrec.train.run import train_run

    tasks = {"interest": {"weight": 1.0}, "next_item": {"weight": 0.5}}
    train_run(load_config(overrides=tiny_overrides(world, tasks=tasks, **{"train.epochs": 2})), tmp_path / "run",
              progress=False, log=lambda _: None)  # fmt: skip
    rec = Recommender.load(tmp_path / "run", candidates=80, index="flat")
    head = rec.model.heads["next_item"]
    user = torch.randn(4, rec.item_reprs.shape[1])
    with torch.no_grad():
        assert np.allclose(user_vectors(rec.model, user), head.user(user).numpy(), atol=1e-6)
        assert np.allclose(item_vectors(rec.model, rec.item_reprs), head.item(rec.item_reprs).numpy(), atol=1e-6)
    exact = Recommender.load(tmp_path / "run")
    queries = QUERIES[:-1]  # (the last blends in rating, which this model lacks)
    assert ids(rec.recommend_many(queries)) == ids(exact.recommend_many(queries))
