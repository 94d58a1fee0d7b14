"""Hostile request bodies and URLs that the schemathesis fuzzer (tests/test_serve_fuzz.py) does not send: it builds
valid JSON from the schema, so it never sends invalid UTF-8, lone surrogate escapes ("\\ud800"), NaN/Infinity
literals, numbers beyond a float or of thousands of digits, JSON nested thousands deep, multi-MB strings, NUL bytes
in paths, or malformed percent-escapes. Each must get a 4xx JSON error (or a 2xx), never a 5xx.

Examples in the slow run: 400 bodies + 200 URLs = 600 (on top of the loader and config fuzzing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mtlrec.serve import create_app  # noqa: E402

API_KEY = "hostile-key-for-tests"
# The client fixture is module-scoped and stateless between examples (feedback only appends), hence the health check.
FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}  # fmt: skip
HEADERS = {"X-API-Key": API_KEY, "content-type": "application/json"}


def runs(fast: int, slow: int) -> list:
    return [pytest.param(fast, id=f"fast{fast}"), pytest.param(slow, id=f"slow{slow}", marks=pytest.mark.slow)]


def ran(examples: int, calls: list[int]) -> None:
    """Each property counts the examples it ran: the totals in the module docstring are what runs (`-rP` shows)."""
    print(f"{len(calls)} examples")
    assert len(calls) >= examples, f"hypothesis ran {len(calls)} of {examples} examples"


@pytest.fixture(scope="module")
def client(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(tiny_run, feedback_db=tmp_path_factory.mktemp("hostile") / "feedback.sqlite", api_key=API_KEY)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_handled(response, what: str) -> None:  # type: ignore[no-untyped-def]
    """Not a server error; an error is the API's JSON {"error": ..., "detail": ...}."""
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body


# JSON tokens as raw text (json.dumps cannot write most of them): they go where a value of the schema goes.
SPECIAL_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, "9" * 400, "-0", "0.5", '"\\ud800"',
    '"\\udfff\\ud800"', '"a\\u0000b"', '"\\u202e"', '""', "null", "true", "[]", "{}", '"u0"', '"i0"', '"i79"', "0",
    "3", "1000", "1001", '"rating"', '"interest"', '"1e400"', "[" * 3000 + "]" * 3000,
    '{"a":' * 3000 + "1" + "}" * 3000, '"' + "x" * (1 << 20) + '"', '["i0", "i0", "\\ud800"]',
    '[{"user": "u0", "item": "\\ud83d"}]'
]  # fmt: skip
SPECIAL = st.sampled_from(SPECIAL_TOKENS)
# Half the tokens are special ones; test_every_special_token_in_every_slot sends each to each slot besides.
TOKENS = st.one_of(SPECIAL, SPECIAL, SPECIAL, st.integers(-(2**70), 2**70).map(str), st.floats().map(json.dumps),
                   st.text(max_size=8).map(json.dumps))  # fmt: skip
RAW = st.one_of(st.just(b""), st.binary(max_size=8), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
TEMPLATES = {
    "/recommend": ['{"text": %s}', '{"liked": %s}', '{"liked": ["i0"], "k": %s}',
                   '{"text": "x", "blend": {"interest": %s}}', '{"liked": [%s], "text": %s}'],
    "/score": ['{"pairs": %s}', '{"pairs": [{"user": %s, "item": "i0"}]}', '{"pairs": [{"user": "u0", "item": %s}]}',
               '{"pairs": [{"user": "u0", "item": "i0"}], "blend": {%s: 1}}',
               '{"pairs": [{"user": "u0", "item": "i0"}], "blend": {"interest": %s}}'],
    "/feedback": ['{"user": %s, "item": "i0", "type": "rating"}', '{"user": "u0", "item": "i0", "type": %s}',
                  '{"user": "u0", "item": "i0", "type": "rating", "value": %s}',
                  '{"user": "u0", "item": "i0", "type": "rating", "ts": %s}', "[%s]",
                  '[{"user": "u0", "item": %s, "type": "like"}]'],
    "/admin/reload": ['{"run_dir": %s}', '{"run_dir": "/", "x": %s}', "%s"],
}  # fmt: skip


SLOTS = [(route, template) for route, templates in sorted(TEMPLATES.items()) for template in templates]


def post(client: TestClient, route: str, template: str, tokens: list[str], raw: bytes = b"", at: int = 0) -> None:
    body = (template % tuple(tokens[: template.count("%s")])).encode("utf-8", "surrogatepass")
    if raw:  # raw bytes (invalid UTF-8, NUL) somewhere in the body
        k = at % (len(body) + 1)
        body = body[:k] + raw + body[k:]
    response = client.post(route, content=body, headers=HEADERS)
    assert_handled(response, f"POST {route} {body[:200]!r}")


@pytest.mark.parametrize(("route", "template"), SLOTS, ids=[f"{r}-{t[:12]}" for r, t in SLOTS])
def test_every_special_token_in_every_slot(client: TestClient, route: str, template: str) -> None:
    """The sweep hypothesis alone would reach too rarely (a lone surrogate as a blend key: about 1 in 700 draws)."""
    for token in SPECIAL_TOKENS:
        post(client, route, template, [token, token])


@pytest.mark.parametrize("examples", runs(30, 400))
def test_hostile_json_bodies(client: TestClient, examples: int) -> None:
    """Random pairs of tokens, with raw bytes spliced in anywhere."""
    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(slot=st.sampled_from(SLOTS), tokens=st.lists(TOKENS, min_size=2, max_size=2), raw=RAW,
           at=st.integers(0, 10**6))  # fmt: skip
    def check(slot: tuple[str, str], tokens: list[str], raw: bytes, at: int) -> None:
        calls.append(1)
        post(client, *slot, tokens, raw, at)

    check()
    ran(examples, calls)


SEGMENTS = st.one_of(
    st.sampled_from(["u0", "i0", "%FF", "%ED%A0%80", "%00", "%", "%zz", "%C3", "..", "%2F", "a%2Fb", "x" * 600,
                     "%E2%80%AE", "i0%00", "NaN", "1e400", "-1", "0", "1001", "%5B%2Fx%5D"]),
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"], exclude_characters="/?#% &"), max_size=6),
)  # fmt: skip
URLS = st.one_of(
    st.tuples(st.just("/recommend?user=%s&k=%s"), SEGMENTS, SEGMENTS),
    st.tuples(st.just("/recommend?user=%s&blend=%s"), SEGMENTS, SEGMENTS),
    st.tuples(st.just("/recommend?user=%s&cold_start=true&k=%s"), SEGMENTS, SEGMENTS),
    st.tuples(st.just("/items/%s"), SEGMENTS),
    st.tuples(st.just("/items/%s/similar?k=%s&by=%s"), SEGMENTS, SEGMENTS, SEGMENTS),
    st.tuples(st.just("/users?prefix=%s&limit=%s"), SEGMENTS, SEGMENTS),
)


@pytest.mark.parametrize("examples", runs(30, 200))
def test_hostile_urls(client: TestClient, examples: int) -> None:
    """Path and query parameters with invalid percent-escapes, NULs, bidi controls and out-of-range numbers."""

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(url=URLS)
    def check(url: tuple[str, ...]) -> None:
        calls.append(1)
        path = url[0] % url[1:]
        response = client.get(path)
        assert_handled(response, f"GET {path[:200]}")

    check()
    ran(examples, calls)


# -- regressions: bugs these fuzzers found -------------------------------------------------------------------------
def test_error_that_quotes_a_lone_surrogate(client: TestClient) -> None:
    """Found by fuzzing: a blend key "\\ud800" made the 400 error (which names the key) fail to encode as UTF-8,
    and the client got a 500."""
    body = b'{"pairs": [{"user": "u0", "item": "i0"}], "blend": {"\\ud800": 1}}'
    response = client.post("/score", content=body, headers=HEADERS)
    assert response.status_code == 400
    assert "'\ud800' is not a rankable task" in response.json()["error"]
