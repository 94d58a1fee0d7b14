"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis: every operation gets generated inputs (valid and
invalid: wrong types, out-of-range numbers, odd strings, bodies that break the schema), sent with the API key, and
no answer may be a 5xx. The app runs in-process (ASGI) on the tiny run with a feedback store; the default run is
small and derandomized, the `slow` one 300 examples per operation."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from mtlrec.serve import create_app  # noqa: E402

API_KEY = "fuzz-key-for-tests"
# POST /feedback answers 503 only when the store cannot commit; here the store is a local SQLite file, so a 503
# there would be a bug too. The probes' 503 ("not loaded yet") cannot happen once the lifespan has run.
FUZZ_SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}


@pytest.fixture(scope="module")
def api_schema(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):  # -> schemathesis BaseSchema
    db = tmp_path_factory.mktemp("fuzz") / "feedback.sqlite"
    app = create_app(tiny_run, feedback_db=db, api_key=API_KEY)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


def call_no_server_error(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers={"X-API-Key": API_KEY})
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"


@schema.parametrize()
@settings(max_examples=25, **FUZZ_SETTINGS)
def test_no_operation_answers_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    call_no_server_error(case)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=300, **FUZZ_SETTINGS)
def test_no_operation_answers_a_server_error_long_run(case) -> None:  # type: ignore[no-untyped-def]
    call_no_server_error(case)
