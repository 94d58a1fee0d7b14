"""The web page at / in a real browser: Debian's Chromium driven by Playwright against a real uvicorn server on the
tiny run. Pick a user, compare the page with GET /recommend, describe tastes, like an item (with the API key field)
and find the event in the SQLite feedback store. Also /users and the page's files without a browser."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import running_server  # noqa: E402
from mtlrec.serve import create_app  # noqa: E402
from mtlrec.serve.page import STATIC_DIR  # noqa: E402

API_KEY = "page-test-key"
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT_COPY = REPO / "benchmarks" / "results" / "serve_page.png"


# -- without a browser ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_run: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_run)) as c:
        yield c


def test_the_page_and_its_files_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text and "http" not in page.text.split("<body>")[0].lower()
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    missing = client.get("/static/nope.js")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_the_script_never_puts_data_into_html() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script
    assert "//" not in (STATIC_DIR / "index.html").read_text().replace("://", "")  # no CDN, nothing outside


def test_users_lists_ids_by_prefix_in_natural_order(client: TestClient) -> None:
    body = client.get("/users?prefix=U1&limit=5").json()
    assert body == {"prefix": "U1", "total": 11, "users": ["u1", "u10", "u11", "u12", "u13"]}
    everyone = client.get("/users?limit=1000").json()
    assert everyone["total"] == 60 and everyone["users"][:3] == ["u0", "u1", "u2"] and everyone["users"][-1] == "u59"
    assert client.get("/users?prefix=zz").json() == {"prefix": "zz", "total": 0, "users": []}
    bad = client.get("/users?limit=0")
    assert bad.status_code == 422 and "query.limit" in bad.json()["error"]


# -- in a browser -----------------------------------------------------------------------------------------------------
def _missing(reason: str) -> None:
    if os.environ.get("CI"):  # CI installs both: a missing browser there is a failure, not a skip
        pytest.fail(f"{reason} (CI must provide it: .ci/run installs Debian's chromium and the dev extra)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("no chromium on PATH (apt-get install -y --no-install-recommends chromium)")
    return str(path)


@pytest.fixture()
def live_server(tiny_run: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "feedback.sqlite"
    with running_server(create_app(tiny_run, feedback_db=db, api_key=API_KEY)) as url:
        yield url, db


def _json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _shown(page: Any) -> list[dict[str, Any]]:
    """The recommendations as the page shows them."""
    return page.eval_on_selector_all(
        "#results li.rec",
        """cards => cards.map(card => ({
            item_id: card.dataset.itemId,
            score: Number(card.dataset.score),
            title: card.querySelector('.title').textContent,
            categories: [...card.querySelectorAll('.categories li')].map(li => li.textContent),
            reason: card.querySelector('.reason').textContent,
            scores: Object.fromEntries(
                [...card.querySelectorAll('.scores dd')].map(dd => [dd.dataset.task, dd.textContent])
            ),
            score_text: card.querySelector('.score').textContent,
        }))""",
    )


def _assert_same(shown: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [s["item_id"] for s in shown] == [e["item_id"] for e in expected]
    for s, e in zip(shown, expected, strict=True):
        assert s["title"] == e["title"] and s["categories"] == e["categories"] and s["reason"] == (e["reason"] or "")
        assert s["score"] == e["score"] and s["score_text"].startswith("score ")
        assert set(s["scores"]) == set(e["scores"])
        for task, value in e["scores"].items():
            if isinstance(value, int | float):
                assert abs(float(s["scores"][task]) - value) <= 5e-4 + 1e-9, (task, s["scores"][task], value)
            else:
                assert s["scores"][task], task


def test_pick_a_user_describe_tastes_and_like_in_chromium(
    chromium_path: str, live_server: tuple[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, db = live_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(f"{base}/")
            expect(page.locator("#run-info")).to_contain_text("60 users, 80 items")
            expect(page.locator("#key-box")).to_be_visible()  # the server wants a key for writes

            # an unknown user: the JSON error's message, on the page
            page.fill("#user", "nobody")
            page.press("#user", "Enter")
            expect(page.locator("#error")).to_be_visible()
            expect(page.locator("#error-message")).to_contain_text("404: unknown user 'nobody'")

            # pick a user from the suggestions
            page.fill("#user", "u1")
            page.click('#user-suggestions button[data-user="u1"]')
            expect(page.locator("#results li.rec")).to_have_count(10)
            expect(page.locator("#error")).to_be_hidden()
            expected = _json(f"{base}/recommend?user=u1&k=10")["items"]
            _assert_same(_shown(page), expected)

            # like without the key: the 401 is shown; with it, the event is stored
            first = page.locator("#results li.rec").first
            first.locator("button.like").click()
            expect(page.locator("#error-message")).to_contain_text("401")
            page.fill("#api-key", API_KEY)
            first.locator("button.like").click()
            expect(first.locator("button.like")).to_have_text("Liked ✓")
            liked = expected[0]["item_id"]
            expect(page.locator("#liked")).to_have_value(liked)
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT user_id, item_id, type FROM events").fetchall()
            assert rows == [("u1", liked, "like")]
            assert page.evaluate("sessionStorage.getItem('mtlrec.apiKey')") == API_KEY

            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("MTLREC_SAVE_SCREENSHOT") == "1":
                SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT_COPY)

            # tastes in words (with the liked item): POST /recommend's answer
            page.fill("#taste", "Comedy movie")
            page.click("#text-form button[type=submit]")
            expect(page.locator("#results-title")).to_have_text("Recommended for your tastes")
            expect(page.locator("#results li.rec")).to_have_count(10)
            expected = _json(f"{base}/recommend", {"text": "Comedy movie", "liked": [liked], "k": 10})["items"]
            _assert_same(_shown(page), expected)
        finally:
            browser.close()
