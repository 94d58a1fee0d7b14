"""The HTTP API against the tiny run: every answer checked against the library (Recommender, the model), every
error a JSON {"error", "detail"} with a 4xx, feedback durable and idempotent, metrics that count, a real server."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import running_server  # noqa: E402
from mtlrec import Recommender  # noqa: E402
from mtlrec.serve import auth, create_app  # noqa: E402
from mtlrec.train.data import histories  # noqa: E402

API_KEY = "s3cret-key-for-tests"


@pytest.fixture(scope="module")
def rec(tiny_run: Path) -> Recommender:
    return Recommender.load(tiny_run)


@pytest.fixture(scope="module")
def feedback_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "feedback.sqlite"


@pytest.fixture(scope="module")
def client(tiny_run: Path, feedback_db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_run, feedback_db=feedback_db)) as c:
        yield c


@pytest.fixture(scope="module")
def secured(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("secured") / "feedback.sqlite"
    with TestClient(create_app(tiny_run, feedback_db=db, api_key=API_KEY)) as c:
        yield c


def strip_reasons(items: list[dict]) -> list[dict]:
    return [{k: v for k, v in item.items() if k not in ("reason", "because")} for item in items]


def assert_error(response, status: int, fragment: str = "") -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["error"]
    assert fragment in body["error"], body["error"]
    return body


# -- probes -----------------------------------------------------------------------------------------------------------
def test_health_and_ready_show_the_run_and_its_metrics(client: TestClient, tiny_run: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    meta = json.loads((tiny_run / "meta.json").read_text())
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert body["status"] == "ready" and body["run"] == str(tiny_run) and body["run_name"] == tiny_run.name
    assert body["created"] == meta["created"] and body["dataset"] == meta["dataset"]
    assert (body["n_users"], body["n_items"]) == (60, 80)
    assert body["tasks"] == ["interest", "rating", "genre"] and body["rankable_tasks"] == ["interest", "rating"]
    assert body["metrics"]["test"] == metrics["test"] and body["metrics"]["valid"] == metrics["valid"]
    assert body["training"]["best_epoch"] == metrics["best_epoch"]
    assert body["feedback"]["enabled"] is True and body["writes_need_api_key"] is False


def test_not_ready_until_the_model_is_loaded(tiny_run: Path) -> None:
    cold = TestClient(create_app(tiny_run))  # not entered: the lifespan (model loading) has not run
    assert cold.get("/health").status_code == 200
    assert_error(cold.get("/ready"), 503, "not loaded")
    assert_error(cold.get("/recommend?user=u1"), 503, "not loaded")
    assert "mtlrec_model_loaded 0" in cold.get("/metrics").text


def test_openapi_schema_lists_every_endpoint_and_the_key_schemes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/health",
        "/ready",
        "/metrics",
        "/recommend",
        "/items/{item_id}",
        "/items/{item_id}/similar",
        "/score",
        "/feedback",
    } <= set(schema["paths"])
    assert set(schema["paths"]["/recommend"]) == {"get", "post"}
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])
    assert "ErrorBody" in schema["components"]["schemas"]


# -- recommendations ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "blend", "exclude_seen"),
    [
        ("", None, True),
        ("&blend=interest:1,rating:0.3", {"interest": 1.0, "rating": 0.3}, True),
        ("&exclude_seen=false", None, False),
    ],
)
def test_get_recommend_equals_the_recommender(
    client: TestClient, rec: Recommender, query: str, blend: dict | None, exclude_seen: bool
) -> None:
    response = client.get(f"/recommend?user=u1&k=7{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == "u1" and body["strategy"] == "model"
    assert body["blend"] == (blend or rec.default_blend)
    expected = rec.recommend("u1", k=7, exclude_seen=exclude_seen, blend=blend)
    assert strip_reasons(body["items"]) == json.loads(json.dumps(expected))


def test_k_is_capped_at_the_catalogue(client: TestClient, rec: Recommender) -> None:
    items = client.get("/recommend?user=u2&k=1000&exclude_seen=false").json()["items"]
    assert len(items) == 80 and {i["item_id"] for i in items} == set(rec.item_ids)


def test_reasons_name_the_liked_history_item_most_similar_by_learned_representation(
    client: TestClient, rec: Recommender
) -> None:
    items = client.get("/recommend?user=u1&k=5").json()["items"]
    with torch.no_grad():
        reprs = F.normalize(rec.model.item_encoder.all(), dim=-1)
    row = rec.user_ids.index("u1")
    lo, hi = rec.split.offsets[row], rec.split.offsets[row + 1]
    history, ratings = rec.split.items[lo:hi], rec.split.ratings[lo:hi]
    liked = np.unique(history[ratings >= ratings.mean()])  # at or above the user's own mean rating
    assert 0 < len(liked) < len(np.unique(history))  # u1 rated some items 2: those are never "liked"
    for item in items:
        target = rec.item_ids.index(item["item_id"])
        similarity = (reprs[liked] @ reprs[target]).numpy()
        best = liked[int(np.argmax(similarity))]
        assert item["because"][0]["item_id"] == rec.item_ids[best]
        assert item["because"][0]["similarity"] == pytest.approx(float(similarity.max()), abs=1e-4)
        assert item["reason"] == f"because you liked {item['because'][0]['title']}"
        assert {b["item_id"] for b in item["because"]} <= {rec.item_ids[i] for i in liked}
        assert item["item_id"] not in {b["item_id"] for b in item["because"]}


def test_unknown_user_is_a_404_with_a_hint_and_cold_start_serves_the_most_popular(
    client: TestClient, rec: Recommender
) -> None:
    body = assert_error(client.get("/recommend?user=nobody"), 404, "unknown user 'nobody'")
    assert "cold_start=true" in body["error"] and body["detail"] == {"unknown_users": ["nobody"]}
    cold = client.get("/recommend?user=nobody&k=5&cold_start=true").json()
    counts = np.bincount(rec.split.items, minlength=len(rec.item_ids))
    expected = [rec.item_ids[i] for i in np.argsort(-counts, kind="stable")[:5]]
    assert cold["strategy"] == "most_popular" and [i["item_id"] for i in cold["items"]] == expected
    assert [i["score"] for i in cold["items"]] == [float(counts[rec.item_ids.index(i)]) for i in expected]


def test_post_recommend_equals_recommend_new_user(client: TestClient, rec: Recommender) -> None:
    body = client.post("/recommend", json={"liked": ["i1", "i5"], "k": 6}).json()
    assert body["strategy"] == "new_user" and body["user"] is None
    assert strip_reasons(body["items"]) == json.loads(json.dumps(rec.recommend_new_user(liked=["i1", "i5"], k=6)))
    for item in body["items"]:
        assert item["reason"].startswith("because you liked ") and item["because"][0]["item_id"] in {"i1", "i5"}
    text = client.post(
        "/recommend", json={"text": "Comedy movie", "liked": ["i1"], "k": 4, "blend": {"interest": 1, "rating": 0.5}}
    )
    assert text.status_code == 200, text.text
    expected = rec.recommend_new_user(liked=["i1"], text="Comedy movie", k=4, blend={"interest": 1, "rating": 0.5})
    assert strip_reasons(text.json()["items"]) == json.loads(json.dumps(expected))
    only_text = client.post("/recommend", json={"text": "Horror movie", "k": 3}).json()
    assert [i["reason"] for i in only_text["items"]] == ["close to what you described"] * 3


# -- errors: a message and the JSON shape, never a 500 -------------------------------------------------------------
BIG = b"[" + b" " * (1 << 20) + b"]"


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "fragment"),
    [
        ("get", "/recommend?user=u1&k=0", {}, 422, "query.k"),
        ("get", "/recommend?user=u1&k=1001", {}, 422, "less than or equal to 1000"),
        ("get", "/recommend?user=u1&k=ten", {}, 422, "query.k"),
        ("get", "/recommend", {}, 422, "query.user: Field required"),
        ("get", "/recommend?user=u1&blend=genre:1", {}, 400, "use one of interest, rating"),
        ("get", "/recommend?user=u1&blend=colour:2", {}, 400, "'colour' is not a rankable task"),
        ("get", "/recommend?user=u1&blend=interest", {}, 400, "NAME:WEIGHT"),
        ("get", "/recommend?user=u1&blend=interest:nan", {}, 400, "finite"),
        ("get", "/recommend?user=u1&blend=interest:0", {}, 400, "non-zero weight"),
        (
            "post",
            "/recommend",
            {"content": b'{"liked": [', "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON body at character 11: Expecting value",
        ),
        (
            "post",
            "/recommend",
            {"content": b'{"liked": ["i1"]}', "headers": {"content-type": "text/plain"}},
            415,
            "Content-Type: application/json",
        ),
        ("post", "/recommend", {"json": {}}, 400, "liked"),
        ("post", "/recommend", {"json": {"liked": ["i1", "ghost", "ghoul"]}}, 404, "'ghost', 'ghoul'"),
        ("post", "/recommend", {"json": {"liked": ["i1"], "k": 0}}, 422, "body.k"),
        ("post", "/recommend", {"json": {"liked": ["i1"], "colour": 1}}, 422, "body.colour"),
        ("post", "/recommend", {"json": {"liked": ["i1"], "blend": {"genre": 1}}}, 400, "not a rankable task"),
        ("post", "/recommend", {"content": BIG, "headers": {"content-type": "application/json"}}, 413, "1 MiB"),
        ("post", "/score", {"content": BIG, "headers": {"content-type": "application/json"}}, 413, "too large"),
        ("post", "/score", {"json": {"pairs": []}}, 422, "body.pairs"),
        ("post", "/score", {"json": {"pairs": [{"user": True, "item": "i1"}]}}, 422, "not a boolean"),
        ("get", "/items/nothing", {}, 404, "unknown item 'nothing'"),
        ("get", "/items/nothing/similar", {}, 404, "unknown item 'nothing'"),
        ("get", "/items/i1/similar?by=colour", {}, 422, "query.by"),
        ("get", "/items/i1/similar?k=1001", {}, 422, "query.k"),
        ("get", "/no/such/thing", {}, 404, "no such endpoint"),
        ("delete", "/recommend", {}, 405, "not allowed"),
    ],
)
def test_bad_requests_get_a_json_error_with_a_message(
    client: TestClient, method: str, url: str, kwargs: dict, status: int, fragment: str
) -> None:
    assert_error(getattr(client, method)(url, **kwargs), status, fragment)


def test_an_unexpected_failure_is_a_json_500_without_internals(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtlrec.serve.service import ServingModel

    def broken(self: ServingModel, item_id: str) -> dict:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ServingModel, "item", broken)
    with TestClient(create_app(tiny_run), raise_server_exceptions=False) as c:
        body = assert_error(c.get("/items/i1"), 500, "internal server error")
        assert "secret internals" not in json.dumps(body)
        assert c.get("/health").status_code == 200  # the server goes on
        metrics = c.get("/metrics").text
        assert 'mtlrec_requests_total{method="GET",path="/items/{item_id}",status="500"} 1' in metrics


def test_a_chunked_body_over_the_limit_is_refused_too(client: TestClient) -> None:
    chunks = iter([b'{"pairs": [' + b" " * 600_000, b" " * 600_000 + b"]}"])  # no Content-Length: chunked
    assert_error(client.post("/score", content=chunks, headers={"content-type": "application/json"}), 413, "1 MiB")
    small = iter([b'{"pairs": [{"user": "u1",', b' "item": "i2"}]}'])
    assert client.post("/score", content=small, headers={"content-type": "application/json"}).status_code == 200


def test_bad_blend_lists_the_valid_tasks(client: TestClient) -> None:
    body = assert_error(client.get("/recommend?user=u1&blend=genre:1"), 400)
    assert body["detail"] == {"valid": ["interest", "rating"]}


def test_reload_of_a_path_the_system_refuses_is_a_422_not_a_500(secured: TestClient, tiny_run: Path) -> None:
    # Found by schemathesis (tests/test_serve_fuzz.py): a run_dir over the file system's name limit made
    # Path.is_dir() raise OSError (ENAMETOOLONG), which was a 500.
    headers = {"X-API-Key": API_KEY}
    body = assert_error(secured.post("/admin/reload", json={"run_dir": "0" * 4096}, headers=headers), 422)
    assert "File name too long" in body["error"] and f"still serving {tiny_run}" in body["error"]
    assert secured.get("/ready").json()["run"] == str(tiny_run)


# -- items ----------------------------------------------------------------------------------------------------------
def test_item_and_similar_items_by_learned_and_text_vectors(client: TestClient, rec: Recommender) -> None:
    item = client.get("/items/i6").json()
    row = rec.item_ids.index("i6")
    assert item["title"] == "Drama movie number 6" and item["categories"] == ["Drama"] and item["year"] is None
    assert item["popularity"] == int((rec.split.items == row).sum())
    with torch.no_grad():
        spaces = {"learned": rec.model.item_encoder.all(), "text": rec.model.item_encoder.text}
    for by, vectors in spaces.items():
        body = client.get(f"/items/i6/similar?k=4&by={by}").json()
        assert body["by"] == by and body["item"]["item_id"] == "i6"
        cosine = F.cosine_similarity(vectors, vectors[row][None], dim=-1).numpy()
        cosine[row] = -np.inf
        best = np.sort(cosine)[::-1][:4]  # (items with equal cosines may come in either order)
        assert [i["similarity"] for i in body["items"]] == pytest.approx(best, abs=1e-4)
        got = [rec.item_ids.index(i["item_id"]) for i in body["items"]]
        assert cosine[got] == pytest.approx(best, abs=1e-4)
    assert len(client.get("/items/i6/similar?k=1000").json()["items"]) == 79  # every other item, never itself


# -- scores -----------------------------------------------------------------------------------------------------------
def test_score_equals_the_models_per_task_predictions(client: TestClient, rec: Recommender) -> None:
    pairs = [("u1", "i3"), ("u2", "i3"), ("u1", "i50"), ("u7", "i0")]
    response = client.post(
        "/score", json={"pairs": [{"user": u, "item": i} for u, i in pairs], "blend": {"interest": 1, "rating": 0.3}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["blend"] == {"interest": 1.0, "rating": 0.3}
    rows = np.asarray([rec.user_ids.index(u) for u, _ in pairs])
    items = torch.as_tensor([rec.item_ids.index(i) for _, i in pairs])
    hist, mask = histories(rec.split, rows, rec.split.offsets[1:][rows], rec.model.history_len)
    with torch.no_grad():
        logits = rec.model(torch.from_numpy(rows), items, hist, mask)
    blended = rec.score_all(["u1", "u2", "u1", "u7"], blend={"interest": 1, "rating": 0.3})
    for n, ((user, item), got) in enumerate(zip(pairs, body["predictions"], strict=True)):
        assert (got["user"], got["item"]) == (user, item)
        assert got["scores"]["interest"] == pytest.approx(float(torch.sigmoid(logits["interest"][n])), abs=1e-4)
        assert got["scores"]["rating"] == pytest.approx(float(logits["rating"][n]), abs=1e-4)
        genre = torch.sigmoid(logits["genre"][n])
        top = {rec.artifact.categories[int(k)]: float(genre[k]) for k in torch.argsort(genre, descending=True)[:3]}
        assert got["scores"]["genre"] == pytest.approx(top, abs=1e-3)
        assert got["score"] == pytest.approx(float(blended[n, rec.item_ids.index(item)]), abs=1e-4)
    # the same numbers as the recommendations show for those items
    listed = {r["item_id"]: r["scores"] for r in rec.recommend("u1", k=80, exclude_seen=False)}
    assert body["predictions"][0]["scores"] == listed["i3"]


def test_score_names_every_unknown_id(client: TestClient) -> None:
    pairs = [
        {"user": "u1", "item": "i1"},
        {"user": "ghost", "item": "i1"},
        {"user": "u1", "item": "nowhere"},
        {"user": "ghost", "item": "void"},
    ]
    body = assert_error(client.post("/score", json={"pairs": pairs}), 404, "'ghost'")
    assert body["detail"] == {"unknown_users": ["ghost"], "unknown_items": ["nowhere", "void"]}


# -- feedback -------------------------------------------------------------------------------------------------------
def rows_in(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as fresh:  # a new connection sees only what was committed
        return fresh.execute(
            "SELECT id, user_id, item_id, type, value_num, value_text, ts FROM events ORDER BY id"
        ).fetchall()


def test_feedback_is_committed_before_the_201(client: TestClient, feedback_db: Path) -> None:
    before = len(rows_in(feedback_db))
    response = client.post(
        "/feedback", json={"user": "u1", "item": "i3", "type": "rating", "value": 4.5, "ts": 1_700_000_000}
    )
    assert response.status_code == 201, response.text
    (new_id,) = response.json()["ids"]
    assert response.json()["stored"] == 1
    rows = rows_in(feedback_db)
    assert len(rows) == before + 1 and rows[-1] == (new_id, "u1", "i3", "rating", 4.5, None, 1_700_000_000.0)
    with sqlite3.connect(feedback_db) as fresh:
        assert fresh.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert client.app.state.store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_feedback_takes_a_list_new_ids_and_iso_times(client: TestClient, feedback_db: Path) -> None:
    events = [
        {"user": "newcomer", "item": "brand-new-item", "type": "click"},
        {"user": 196, "item": "i4", "type": "like", "value": "thumbs-up", "ts": "2024-03-01T12:00:00Z"},
    ]
    start = time.time()
    response = client.post("/feedback", json=events)
    assert response.status_code == 201 and response.json()["stored"] == 2
    rows = {r[0]: r for r in rows_in(feedback_db)}
    first, second = (rows[i] for i in response.json()["ids"])
    assert first[1:6] == ("newcomer", "brand-new-item", "click", None, None) and start - 1 <= first[6] <= time.time()
    assert second[1:] == ("196", "i4", "like", None, "thumbs-up", 1709294400.0)


def test_a_retry_with_the_same_idempotency_key_is_stored_once(client: TestClient, feedback_db: Path) -> None:
    events = [
        {"user": "u5", "item": "i9", "type": "click"},
        {"user": "u5", "item": "i9", "type": "rating", "value": 3},
    ]
    before = len(rows_in(feedback_db))
    first = client.post("/feedback", json=events, headers={"Idempotency-Key": "retry-1"})
    again = client.post("/feedback", json=events, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and len(first.json()["ids"]) == 2
    assert len(rows_in(feedback_db)) == before + 2
    other = client.post("/feedback", json=events[:1], headers={"Idempotency-Key": "retry-1"})
    assert_error(other, 422, "Idempotency-Key was already used")
    assert len(rows_in(feedback_db)) == before + 2
    fresh = client.post("/feedback", json=events[:1], headers={"Idempotency-Key": "retry-2"})
    assert fresh.status_code == 201 and len(rows_in(feedback_db)) == before + 3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"user": "u1", "item": "i1"}, "body.event.type"),
        ({"user": "u1", "item": "i1", "type": "no spaces"}, "type"),
        ({"user": "u1", "item": "i1", "type": "x", "value": True}, "not a boolean"),
        ({"user": "u1", "item": "i1", "type": "x", "ts": 1_700_000_000_000}, "milliseconds"),
        ([{"user": "u1", "item": "i1", "type": "x"}, {"user": "u1"}], "body.events.1.item"),
        ([], "at least 1"),
        ({"user": "", "item": "i1", "type": "x"}, "body.event.user"),
    ],
)
def test_invalid_feedback_is_a_422_and_stores_nothing(
    client: TestClient, feedback_db: Path, body: object, fragment: str
) -> None:
    before = len(rows_in(feedback_db))
    assert_error(client.post("/feedback", json=body), 422, fragment)
    assert len(rows_in(feedback_db)) == before


def test_writes_need_the_api_key_when_one_is_configured(
    secured: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    event = {"user": "u1", "item": "i2", "type": "like"}
    missing = assert_error(secured.post("/feedback", json=event), 401, "X-API-Key")
    assert secured.post("/feedback", json=event).headers["www-authenticate"].startswith("Bearer")
    wrong = assert_error(secured.post("/feedback", json=event, headers={"X-API-Key": "guess"}), 403, "not valid")
    assert_error(secured.post("/feedback", json=event, headers={"Authorization": "Bearer guess"}), 403)
    assert_error(secured.post("/feedback", json=event, headers={"Authorization": "Basic Zm9vOmJhcg=="}), 401)
    assert compared == [(b"guess", API_KEY.encode()), (b"guess", API_KEY.encode())]  # constant-time compare
    assert secured.post("/feedback", json=event, headers={"X-API-Key": API_KEY}).status_code == 201
    assert secured.post("/feedback", json=event, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 201
    assert secured.get("/recommend?user=u1&k=2").status_code == 200  # reads stay open
    assert secured.get("/ready").json()["writes_need_api_key"] is True
    for body in (missing, wrong):
        assert API_KEY not in json.dumps(body)
    assert API_KEY not in caplog.text


def test_feedback_without_a_store_is_a_clear_503(tiny_run: Path) -> None:
    with TestClient(create_app(tiny_run)) as c:
        assert_error(c.post("/feedback", json={"user": "u", "item": "i", "type": "t"}), 503, "--feedback-db")
        assert c.get("/ready").json()["feedback"] == {"enabled": False, "events": None}


def test_blank_api_key_is_refused(tiny_run: Path) -> None:
    from mtlrec.errors import ConfigError

    with pytest.raises(ConfigError, match="empty"):
        create_app(tiny_run, api_key="  ")


# -- metrics ----------------------------------------------------------------------------------------------------------
def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_requests_by_route_and_status(client: TestClient, tiny_run: Path) -> None:
    first = client.get("/metrics")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain; version=0.0.4")
    ok = sample(first.text, "mtlrec_requests_total", method="GET", path="/items/{item_id}", status="200")
    missing = sample(first.text, "mtlrec_requests_total", method="GET", path="/items/{item_id}", status="404")
    for _ in range(3):
        client.get("/items/i1")
    client.get("/items/ghost")
    text = client.get("/metrics").text
    assert sample(text, "mtlrec_requests_total", method="GET", path="/items/{item_id}", status="200") == ok + 3
    assert sample(text, "mtlrec_requests_total", method="GET", path="/items/{item_id}", status="404") == missing + 1
    assert sample(text, "mtlrec_requests_total", method="GET", path="/metrics", status="200") >= 1
    count = sample(text, "mtlrec_request_duration_seconds_count", path="/items/{item_id}")
    assert (
        count >= 4
        and sample(text, "mtlrec_request_duration_seconds_bucket", path="/items/{item_id}", le="+Inf") == count
    )
    meta = json.loads((tiny_run / "meta.json").read_text())
    assert f'dataset="{meta["dataset"]}"' in text and f'created="{meta["created"]}"' in text
    assert (
        re.search(r"^mtlrec_model_loaded 1$", text, re.M)
        and "# TYPE mtlrec_request_duration_seconds histogram" in text
    )


# -- a real server ----------------------------------------------------------------------------------------------------
def test_a_real_uvicorn_server_answers_on_loopback(tiny_run: Path) -> None:
    with running_server(create_app(tiny_run)) as url:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
        with urllib.request.urlopen(f"{url}/recommend?user=u1&k=2", timeout=10) as response:
            assert len(json.loads(response.read())["items"]) == 2
