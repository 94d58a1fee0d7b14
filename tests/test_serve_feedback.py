"""The feedback store (SQLite, durable, idempotent, thread-safe), its export to an interactions CSV that the generic
loader and `mtlrec train` read, and the `mtlrec serve` / `mtlrec feedback export` commands."""

from __future__ import annotations

import csv
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from mtlrec.cli import main
from mtlrec.data import load_dataset
from mtlrec.serve.feedback import (
    FeedbackError,
    FeedbackEvent,
    IdempotencyKeyReused,
    SQLiteFeedbackStore,
)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def rated(user: str, item: str, value: float | str | None, ts: float | None, kind: str = "rating") -> FeedbackEvent:
    return FeedbackEvent(user, item, kind, value, ts)


def test_add_commits_returns_ids_and_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "fb.sqlite"
    with SQLiteFeedbackStore(db) as store:
        ids = store.add([rated("a", "x", 4, 100.0), rated("b", "y", None, None, "click")])
        assert ids == [1, 2] and store.count() == 2
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with sqlite3.connect(db) as fresh:  # committed: visible to another connection while the store is open
            assert fresh.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
    with SQLiteFeedbackStore(db) as again:
        assert again.count() == 2 and again.add([rated("c", "z", 1.5, 5.0)]) == [3]


def test_idempotency_key_stores_once_and_refuses_a_different_batch(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "fb.sqlite") as store:
        batch = [rated("a", "x", 4, 100.0), rated("a", "y", 5, 101.0)]
        first = store.add(batch, key="k")
        assert store.add(list(batch), key="k") == first and store.count() == 2
        assert store.add([rated("a", "x", 4.0, 100.0), rated("a", "y", 5, 101.0)], key="k") == first  # 4 == 4.0
        with pytest.raises(IdempotencyKeyReused):
            store.add([rated("a", "x", 3, 100.0)], key="k")
        assert store.count() == 2
        assert store.add(batch) != first and store.count() == 4  # no key: stored again


def test_concurrent_retries_with_one_key_store_once(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "fb.sqlite") as store:
        batch = [rated("u", "i", 2, 10.0)]
        results: list[list[int]] = []
        threads = [threading.Thread(target=lambda: results.append(store.add(batch, key="same"))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.count() == 1 and all(r == results[0] for r in results) and len(results) == 8


def test_two_stores_on_one_file_share_keys(tmp_path: Path) -> None:
    """Server workers are separate processes with their own connection: the key check is in the transaction."""
    db = tmp_path / "fb.sqlite"
    with SQLiteFeedbackStore(db) as one, SQLiteFeedbackStore(db) as two:
        ids = one.add([rated("u", "i", 1, 1.0)], key="k")
        assert two.add([rated("u", "i", 1, 1.0)], key="k") == ids
        assert one.count() == two.count() == 1


def test_bad_values_and_paths_are_clear(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "fb.sqlite") as store:
        with pytest.raises(FeedbackError, match="finite"):
            store.add([rated("u", "i", float("nan"), 1.0)])
        with pytest.raises(FeedbackError, match="no events"):
            store.add([])
        assert store.count() == 0
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


def test_export_writes_one_row_per_event_that_the_generic_loader_reads(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "fb.sqlite") as store:
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


def test_export_leaves_out_ratings_unless_every_event_has_one(tmp_path: Path) -> None:
    with SQLiteFeedbackStore(tmp_path / "fb.sqlite") as store:
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


# -- the commands -----------------------------------------------------------------------------------------------------
def test_feedback_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "fb.sqlite"
    with SQLiteFeedbackStore(db) as store:
        store.add([rated("u1", "i1", 5, 100.0), rated("u2", "i1", 3, 200.0), rated("u2", "i2", None, 300.0, "click")])
    out = tmp_path / "out.csv"
    code, _, err = run(
        ["feedback", "export", "--feedback-db", str(db), "--output", str(out), "--types", "rating"], capsys
    )
    assert code == 0 and "2 events written" in err
    assert len(load_dataset("generic", data_path=out).interactions) == 2
    code, _, err = run(["feedback", "export", "--feedback-db", str(tmp_path / "nope.sqlite"), "-o", str(out)], capsys)
    assert code == 2 and "no feedback database" in err and "Traceback" not in err


@pytest.fixture
def captured_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple, dict]]:
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    for name in ("MTLREC_API_KEY", "MTLREC_SERVE_RUN_DIR", "MTLREC_SERVE_FEEDBACK_DB", "MTLREC_SERVE_THREADS"):
        monkeypatch.setenv(name, "")  # recorded, so what `serve` sets is undone after the test
        monkeypatch.delenv(name)
    return calls


def test_serve_binds_loopback_by_default(
    tiny_run: Path, captured_uvicorn: list, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi import FastAPI

    code, _, err = run(["serve", str(tiny_run)], capsys)
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
    code, _, err = run(["serve", str(tiny_run), "--workers", "2", "--port", "9001", "--feedback-db", str(db)], capsys)
    assert code == 0, err
    ((args, kwargs),) = captured_uvicorn
    assert args == ("mtlrec.serve.app:app_from_env",) and kwargs["factory"] is True and kwargs["workers"] == 2
    assert (kwargs["host"], kwargs["port"]) == ("127.0.0.1", 9001)
    assert os.environ["MTLREC_SERVE_RUN_DIR"] == str(tiny_run.resolve())
    assert os.environ["MTLREC_SERVE_FEEDBACK_DB"] == str(db.resolve()) and db.is_file()  # created up front
    assert os.environ["MTLREC_API_KEY"] == "from-the-environment"
    from mtlrec.serve.app import app_from_env

    app = app_from_env()  # what each worker builds
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
    code, _, err = run([a.format(run=tiny_run, tmp=tmp_path) for a in args], capsys)
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
    code, _, err = run(["serve", str(tiny_run), "--host", "0.0.0.0", "--feedback-db", str(tmp_path / "f.db")], capsys)
    assert code == 0 and "reachable from other machines" in err and "MTLREC_API_KEY" in err
    assert captured_uvicorn[0][1]["host"] == "0.0.0.0"
