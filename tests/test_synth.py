"""The synthetic world: the shape promised (sizes, no repeats, power-law popularity, taste, homophily, time order),
the same world for the same seed, and files that `mtlrec train --dataset generic` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from mtlrec.data.generic import load_generic
from mtlrec.data.synth import synth_world
from mtlrec.errors import ConfigError


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return synth_world(3000, 800, 60_000, categories=12, friends=6, seed=3)


def test_sizes_ids_and_no_repeated_pairs(world) -> None:  # type: ignore[no-untyped-def]
    inter = world.interactions
    assert 0.95 * 60_000 <= len(inter) <= 60_000
    assert inter["user_id"].nunique() == 3000  # every user has at least one interaction
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter["item_id"]) <= set(world.items["item_id"]) and len(world.items) == 800
    assert inter["rating"].between(1, 5).all() and set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (inter.groupby("user_id", sort=False)["timestamp"].diff().dropna() > 0).all()  # time moves forward


def test_popularity_and_activity_are_skewed(world) -> None:  # type: ignore[no-untyped-def]
    pop = world.interactions["item_id"].value_counts().to_numpy()
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()  # the top 10% of items hold far more than 10%
    activity = world.interactions["user_id"].value_counts().to_numpy()
    assert activity[0] > 10 * np.median(activity)


def test_users_follow_their_tastes_and_friends_share_them(world) -> None:  # type: ignore[no-untyped-def]
    cats = world.items.set_index("item_id")["categories"].str.split("|")
    inter = world.interactions.assign(category=world.interactions["item_id"].map(cats)).explode("category")
    shares = inter.groupby("user_id")["category"].value_counts(normalize=True)
    heavy = world.interactions["user_id"].value_counts().index[:200]
    top_share = shares.groupby(level=0).max().loc[heavy].mean()
    overall = inter["category"].value_counts(normalize=True).iloc[0]
    assert top_share > 1.3 * overall  # a user's favourite category beats the catalogue's biggest one

    profile = shares.unstack(fill_value=0.0)
    social = world.social
    assert not (social["user_id"] == social["friend_id"]).any()
    edges = set(zip(social["user_id"], social["friend_id"], strict=True))
    assert all((b, a) in edges for a, b in edges)  # listed both ways
    rng = np.random.default_rng(0)
    pairs = social.sample(2000, random_state=0)
    strangers = rng.choice(profile.index.to_numpy(), size=(2000, 2))

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        x, y = profile.loc[a].to_numpy(), profile.loc[b].to_numpy()
        return float(np.mean((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)))

    friends = similarity(pairs["user_id"].to_numpy(), pairs["friend_id"].to_numpy())
    assert friends > similarity(strangers[:, 0], strangers[:, 1]) + 0.05  # homophily


def test_same_seed_same_world_and_another_seed_another(world) -> None:  # type: ignore[no-untyped-def]
    again = synth_world(3000, 800, 60_000, categories=12, friends=6, seed=3)
    for name in ("interactions", "items", "social"):
        pd.testing.assert_frame_equal(getattr(world, name), getattr(again, name))
    other = synth_world(3000, 800, 60_000, categories=12, friends=6, seed=4)
    assert not other.interactions.equals(world.interactions)


def test_bad_sizes_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="cannot give each of 100 users one"):
        synth_world(100, 50, 99)
    with pytest.raises(ConfigError, match="at least 2 users and 2 items"):
        synth_world(1, 50, 99)


def test_cli_writes_files_the_generic_loader_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["data", "synth", "--output", str(tmp_path), "--users", "300", "--items", "120",
                              "--interactions", "4000", "--friends", "3", "--seed", "1"], capsys)  # fmt: skip
    assert code == 0, err
    assert "interactions of 300 users on 120 items" in out
    ds = load_generic(tmp_path / "interactions.parquet", items_path=tmp_path / "items.parquet",
                      social_path=tmp_path / "social.parquet")  # fmt: skip
    assert ds.n_users == 300 and ds.n_items == 120 and ds.has_ratings and ds.has_timestamps
    assert ds.social is not None and len(ds.social) == len(pd.read_parquet(tmp_path / "social.parquet"))
    assert all(ds.items["categories"].map(len) >= 1) and ds.items["text"].str.len().min() > 20


def test_a_synthetic_world_trains_with_its_social_graph(tmp_path: Path) -> None:
    """data.social_path reaches training (it once stopped at the loader): the social task and friend attention
    read the synthetic friends."""
    from mtlrec.config import load_config
    from mtlrec.train.run import train_run

    paths = synth_world(400, 150, 6000, categories=6, friends=4, seed=2).write(tmp_path / "world")
    overrides = {"data.dataset": "generic", "data.data_path": str(paths["interactions"]),
                 "data.items_path": str(paths["items"]), "data.social_path": str(paths["social"]),
                 "text.encoder": "hashing", "text.dim": 32, "model.dim": 16, "model.hidden": [32],
                 "model.friends": 4, "tasks": {"interest": {"weight": 1.0}, "social": {"weight": 0.5}},
                 "train.epochs": 2, "train.batch_size": 256, "train.threads": 1}  # fmt: skip
    metrics = train_run(load_config(overrides=overrides), tmp_path / "run", progress=False, log=lambda _: None)
    assert metrics["test"]["social_auc"] > 0.5 and (tmp_path / "run" / "social.safetensors").is_file()
