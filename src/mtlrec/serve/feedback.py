"""Feedback storage: events that users send to a running server (``POST /feedback``), kept durably and exported
as an interactions table that ``mtlrec train --dataset generic`` reads.

``FeedbackStore`` is the interface the server talks to (``add``, ``export``, ``count``, ``close``);
``SQLiteFeedbackStore`` implements it in one SQLite file. A store for another database (PostgreSQL) implements the
same four methods with the same guarantees:

- ``add`` returns only after the events are committed durably, and a retried call with the same idempotency key
  stores nothing again and returns the ids of the first call (a different batch under a used key is an error);
- ``export`` writes one row per stored event, oldest first, in the generic interactions format.

This module needs only the standard library (and no web framework), so ``mtlrec feedback export`` works without
the ``serve`` extra.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
                        writer = csv.writer(handle)
                        writer.writerow(EXPORT_COLUMNS if with_rating else ("user_id", "item_id", "timestamp"))
                        cursor.execute(
                            f"SELECT user_id, item_id, value_num, ts FROM events{where} ORDER BY ts, id", args
                        )
                        while batch := cursor.fetchmany(_FETCH):
                            for user, item, value, ts in batch:
                                stamp = math.floor(ts)
                                writer.writerow(
                                    (user, item, _number(value), stamp) if with_rating else (user, item, stamp)
                                )
                            written += len(batch)
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
