"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis: every operation gets generated inputs (valid and
invalid: wrong types, out-of-range numbers, odd strings, bodies that break the schema), sent with the API key, and
no answer may be a 5xx. The app runs in-process (ASGI) on the tiny run with a feedback store; the default run is
small and derandomized, the `slow` one 200 examples per operation."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mtlrec.serve import create_app  # noqa: E402

API_KEY = "fuzz-key-for-tests"
FUZZ_SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


# The routes and their schema do not depend on the run (the lifespan loads it), so the schema is known when pytest
# collects the tests; `test_the_fuzzed_schema_is_the_served_one` checks it is what the app serves.
# (schemathesis.pytest.from_fixture would load it from the fixture, but fails under pytest 9.2.)
SCHEMA = create_app(Path("run-loaded-by-the-lifespan"), api_key=API_KEY).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA)

# Random ids are almost never the run's, which only exercises the 404s: each generated user or item id may be
# swapped for one the tiny run knows (conftest.make_world: u0..u59, i0..i79), so the model's paths are fuzzed too.
KNOWN = {"user": st.sampled_from(["u0", "u1", "u59"]), "item": st.sampled_from(["i0", "i1", "i42", "i79"])}
KNOWN.update(item_id=KNOWN["item"], liked=KNOWN["item"])


def with_known_ids(value: object, ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[object]:
    """`value` as generated, or with some of its id strings (by key: user, item, item_id, liked) known ones."""
    if isinstance(value, str) and ids is not None:
        return st.one_of(st.just(value), ids)
    if isinstance(value, list) and len(value) <= 50:
        return st.tuples(*(with_known_ids(v, ids) for v in value)).map(list)
    if isinstance(value, dict):
        keys = list(value)
        parts = [with_known_ids(v, KNOWN.get(k) if isinstance(k, str) else None) for k, v in value.items()]
        return st.tuples(*parts).map(lambda vs: dict(zip(keys, vs, strict=True)))
    return st.just(value)


@schema.hook
def flatmap_path_parameters(context, path_parameters):  # type: ignore[no-untyped-def]
    return with_known_ids(path_parameters)


@schema.hook
def flatmap_query(context, query):  # type: ignore[no-untyped-def]
    return with_known_ids(query)


@schema.hook
def flatmap_body(context, body):  # type: ignore[no-untyped-def]
    return with_known_ids(body)


@pytest.fixture(scope="module")
def app(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """Served in-process by schemathesis' ASGI transport, which runs the lifespan (loads the run) on first use."""
    return create_app(tiny_run, feedback_db=tmp_path_factory.mktemp("fuzz") / "feedback.sqlite", api_key=API_KEY)


def test_the_fuzzed_schema_is_the_served_one(app: FastAPI) -> None:
    served = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert served.raw_schema == SCHEMA
    assert sorted(SCHEMA["paths"]) == sorted(
        ["/health", "/ready", "/metrics", "/recommend", "/items/{item_id}", "/items/{item_id}/similar", "/score",
         "/feedback", "/admin/reload", "/users"]
    )  # fmt: skip


def call_no_server_error(case, app: FastAPI) -> None:  # type: ignore[no-untyped-def]
    """An exception the app does not handle propagates out of the in-process call (and fails the test); a handled
    one must not be a 5xx either. A 503 would be a bug too: the lifespan has loaded the model, and the feedback
    store is a local SQLite file that always commits."""
    response = case.call(headers={"X-API-Key": API_KEY}, app=app)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    )


@schema.parametrize()
@settings(max_examples=25, **FUZZ_SETTINGS)
def test_no_operation_answers_a_server_error(case, app: FastAPI) -> None:  # type: ignore[no-untyped-def]
    call_no_server_error(case, app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=200, **FUZZ_SETTINGS)
def test_no_operation_answers_a_server_error_long_run(case, app: FastAPI) -> None:  # type: ignore[no-untyped-def]
    call_no_server_error(case, app)
