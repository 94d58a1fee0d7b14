"""Serving fast: several users in one pass give exactly what each gets alone, the server's batcher groups the
requests that arrive together without mixing up answers, models or failures, and cached scores change nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from mtlrec.recommend import Query, Recommender  # noqa: E402
from mtlrec.serve import create_app  # noqa: E402
from mtlrec.serve import schemas as s  # noqa: E402
from mtlrec.serve.batching import RecommendBatcher  # noqa: E402
from mtlrec.serve.service import ServingModel  # noqa: E402

QUERIES = [
    Query("u1", k=7),
    Query("u2", k=3, exclude_seen=False),
    Query("u1", k=5, blend={"interest": 1.0, "rating": 0.3}),
    Query("u9", k=80, exclude_seen=False, blend={"rating": 1.0}),
    Query("u4", k=1),
]


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> ServingModel:
    return ServingModel.load(tiny_run)


def test_recommend_many_equals_each_user_alone(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    together = rec.recommend_many(QUERIES)
    alone = [rec.recommend(q.user, k=q.k, exclude_seen=q.exclude_seen, blend=q.blend) for q in QUERIES]
    assert together == alone
    assert [len(items) for items in together] == [7, 3, 5, 80, 1]
    assert len({i["item_id"] for i in together[3]}) == 80  # the whole catalogue, each item once


class Spy:
    """Records the batch sizes of ``ServingModel.recommend_many``; ``fail`` decides (from the users of a batch)
    whether the call raises."""

    def __init__(self, model: ServingModel, fail: Any = None) -> None:
        self.model, self.fail, self.sizes = model, fail, []
        self.original = model.recommend_many

    def __call__(self, queries: list[Query]) -> list[dict]:
        self.sizes.append(len(queries))
        if self.fail is not None and self.fail([q.user for q in queries]):
            raise RuntimeError("boom")
        return self.original(queries)


async def send_together(batcher: RecommendBatcher, model: ServingModel, queries: list[Query]) -> list[Any]:
    """All queries in one turn of the event loop (as requests that arrive together)."""
    return await asyncio.gather(*(batcher.recommend(model, q) for q in queries), return_exceptions=True)


def test_requests_that_arrive_together_are_answered_in_batches(
    model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(model)
    monkeypatch.setattr(model, "recommend_many", spy)
    queries = [model.query(f"u{n % 60}", k=1 + n % 9) for n in range(20)]
    answers = asyncio.run(send_together(RecommendBatcher(max_batch=8), model, queries))
    assert spy.sizes == [8, 8, 4]
    monkeypatch.undo()
    assert answers == [model.recommend_many([q])[0] for q in queries]  # each its own answer, in order


def test_a_failing_batch_is_answered_one_by_one_and_only_the_bad_query_fails(
    model: ServingModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(model, fail=lambda users: len(users) > 1 or users == ["u3"])
    monkeypatch.setattr(model, "recommend_many", spy)
    queries = [model.query(u) for u in ["u1", "u2", "u3", "u4"]]
    answers = asyncio.run(send_together(RecommendBatcher(), model, queries))
    assert spy.sizes == [4, 1, 1, 1, 1]  # the batch failed, then each alone
    assert isinstance(answers[2], RuntimeError)
    monkeypatch.undo()
    assert [answers[n] for n in (0, 1, 3)] == [model.recommend_many([queries[n]])[0] for n in (0, 1, 3)]


def test_queries_of_two_models_are_never_mixed(model: ServingModel, tiny_run: Path) -> None:
    other = ServingModel.load(tiny_run)  # as after a hot reload: requests in flight hold the old model
    spies = [Spy(model), Spy(other)]
    model.recommend_many, other.recommend_many = spies  # type: ignore[method-assign]
    try:
        batcher = RecommendBatcher()

        async def both() -> list[Any]:
            return await asyncio.gather(*(batcher.recommend(m, m.query("u1")) for m in (model, other, model)))

        asyncio.run(both())
    finally:
        del model.recommend_many, other.recommend_many
    assert spies[0].sizes == [2] and spies[1].sizes == [1]


def test_get_recommend_follows_the_documented_schema(tiny_run: Path) -> None:
    """The endpoint sends the body without FastAPI's response validation (speed): check it here instead."""
    with TestClient(create_app(tiny_run)) as client:
        for url in ["/recommend?user=u1&k=5", "/recommend?user=nobody&cold_start=true&k=3"]:
            body = client.get(url).json()
            assert s.RecommendResponse.model_validate(body).model_dump(mode="json") == json.loads(json.dumps(body))


def test_cached_scores_give_the_same_recommendations(tiny_run: Path) -> None:
    plain, cached = Recommender.load(tiny_run), Recommender.load(tiny_run, cache_mb=1)
    first = cached.recommend_many(QUERIES)
    assert cached.cache is not None and len(cached.cache) == 4  # u1 twice
    assert (cached.cache.hits, cached.cache.misses) == (0, 5)
    assert cached.recommend_many(QUERIES) == first == plain.recommend_many(QUERIES)
    assert cached.cache.hits == 5
    entry = cached.cache.get(cached._user_row["u9"])
    assert entry is not None and set(entry[1]) == {"interest", "rating"}  # every rankable task, whatever the blend
    rating = entry[1]["rating"]
    assert rating.untyped_storage().nbytes() == rating.numel() * rating.element_size()  # a copy, not a batch's view


def test_score_cache_drops_the_least_recently_used_beyond_its_size() -> None:
    import torch

    from mtlrec.recommend.cache import ScoreCache

    row = 4 * 1000 + 4 * 24  # bytes of one entry below: logits of 1,000 items and a 24-dim representation
    cache = ScoreCache(max_mb=3 * row / 2**20)
    for user in range(3):
        cache.put(user, torch.zeros(24), {"interest": torch.full((1000,), float(user))})
    assert len(cache) == 3 and cache.bytes == 3 * row
    assert cache.get(0) is not None  # 0 is now the most recently used
    cache.put(3, torch.zeros(24), {"interest": torch.zeros(1000)})
    assert cache.get(1) is None and [u for u in range(4) if cache.get(u) is not None] == [0, 2, 3]
    assert float(cache.get(2)[1]["interest"][0]) == 2.0  # type: ignore[index]
    cache.put(9, torch.zeros(24), {"interest": torch.zeros(10_000)})  # larger than the whole cache: not kept
    assert cache.get(9) is None and cache.bytes == 3 * row
