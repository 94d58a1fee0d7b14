"""Temporal leave-one-out exactly as PROTOCOL.md, including its published hash check."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from conftest import shared_datasets
from mtlrec.data import Dataset, load_dataset
from mtlrec.data.splits import TEST, TRAIN, VALID, temporal_leave_one_out


def small(rows: list[tuple[str, str, int]]) -> Dataset:
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    inter["rating"] = 1.0
    items = pd.DataFrame({"item_id": sorted(set(inter.item_id)), "title": "", "text": "", "year": np.nan})
    items["categories"] = [[] for _ in range(len(items))]
    return Dataset("t", inter, items, pd.DataFrame({"user_id": sorted(set(inter.user_id))}))


def test_roles_follow_time_and_short_users_stay_in_train() -> None:
    ds = small([("a", "x", 30), ("a", "y", 10), ("a", "z", 20), ("a", "w", 40), ("b", "x", 5), ("b", "y", 6)])
    split = temporal_leave_one_out(ds)
    items = np.array(ds.item_ids)
    a = slice(split.offsets[0], split.offsets[1])
    assert items[split.items[a]].tolist() == ["y", "z", "x", "w"]
    assert split.role[a].tolist() == [TRAIN, TRAIN, VALID, TEST]
    assert split.role[split.offsets[1] : split.offsets[2]].tolist() == [TRAIN, TRAIN]  # b has < 3: not evaluated
    assert split.eval_users.tolist() == [0]
    assert items[split.target("valid")].tolist() == ["x"] and items[split.target("test")].tolist() == ["w"]
    # valid sees train only; test also sees the validation item, never the test one
    assert split.history_end("valid")[0] == 2 and split.history_end("test")[0] == 3
    users, seen = split.seen_pairs("test")
    assert sorted(items[seen[users == 0]].tolist()) == ["x", "y", "z"]


def test_equal_timestamps_are_broken_by_the_seeded_draw_not_by_item_id() -> None:
    rows = [("a", f"i{k}", 7) for k in range(6)]
    draw = np.random.default_rng(0).random(6)
    split = temporal_leave_one_out(small(rows))
    expected = [f"i{k}" for k in np.argsort(draw, kind="stable")]
    ids = small(rows).item_ids
    assert [ids[i] for i in split.items] == expected


@pytest.mark.skipif(shared_datasets() is None, reason="set MTLREC_DATA_DIR to the shared datasets")
def test_movielens_100k_split_matches_protocol_hashes() -> None:
    ds = load_dataset("ml-100k", shared_datasets())
    split = temporal_leave_one_out(ds)
    users = np.array(ds.user_ids)[split.eval_users]
    order = np.argsort(users.astype(int))
    expected = {
        "test": "ddd9f11b8c30188b6133569d746d45fd7e13203fa3d50048012e98650d31f316",
        "valid": "a36e2e5e3cb14ff4fe06c01e594ed77a0d680546cf330089c1761ec0276bbc92",
    }
    for stage, digest in expected.items():
        items = np.array(ds.item_ids)[split.target(stage)]
        text = "".join(f"{users[k]}\t{items[k]}\n" for k in order)
        assert hashlib.sha256(text.encode()).hexdigest() == digest, stage
    assert len(split.eval_users) == 943
