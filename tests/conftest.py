"""Shared fixtures: one torch thread (other processes share the cores), a private cache, and a tiny synthetic
world in the generic format with a learnable structure (users prefer one category, in time order)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

CATEGORIES = ["Action", "Comedy", "Drama", "Horror"]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("MTLREC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def make_world(folder: Path, n_users: int = 60, n_items: int = 80, per_user: int = 12, seed: int = 0) -> Path:
    """Write interactions.csv and items.csv: each user mostly picks items of a favourite category."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    item_cat = np.arange(n_items) % len(CATEGORIES)
    rows = []
    for u in range(n_users):
        fav = u % len(CATEGORIES)
        liked = rng.permutation(np.flatnonzero(item_cat == fav))
        others = rng.permutation(np.flatnonzero(item_cat != fav))
        picks = np.concatenate([liked[: per_user - 2], others[:2]])
        for t, i in enumerate(rng.permutation(picks)):
            rating = 5 if item_cat[i] == fav else 2
            rows.append((f"u{u}", f"i{i}", rating, 1_000_000 + 100 * u + t))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        folder / "interactions.csv", index=False
    )
    pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"{CATEGORIES[c]} movie number {i}" for i, c in enumerate(item_cat)],
            "categories": [CATEGORIES[c] for c in item_cat],
        }
    ).to_csv(folder / "items.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


def tiny_overrides(world: Path, **extra: object) -> dict[str, object]:
    return {
        "data.dataset": "generic",
        "data.data_path": str(world / "interactions.csv"),
        "data.items_path": str(world / "items.csv"),
        "text.encoder": "hashing",
        "text.dim": 64,
        "model.dim": 16,
        "model.hidden": [32, 16],
        "model.history_len": 8,
        "train.epochs": 4,
        "train.batch_size": 64,
        "train.negatives": 4,
        "train.threads": 1,
        **extra,
    }


@pytest.fixture(scope="session")
def tiny_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained once for the whole session."""
    from mtlrec.config import load_config
    from mtlrec.train.run import train_run

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(load_config(overrides=tiny_overrides(world)), out, progress=False, log=lambda _: None)
    return out


def shared_datasets() -> Path | None:
    """The real datasets (MTLREC_DATA_DIR), or None so tests that need them skip."""
    root = os.environ.get("MTLREC_DATA_DIR")
    return Path(root) if root and (Path(root) / "ml-100k" / "u.data").is_file() else None


def make_split(seqs: list[list[int]], n_items: int):  # -> mtlrec.data.splits.Split
    """A Split straight from per-user item sequences in time order (last = test, one before = validation)."""
    from mtlrec.data.splits import TEST, TRAIN, VALID, Split

    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    role = np.full(len(items), TRAIN, dtype=np.int8)
    evaluated = np.flatnonzero(lengths >= 3)
    role[offsets[evaluated + 1] - 1] = TEST
    role[offsets[evaluated + 1] - 2] = VALID
    n = len(items)
    return Split(len(seqs), n_items, items, np.full(n, np.nan, np.float32), np.arange(n), offsets, role)


@contextlib.contextmanager
def running_server(app: object) -> Iterator[str]:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, held until the server takes the socket
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the server did not start within 60 s"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop within 30 s"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``mtlrec ARGS`` in-process: (exit status, stdout, stderr)."""
    from mtlrec.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def crash_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies (an exception no one catches) as training step ``step`` begins."""
    from mtlrec.train.trainer import Trainer

    real, seen = Trainer.step, [0]

    def step_or_die(self: Trainer, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        seen[0] += 1
        if seen[0] == step:
            raise SystemExit("killed")
        return real(self, losses)

    monkeypatch.setattr(Trainer, "step", step_or_die)
