"""The feedback stores (SQLite and PostgreSQL: durable, idempotent, thread-safe), their export to an interactions
CSV that the generic loader and `mtlrec train` read, and the `mtlrec serve` / `mtlrec feedback export` commands."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import run_cli
from mtlrec.data import load_dataset
from mtlrec.serve.feedback import (
    FeedbackError,
    FeedbackEvent,
    IdempotencyKeyReused,
    SQLiteFeedbackStore,
    describe_target,
    mask_url,
    open_feedback_store,
)


def rated(user: str, item: str, value: float | str | None, ts: float | None, kind: str = "rating") -> FeedbackEvent:
    return FeedbackEvent(user, item, kind, value, ts)


# -- both stores: every test below that takes `target` runs against SQLite and against PostgreSQL ---------------------
@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What `--feedback-db` takes: a SQLite path, or a PostgreSQL URL (see `pg_target`)."""
    return str(tmp_path / "fb.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_target")


@pytest.fixture
def pg_target() -> Iterator[str]:
    """A postgresql:// URL whose tables live in a schema of their own (dropped afterwards), so tests and runs never
    see each other's events. Needs MTLREC_TEST_POSTGRES (a URL of a throwaway server; .ci/postgres.sh starts one):
    without it the test is skipped, except under CI (env CI set), where it fails, so CI never skips it silently."""
    url = os.environ.get("MTLREC_TEST_POSTGRES")
    if not url:
        reason = "MTLREC_TEST_POSTGRES is not set (a postgresql:// URL of a test server; .ci/postgres.sh starts one)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    if os.environ.get("CI"):
        import psycopg
    else:
        psycopg = pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")
    schema = f"mtlrec_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_add_commits_returns_ids_and_survives_reopening(target: str) -> None:
    with open_feedback_store(target) as store:
        ids = store.add([rated("a", "x", 4, 100.0), rated("b", "y", None, None, "click")])
        assert ids == [1, 2] and store.count() == 2
        with open_feedback_store(target) as fresh:  # committed: visible to another connection while store is open
            assert fresh.count() == 2
    with open_feedback_store(target, create=False) as again:
        assert again.count() == 2 and again.add([rated("c", "z", 1.5, 5.0)]) == [3]


def test_sqlite_store_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    db = tmp_path / "fb.sqlite"
    with SQLiteFeedbackStore(db) as store:
        store.add([rated("a", "x", 4, 100.0)])
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with sqlite3.connect(db) as fresh:  # committed: visible to another connection while the store is open
            assert fresh.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert isinstance(open_feedback_store(str(db)), SQLiteFeedbackStore)


def test_idempotency_key_stores_once_and_refuses_a_different_batch(target: str) -> None:
    with open_feedback_store(target) as store:
        batch = [rated("a", "x", 4, 100.0), rated("a", "y", 5, 101.0)]
        first = store.add(batch, key="k")
        assert store.add(list(batch), key="k") == first and store.count() == 2
        assert store.add([rated("a", "x", 4.0, 100.0), rated("a", "y", 5, 101.0)], key="k") == first  # 4 == 4.0
        with pytest.raises(IdempotencyKeyReused):
            store.add([rated("a", "x", 3, 100.0)], key="k")
        assert store.count() == 2
        assert store.add(batch) != first and store.count() == 4  # no key: stored again
        assert store.add(batch, key="k") == first  # still the first call's ids after the refusal


def test_concurrent_retries_with_one_key_store_once(target: str) -> None:
    """Retries racing each other: on one shared store (threads of a worker) and on stores of their own (separate
    connections, like worker processes or server instances on other hosts)."""
    batch = [rated("u", "i", 2, 10.0), rated("u", "j", 3, 11.0)]
    with open_feedback_store(target) as store:
        results: list[list[int]] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(12)

        def retry(own: bool) -> None:
            try:
                if own:
                    with open_feedback_store(target) as mine:
                        barrier.wait()
                        results.append(mine.add(batch, key="same"))
                else:
                    barrier.wait()
                    results.append(store.add(batch, key="same"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=retry, args=(n % 2 == 0,)) for n in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.count() == 2 and len(results) == 12 and all(r == results[0] for r in results)


_RETRY_IN_A_PROCESS = """
import json, sys
from mtlrec.serve.feedback import FeedbackEvent, open_feedback_store
with open_feedback_store(sys.argv[1]) as store:
    print("connected", flush=True)
    sys.stdin.read()  # until the test closes stdin: every process is connected, then all add at once
    print(json.dumps(store.add([FeedbackEvent("u", "i", "rating", 4, 1.0)], key="from-processes")))
"""


def test_concurrent_retries_from_several_processes_store_once(target: str) -> None:
    open_feedback_store(target).close()  # tables first, so the processes only race on the key
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RETRY_IN_A_PROCESS, target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "connected", p.stderr.read()
    for p in procs:
        p.stdin.close()
    outputs = [(p.stdout.read(), p.stderr.read(), p.wait(timeout=60)) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err, _ in outputs]
    ids = [json.loads(out) for out, _, _ in outputs]
    assert all(i == ids[0] for i in ids) and len(ids[0]) == 1
    with open_feedback_store(target) as store:
        assert store.count() == 1


def test_two_stores_on_one_target_share_events_and_keys(target: str) -> None:
    """Server workers (or servers on two hosts) have their own store and connection: events one stores are counted
    and exported by the other, and a key one used is honoured by the other (the check is in the transaction)."""
    with open_feedback_store(target) as one, open_feedback_store(target) as two:
        ids = one.add([rated("u", "i", 1, 1.0)], key="k")
        assert two.add([rated("u", "i", 1, 1.0)], key="k") == ids
        with pytest.raises(IdempotencyKeyReused):
            two.add([rated("u", "i", 2, 1.0)], key="k")
        assert one.count() == two.count() == 1
        more = two.add([rated("v", "i", 5, 2.0)], key="k2")
        assert more == [ids[-1] + 1] and one.add([rated("v", "i", 5, 2.0)], key="k2") == more
        assert one.count() == two.count() == 2


def test_bad_values_are_clear(target: str) -> None:
    with open_feedback_store(target) as store:
        with pytest.raises(FeedbackError, match="finite"):
            store.add([rated("u", "i", float("nan"), 1.0)])
        with pytest.raises(FeedbackError, match="no events"):
            store.add([])
        assert store.count() == 0


def test_bad_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FeedbackError, match="no feedback database"):
        SQLiteFeedbackStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(FeedbackError, match="does not exist"):
        SQLiteFeedbackStore(tmp_path / "no" / "such" / "fb.sqlite")
    with pytest.raises(FeedbackError, match="is a folder"):
        SQLiteFeedbackStore(tmp_path)
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(FeedbackError, match="newer mtlrec"):
        SQLiteFeedbackStore(newer)


def test_export_writes_one_row_per_event_that_the_generic_loader_reads(target: str, tmp_path: Path) -> None:
    with open_feedback_store(target) as store:
        store.add(
            [
                rated("alice", "m1", 5, 1_700_000_100.9),
                rated("bob", "m1", 2.5, 1_700_000_050.0),
                rated("alice", "m2", 4, 1_700_000_200.0),
                rated("carol, jr", "m3", 3, 1_700_000_000.0),
            ]
        )
        store.add([rated("alice", "m1", 1, 1_700_000_300.0)])  # a later rating of the same item
        out = tmp_path / "events.csv"
        assert store.export(out) == 5
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["user_id", "item_id", "rating", "timestamp"],
        ["carol, jr", "m3", "3", "1700000000"],
        ["bob", "m1", "2.5", "1700000050"],
        ["alice", "m1", "5", "1700000100"],
        ["alice", "m2", "4", "1700000200"],
        ["alice", "m1", "1", "1700000300"],
    ]
    ds = load_dataset("generic", data_path=out, on_duplicate="last")
    assert ds.has_ratings and ds.has_timestamps and len(ds.interactions) == 4  # alice's m1 kept once: the last
    frame = ds.interactions.set_index(["user_id", "item_id"])
    assert frame.loc[("alice", "m1"), "rating"] == 1.0 and frame.loc[("carol, jr", "m3"), "timestamp"] == 1_700_000_000
    with pytest.raises(Exception, match="alice"):  # without on_duplicate the repeated pair is named
        load_dataset("generic", data_path=out)


def test_export_leaves_out_ratings_unless_every_event_has_one(target: str, tmp_path: Path) -> None:
    with open_feedback_store(target) as store:
        store.add(
            [
                rated("a", "x", None, 10.0, "click"),
                rated("a", "y", 4, 20.0),
                rated("b", "x", "loved it", 30.0, "review"),
            ]
        )
        mixed = tmp_path / "mixed.csv"
        assert store.export(mixed) == 3
        assert mixed.read_text().splitlines()[0] == "user_id,item_id,timestamp"
        ds = load_dataset("generic", data_path=mixed)
        assert not ds.has_ratings and len(ds.interactions) == 3 and np.isnan(ds.interactions["rating"]).all()
        only = tmp_path / "ratings.csv"
        assert store.export(only, types=["rating"]) == 1
        assert only.read_text().splitlines() == ["user_id,item_id,rating,timestamp", "a,y,4,20"]
        with pytest.raises(FeedbackError, match="no feedback events of type purchase"):
            store.export(tmp_path / "none.csv", types=["purchase"])
        assert not (tmp_path / "none.csv").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_postgres_urls_are_told_from_paths_and_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert mask_url("postgresql://me:s3cret@db.example:5433/fb?sslmode=require") == (
        "postgresql://me:***@db.example:5433/fb?sslmode=require"
    )
    assert mask_url("postgres://me@db/fb") == "postgres://me@db/fb"  # no password: nothing to hide
    assert describe_target("postgres://a:b@h/d") == "postgres://a:***@h/d" and describe_target("x.db") == "x.db"
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the 'postgres' extra not installed
    for url in ("postgresql://me:s3cret@127.0.0.1/fb", "postgres://me:s3cret@127.0.0.1/fb"):
        with pytest.raises(FeedbackError, match=r"'postgres' extra .*pip install 'mtlrec\[postgres\]'") as info:
            open_feedback_store(url)
        assert "s3cret" not in str(info.value)


def test_postgres_connection_errors_name_the_server_but_not_the_password() -> None:
    pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FeedbackError, match="cannot open the feedback database") as info:
        open_feedback_store(f"postgresql://me:s3cret@127.0.0.1:{port}/fb")
    assert f"postgresql://me:***@127.0.0.1:{port}/fb" in str(info.value) and "s3cret" not in str(info.value)


def test_postgres_store_without_tables_is_an_error_when_not_creating(pg_target: str) -> None:
    target = pg_target
    with pytest.raises(FeedbackError, match="no feedback tables"):
        open_feedback_store(target, create=False)
    open_feedback_store(target).close()  # creates them
    with open_feedback_store(target, create=False) as store:
        assert store.count() == 0


def test_serve_passes_a_postgres_url_to_workers_unchanged_and_logs_it_masked(
    pg_target: str,
    tiny_run: Path,
    captured_uvicorn: list,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = pg_target
    code, _, err = run_cli(["serve", str(tiny_run), "--workers", "2", "--feedback-db", target], capsys)
    assert code == 0, err
    assert os.environ["MTLREC_SERVE_FEEDBACK_DB"] == target  # not turned into a path
    from fastapi.testclient import TestClient

    from mtlrec.serve.app import app_from_env

    password = urlsplit(target).password
    with caplog.at_level(logging.INFO, logger="mtlrec.serve"), TestClient(app_from_env()) as client:
        response = client.post(
            "/feedback", json={"user": "u", "item": "i", "type": "t"}, headers={"Idempotency-Key": "x"}
        )
        assert response.status_code == 201
        again = client.post(
            "/feedback", json={"user": "u", "item": "i", "type": "t"}, headers={"Idempotency-Key": "x"}
        )
        assert again.status_code == 201 and again.json() == response.json()
        ready = client.get("/ready")
        assert ready.json()["feedback"] == {"enabled": True, "events": 1}
    shown = caplog.text + ready.text + err
    assert mask_url(target) in caplog.text and (not password or password not in shown)


# -- the commands -----------------------------------------------------------------------------------------------------
def test_feedback_export_command(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_feedback_store(target) as store:
        store.add([rated("u1", "i1", 5, 100.0), rated("u2", "i1", 3, 200.0), rated("u2", "i2", None, 300.0, "click")])
    out = tmp_path / "out.csv"
    code, _, err = run_cli(
        ["feedback", "export", "--feedback-db", target, "--output", str(out), "--types", "rating"], capsys
    )
    assert code == 0 and "2 events written" in err
    assert len(load_dataset("generic", data_path=out).interactions) == 2
    code, _, err = run_cli(
        ["feedback", "export", "--feedback-db", str(tmp_path / "nope.sqlite"), "-o", str(out)], capsys
    )
    assert code == 2 and "no feedback database" in err and "Traceback" not in err


@pytest.fixture
def captured_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, dict]]:
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    import mtlrec.serve.workers

    monkeypatch.setattr(mtlrec.serve.workers, "run_workers", lambda *args: calls.append((("run_workers", *args), {})))
    for name in ("MTLREC_API_KEY", "MTLREC_SERVE_RUN_DIR", "MTLREC_SERVE_FEEDBACK_DB", "MTLREC_SERVE_THREADS",
                 "MTLREC_SERVE_SCORE_CACHE_MB", "MTLREC_SERVE_CANDIDATES"):  # fmt: skip
        monkeypatch.setenv(name, "")  # recorded, so what `serve` sets is undone after the test
        monkeypatch.delenv(name)
    return calls


def test_serve_binds_loopback_by_default(
    tiny_run: Path, captured_uvicorn: list, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi import FastAPI

    code, _, err = run_cli(["serve", str(tiny_run)], capsys)
    assert code == 0, err
    ((args, kwargs),) = captured_uvicorn
    assert isinstance(args[0], FastAPI)
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 8000)


def test_serve_with_workers_passes_the_settings_to_each_worker(
    tiny_run: Path,
    tmp_path: Path,
    captured_uvicorn: list,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MTLREC_API_KEY", "from-the-environment")
    db = tmp_path / "fb.sqlite"
    code, _, err = run_cli(
        ["serve", str(tiny_run), "--workers", "2", "--port", "9001", "--feedback-db", str(db), "--score-cache-mb",
         "64"], capsys,
    )  # fmt: skip
    assert code == 0, err
    ((args, _),) = captured_uvicorn
    assert args[:4] == ("run_workers", 2, "127.0.0.1", 9001)  # a socket each (serve/workers.py)
    assert os.environ["MTLREC_SERVE_RUN_DIR"] == str(tiny_run.resolve())
    assert os.environ["MTLREC_SERVE_FEEDBACK_DB"] == str(db.resolve()) and db.is_file()  # created up front
    assert os.environ["MTLREC_API_KEY"] == "from-the-environment"
    from mtlrec.serve.app import app_from_env

    app = app_from_env()  # what each worker builds
    assert app.state.score_cache_mb == 64.0
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.post("/feedback", json={"user": "u", "item": "i", "type": "t"}).status_code == 401
        assert client.get("/ready").json()["writes_need_api_key"] is True
    assert "from-the-environment" not in err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "{tmp}/nothing"], {}, "is not a run directory"),
        (["serve", "{run}"], {"MTLREC_API_KEY": " "}, "the API key is empty"),
        (["serve", "{run}", "--workers", "0"], {}, "--workers must be between 1 and 64"),
        (["serve", "{run}", "--log-level", "loud"], {}, "--log-level must be one of"),
        (["serve", "{run}", "--feedback-db", "{tmp}/no/such/dir/fb.sqlite"], {}, "does not exist"),
    ],
)
def test_serve_errors_exit_2_with_one_line(
    args: list[str],
    env: dict[str, str],
    message: str,
    tiny_run: Path,
    tmp_path: Path,
    captured_uvicorn: list,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_cli([a.format(run=tiny_run, tmp=tmp_path) for a in args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert captured_uvicorn == []


def test_serve_warns_when_listening_beyond_loopback_without_a_key(
    tiny_run: Path,
    tmp_path: Path,
    captured_uvicorn: list,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mtlrec.serve.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    code, _, err = run_cli(
        ["serve", str(tiny_run), "--host", "0.0.0.0", "--feedback-db", str(tmp_path / "f.db")], capsys
    )
    assert code == 0 and "reachable from other machines" in err and "MTLREC_API_KEY" in err
    assert captured_uvicorn[0][1]["host"] == "0.0.0.0"
