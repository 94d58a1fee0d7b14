"""Feedback storage: events that users send to a running server (``POST /feedback``), kept durably and exported
as an interactions table that ``mtlrec train --dataset generic`` reads.

``FeedbackStore`` is the interface the server talks to (``add``, ``export``, ``count``, ``close``);
``SQLiteFeedbackStore`` implements it in one SQLite file (one host), ``PostgresFeedbackStore`` in a PostgreSQL
database that server instances on several hosts share. ``open_feedback_store`` picks one from ``--feedback-db``
(a ``postgresql://`` or ``postgres://`` URL, else a file path). Both give the same guarantees:

- ``add`` returns only after the events are committed durably, and a retried call with the same idempotency key
  stores nothing again and returns the ids of the first call (a different batch under a used key is an error);
- ``export`` writes one row per stored event, oldest first, in the generic interactions format.

This module needs only the standard library (and no web framework), so ``mtlrec feedback export`` works without
the ``serve`` extra; the PostgreSQL store imports ``psycopg`` (the ``postgres`` extra) only when it is used.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mtlrec.errors import MtlrecError

SCHEMA_VERSION = 1
EXPORT_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_FETCH = 10_000  # rows read at a time when exporting


class FeedbackError(MtlrecError):
    """A feedback store cannot be opened, written or exported."""


class IdempotencyKeyReused(FeedbackError):
    """An idempotency key already stored a different batch of events."""


@dataclass(frozen=True)
class FeedbackEvent:
    """One thing a user did with an item. ``type`` is free-form ("click", "like", "rating", ...); ``value`` is a
    number (a rating, a watch fraction) or a short text, or None; ``ts`` is Unix seconds, None for "when received"."""

    user: str
    item: str
    type: str
    value: float | str | None = None
    ts: float | None = None

    def fingerprint_part(self) -> list[object]:
        """What identifies the event as sent (ts as given, not as filled in), for idempotency checks."""
        value = self.value
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 4 and 4.0 are the same rating
        return [self.user, self.item, self.type, value, self.ts]


def fingerprint(events: Sequence[FeedbackEvent]) -> str:
    text = json.dumps([e.fingerprint_part() for e in events], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeedbackStore(ABC):
    """Durable, append-only storage of feedback events (see the module docstring for the guarantees)."""

    @abstractmethod
    def add(self, events: Sequence[FeedbackEvent], key: str | None = None) -> list[int]:
        """Store ``events`` in one transaction and return their ids (in order) once committed. With ``key``: if the
        key was seen before with the same events, store nothing and return the first call's ids; with other
        events, raise :class:`IdempotencyKeyReused`."""

    @abstractmethod
    def export(self, path: str | Path, *, types: Iterable[str] | None = None) -> int:
        """Write the events (only those whose type is in ``types``, if given) oldest first as an interactions CSV
        ``user_id,item_id[,rating],timestamp``; return the number of rows. See :meth:`SQLiteFeedbackStore.export`."""

    @abstractmethod
    def count(self) -> int:
        """Number of stored events."""

    def close(self) -> None:  # noqa: B027 - optional for stores that hold nothing open
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value_num REAL,
    value_text TEXT,
    ts REAL NOT NULL,
    received REAL NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    ids TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class SQLiteFeedbackStore(FeedbackStore):
    """Feedback in one SQLite file: WAL journal, ``synchronous=FULL`` (a commit survives power loss), each ``add``
    one ``BEGIN IMMEDIATE`` transaction, so the idempotency check and the insert are atomic across threads and
    across server processes sharing the file (``--workers``). Safe to share between threads of one process."""

    def __init__(self, path: str | Path, *, create: bool = True, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FeedbackError(
                f"no feedback database at {self.path} (start `mtlrec serve --feedback-db "
                f"{self.path}` to collect feedback)"
            )
        if create:
            if self.path.is_dir():
                raise FeedbackError(f"{self.path} is a folder; --feedback-db needs a file path, e.g. feedback.sqlite")
            if not self.path.parent.is_dir():
                raise FeedbackError(f"cannot create {self.path}: the folder {self.path.parent} does not exist")
        self._lock = threading.Lock()
        try:
            # isolation_level=None: no implicit transactions; every write below opens its own BEGIN IMMEDIATE.
            self._db = sqlite3.connect(
                str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FeedbackError(
                    f"{self.path} was written by a newer mtlrec (feedback schema {version}, this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade mtlrec"
                )
            if version < SCHEMA_VERSION:
                self._db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise FeedbackError(f"cannot open the feedback database {self.path}: {exc}") from None
        if str(mode).lower() != "wal":
            raise FeedbackError(f"{self.path}: SQLite refused WAL mode (journal_mode={mode}); use a local disk")

    def add(self, events: Sequence[FeedbackEvent], key: str | None = None) -> list[int]:
        if not events:
            raise FeedbackError("no events to store")
        digest = fingerprint(events)
        now = time.time()
        rows = [
            (e.user, e.item, e.type, *_split_value(e.value), now if e.ts is None else float(e.ts), now, key)
            for e in events
        ]
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    seen = db.execute("SELECT fingerprint, ids FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
                    if seen is not None:
                        db.execute("ROLLBACK")
                        if seen[0] != digest:
                            raise IdempotencyKeyReused(
                                "this Idempotency-Key was already used for a different batch of events; use a new "
                                "key for new events (a retry must repeat the first request exactly)"
                            )
                        return list(json.loads(seen[1]))
                ids = []
                for row in rows:
                    cursor = db.execute(
                        "INSERT INTO events (user_id, item_id, type, value_num, value_text, ts, received, "
                        "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(int(cursor.lastrowid))  # type: ignore[arg-type]
                if key is not None:
                    db.execute(
                        "INSERT INTO idempotency_keys (key, fingerprint, ids, created) VALUES (?, ?, ?, ?)",
                        (key, digest, json.dumps(ids), now),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return ids

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def export(self, path: str | Path, *, types: Iterable[str] | None = None) -> int:
        """Write the events oldest first (by time, then arrival) as an interactions CSV and return its row count.

        Columns ``user_id,item_id,rating,timestamp``: ``rating`` is the event's value when it is a number; the
        column is left out when some exported event has no numeric value, because the generic reader needs a
        rating on every row or none (pass ``types``, e.g. ``["rating"]``, to export only rated events with it).
        ``timestamp`` is whole Unix seconds. One row per event: a user who clicked and then rated an item has two
        rows, so train with ``--set data.on_duplicate=last`` (or ``first``). The file is written to a temporary
        name and renamed, so a reader never sees half a file.
        """
        path = Path(path)
        wanted = None if types is None else sorted(set(types))
        where, args = ("", ()) if wanted is None else (f" WHERE type IN ({','.join('?' * len(wanted))})", wanted)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        written = 0
        try:
            with self._lock:
                cursor = self._db.cursor()
                cursor.execute("BEGIN")  # one read snapshot for the count and the rows (other writers go on)
                try:
                    n, numeric = cursor.execute(
                        f"SELECT COUNT(*), COUNT(value_num) FROM events{where}", args
                    ).fetchone()
                    if n == 0:
                        which = "" if wanted is None else f" of type {', '.join(wanted)}"
                        raise FeedbackError(f"{self.path} holds no feedback events{which}; nothing to export")
                    with_rating = numeric == n
                    with open(tmp, "w", newline="", encoding="utf-8") as handle:
                        cursor.execute(
                            f"SELECT user_id, item_id, value_num, ts FROM events{where} ORDER BY ts, id", args
                        )
                        written = _write_export(handle, cursor, with_rating)
                finally:
                    cursor.execute("COMMIT")
            os.replace(tmp, path)
        except OSError as exc:
            raise FeedbackError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return written

    def close(self) -> None:
        with self._lock:
            self._db.close()


_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and _URL.match(target) is not None


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return "postgresql://***"


def describe_target(target: str | Path) -> str:
    """How ``--feedback-db`` may be shown: a path as is, a URL without its password."""
    return mask_url(target) if is_postgres_url(target) else str(target)  # type: ignore[arg-type]


def open_feedback_store(target: str | Path, *, create: bool = True) -> FeedbackStore:
    """The store that ``--feedback-db`` names: ``postgresql://user:pass@host[:port]/db`` (or ``postgres://``) opens
    a :class:`PostgresFeedbackStore`, anything else is the path of a :class:`SQLiteFeedbackStore` file. ``create``:
    create the file or the tables when missing (False: a missing store is an error)."""
    if is_postgres_url(target):
        return PostgresFeedbackStore(str(target), create=create)
    return SQLiteFeedbackStore(Path(target), create=create)


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback_events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value_num DOUBLE PRECISION,
    value_text TEXT,
    ts DOUBLE PRECISION NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS feedback_events_user ON feedback_events (user_id);
CREATE INDEX IF NOT EXISTS feedback_events_ts ON feedback_events (ts, id);
CREATE TABLE IF NOT EXISTS feedback_idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    ids TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback_schema (version INTEGER NOT NULL);
"""
_PG_LOCK = 0x6D746C72  # advisory lock id ("mtlr"): one instance at a time creates the tables


class PostgresFeedbackStore(FeedbackStore):
    """Feedback in a PostgreSQL database, shared by server instances on several hosts (each with its own store).

    ``url``: ``postgresql://user:password@host[:port]/database`` (libpq's URI form; ``postgres://`` works too;
    ``?options=-csearch_path%3Dname`` puts the tables in schema ``name``). Tables ``feedback_events``,
    ``feedback_idempotency_keys`` and ``feedback_schema`` are created when missing. Each ``add`` is one transaction
    committed before it returns (``synchronous_commit`` as the server has it, on by default); the idempotency key
    is claimed first with ``INSERT ... ON CONFLICT DO NOTHING`` on its primary key, so concurrent retries from any
    number of processes and hosts store the events once (a retry racing the first call waits for its commit and
    returns its ids). One connection per store, serialised by a lock (safe to share between threads); a broken
    connection is reopened on the next call. Messages never show the password.
    """

    def __init__(self, url: str, *, create: bool = True, connect_timeout_s: int = 10) -> None:
        try:
            import psycopg
        except ImportError:
            raise FeedbackError(
                "a postgresql:// feedback store needs the 'postgres' extra (psycopg is missing): "
                "pip install 'mtlrec[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self.path = mask_url(url)  # what messages show
        self._password = urlsplit(url).password if "@" in url else None
        self._timeout = connect_timeout_s
        self._lock = threading.Lock()
        self._db: Any = None
        try:
            self._open(create)
        except BaseException:
            self.close()
            raise

    def _open(self, create: bool) -> None:
        with self._lock, self._errors("open"):
            db = self._connect()
            with db.transaction():
                exists = db.execute("SELECT to_regclass('feedback_schema') IS NOT NULL").fetchone()[0]
                if not exists and not create:
                    raise FeedbackError(
                        f"no feedback tables in {self.path} (start `mtlrec serve --feedback-db URL` to collect "
                        "feedback)"
                    )
                if not exists:
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                    db.execute(_PG_SCHEMA)
                    if db.execute("SELECT COUNT(*) FROM feedback_schema").fetchone()[0] == 0:
                        db.execute("INSERT INTO feedback_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
                version = db.execute("SELECT MAX(version) FROM feedback_schema").fetchone()[0] or 0
            if version > SCHEMA_VERSION:
                raise FeedbackError(
                    f"{self.path} was written by a newer mtlrec (feedback schema {version}, this "
                    f"version reads up to {SCHEMA_VERSION}); upgrade mtlrec"
                )

    def _connect(self) -> Any:
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
            self._db = self._psycopg.connect(self._url, autocommit=True, connect_timeout=self._timeout)
        return self._db

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Database errors as a FeedbackError that names the store without its password."""
        try:
            yield
        except self._psycopg.Error as exc:
            raise FeedbackError(f"cannot {doing} the feedback database {self.path}: {self._mask(exc)}") from None

    def _mask(self, exc: BaseException) -> str:
        text = str(exc).strip()
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def add(self, events: Sequence[FeedbackEvent], key: str | None = None) -> list[int]:
        if not events:
            raise FeedbackError("no events to store")
        digest = fingerprint(events)
        now = time.time()
        rows = [
            (e.user, e.item, e.type, *_split_value(e.value), now if e.ts is None else float(e.ts), now, key)
            for e in events
        ]
        with self._lock, self._errors("write to"):
            db = self._connect()
            with db.transaction(), db.cursor() as cursor:
                if key is not None:
                    # Claims the key, or waits for a concurrent claim to commit (then sees it) or roll back.
                    claimed = cursor.execute(
                        "INSERT INTO feedback_idempotency_keys (key, fingerprint, ids, created) VALUES (%s, %s, '', "
                        "%s) ON CONFLICT (key) DO NOTHING RETURNING key",
                        (key, digest, now),
                    ).fetchone()
                    if claimed is None:
                        seen = cursor.execute(
                            "SELECT fingerprint, ids FROM feedback_idempotency_keys WHERE key = %s", (key,)
                        ).fetchone()
                        if seen[0] != digest:
                            raise IdempotencyKeyReused(
                                "this Idempotency-Key was already used for a different batch of events; use a new "
                                "key for new events (a retry must repeat the first request exactly)"
                            )
                        return list(json.loads(seen[1]))
                cursor.executemany(
                    "INSERT INTO feedback_events (user_id, item_id, type, value_num, value_text, ts, received, "
                    "idempotency_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    rows,
                    returning=True,
                )
                ids = []
                while True:
                    ids.append(int(cursor.fetchone()[0]))
                    if not cursor.nextset():
                        break
                if key is not None:
                    cursor.execute(
                        "UPDATE feedback_idempotency_keys SET ids = %s WHERE key = %s", (json.dumps(ids), key)
                    )
        return ids

    def count(self) -> int:
        with self._lock, self._errors("read"):
            return int(self._connect().execute("SELECT COUNT(*) FROM feedback_events").fetchone()[0])

    def export(self, path: str | Path, *, types: Iterable[str] | None = None) -> int:
        """As :meth:`SQLiteFeedbackStore.export` (same rows, same order, same file), from one snapshot."""
        path = Path(path)
        wanted = None if types is None else sorted(set(types))
        where, args = ("", ()) if wanted is None else (" WHERE type = ANY(%s)", (wanted,))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        written = 0
        try:
            with self._lock, self._errors("read"):
                db = self._connect()
                with db.transaction():
                    db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    n, numeric = db.execute(
                        f"SELECT COUNT(*), COUNT(value_num) FROM feedback_events{where}", args
                    ).fetchone()
                    if n == 0:
                        which = "" if wanted is None else f" of type {', '.join(wanted)}"
                        raise FeedbackError(f"{self.path} holds no feedback events{which}; nothing to export")
                    with_rating = numeric == n
                    with open(tmp, "w", newline="", encoding="utf-8") as handle, db.cursor(name="export") as cursor:
                        cursor.execute(
                            f"SELECT user_id, item_id, value_num, ts FROM feedback_events{where} ORDER BY ts, id", args
                        )
                        written = _write_export(handle, cursor, with_rating)
            os.replace(tmp, path)
        except OSError as exc:
            raise FeedbackError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return written

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()


def _split_value(value: float | str | None) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, bool):  # a bool is an int in Python; it is no rating
        return None, str(value).lower()
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise FeedbackError(f"an event value must be a finite number or a text, got {value}")
        return float(value), None
    return None, str(value)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _write_export(handle: Any, cursor: Any, with_rating: bool) -> int:
    """Write the export CSV from a cursor over (user_id, item_id, value_num, ts) rows, in batches; returns the
    number of rows. Without ratings on every event the rating column is left out (the generic loader needs a
    rating on every row or on none)."""
    writer = csv.writer(handle)
    writer.writerow(EXPORT_COLUMNS if with_rating else ("user_id", "item_id", "timestamp"))
    written = 0
    while batch := cursor.fetchmany(_FETCH):
        for user, item, value, ts in batch:
            stamp = math.floor(ts)
            writer.writerow((user, item, _number(value), stamp) if with_rating else (user, item, stamp))
        written += len(batch)
    return written
