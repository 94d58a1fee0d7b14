"""Hot reload: POST /admin/reload and SIGHUP swap in a run without failing requests in flight."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from mtlrec import Recommender  # noqa: E402
from mtlrec.serve import create_app  # noqa: E402
from mtlrec.serve.app import _reload_on_sighup  # noqa: E402
from mtlrec.serve.batching import RecommendBatcher  # noqa: E402
from mtlrec.serve.service import ServingModel  # noqa: E402

KEY = "reload-key-for-tests"
HEADERS = {"X-API-Key": KEY}


def retrained(tiny_run: Path, folder: Path) -> Path:
    """A copy of the run with other item embeddings, standing in for a newer training run."""
    shutil.copytree(tiny_run, folder)
    state = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(5)
    weight = state["item_encoder.ids.weight"]
    state["item_encoder.ids.weight"] = torch.randn(weight.shape, generator=generator)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def top_ids(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_reload_swaps_the_run_and_keeps_serving_on_failure(tiny_run: Path, tmp_path: Path) -> None:
    newer = retrained(tiny_run, tmp_path / "newer")
    expected_old = [r["item_id"] for r in Recommender.load(tiny_run).recommend("u1", k=10)]
    expected_new = [r["item_id"] for r in Recommender.load(newer).recommend("u1", k=10)]
    assert expected_old != expected_new
    with TestClient(create_app(tiny_run, api_key=KEY)) as client:
        assert top_ids(client.get("/recommend", params={"user": "u1"})) == expected_old
        assert client.post("/admin/reload", json={"run_dir": str(newer)}).status_code == 401  # no key
        answer = client.post("/admin/reload", json={"run_dir": str(newer)}, headers=HEADERS)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["reloaded"] and body["previous"]["run"] == str(tiny_run) and body["current"]["run"] == str(newer)
        assert top_ids(client.get("/recommend", params={"user": "u1"})) == expected_new
        assert client.get("/ready").json()["run"] == str(newer)
        assert f'run="{newer}"' in client.get("/metrics").text
        # A run that does not load is refused and the current one keeps serving.
        broken = client.post("/admin/reload", json={"run_dir": str(tmp_path / "missing")}, headers=HEADERS)
        assert broken.status_code == 422 and "still serving" in broken.json()["error"]
        assert top_ids(client.get("/recommend", params={"user": "u1"})) == expected_new
        # No body: reload the served directory again.
        assert client.post("/admin/reload", headers=HEADERS).json()["current"]["run"] == str(newer)


def test_reload_needs_a_configured_key(tiny_run: Path) -> None:
    with TestClient(create_app(tiny_run)) as client:
        answer = client.post("/admin/reload")
        assert answer.status_code == 403 and "--api-key" in answer.json()["error"]


def test_a_request_in_flight_finishes_on_its_model(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    newer = retrained(tiny_run, tmp_path / "newer")
    expected_old = [r["item_id"] for r in Recommender.load(tiny_run).recommend("u1", k=10)]
    entered, release = threading.Event(), threading.Event()
    original = RecommendBatcher.recommend

    async def slow(self: RecommendBatcher, model: ServingModel, query: Any) -> dict:
        if model.run_dir == tiny_run:  # the request holds the old model; it waits without blocking the server
            entered.set()
            assert await asyncio.to_thread(release.wait, 10)
        return await original(self, model, query)

    monkeypatch.setattr(RecommendBatcher, "recommend", slow)
    with TestClient(create_app(tiny_run, api_key=KEY)) as client:
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(r=client.get("/recommend", params={"user": "u1"})))
        worker.start()
        assert entered.wait(10)
        assert client.post("/admin/reload", json={"run_dir": str(newer)}, headers=HEADERS).status_code == 200
        release.set()
        worker.join(10)
        assert top_ids(result["r"]) == expected_old  # finished on the old model, no error
        assert client.get("/ready").json()["run"] == str(newer)


def test_sighup_reloads_the_served_directory(tiny_run: Path, tmp_path: Path) -> None:
    served = tmp_path / "current"
    shutil.copytree(tiny_run, served)
    with TestClient(create_app(served, api_key=KEY)) as client:
        before = top_ids(client.get("/recommend", params={"user": "u1"}))
        app = client.app
        old_model = app.state.model
        # A new training run replaces the directory's files; SIGHUP picks them up.
        shutil.rmtree(served)
        retrained(tiny_run, served)
        previous = signal.getsignal(signal.SIGHUP)
        try:
            _reload_on_sighup(app)  # the lifespan ran in the client's thread, where signals cannot be installed
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 20
            while app.state.model is old_model and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            signal.signal(signal.SIGHUP, previous)
        assert app.state.model is not old_model
        after = top_ids(client.get("/recommend", params={"user": "u1"}))
        assert after != before and after == [r["item_id"] for r in Recommender.load(served).recommend("u1", k=10)]
