"""The social task, attention over friends, and partial labels, on a small HetRec-format world with friends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from mtlrec.config import ModelConfig, load_config
from mtlrec.data import load_dataset
from mtlrec.data.splits import leave_one_out
from mtlrec.errors import ConfigError
from mtlrec.models.model import MultiTaskModel
from mtlrec.models.social import social_inputs
from mtlrec.recommend.artifact import load_artifact
from mtlrec.tasks.base import build_tasks
from mtlrec.train.data import NegativeSampler, TrainingData, train_positive_rows
from mtlrec.train.run import evaluate_run, train_run

GROUPS, PER_GROUP, ITEMS_PER_GROUP = 4, 25, 20


def make_social_world(folder: Path, seed: int = 0) -> Path:
    """Users in 4 taste groups; each listens to 10 items of the group's block (tagged with the group's tag) and 2
    others, and has 2 friends in the group and 2 outside it, so a friend's items are sometimes to the user's
    taste and sometimes not. Written in the HetRec Last.fm format."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_items = GROUPS * ITEMS_PER_GROUP
    listens, tagged, edges = ["userID\tartistID\tweight"], ["userID\tartistID\ttagID"], set()
    for u in range(GROUPS * PER_GROUP):
        g = u % GROUPS
        block = g * ITEMS_PER_GROUP + rng.permutation(ITEMS_PER_GROUP)[:10]
        other = rng.choice(np.setdiff1d(np.arange(n_items), block), 2, replace=False)
        listens += [f"{u + 1}\t{i + 1}\t{rng.integers(1, 500)}" for i in np.concatenate([block, other])]
        mates = [v for v in range(GROUPS * PER_GROUP) if v % GROUPS == g and v != u]
        strangers = [v for v in range(GROUPS * PER_GROUP) if v % GROUPS != g]
        chosen = [*rng.choice(mates, 2, replace=False), *rng.choice(strangers, 2, replace=False)]
        edges |= {(u, int(v)) for v in chosen} | {(int(v), u) for v in chosen}  # friendship is mutual
    for i in range(n_items):
        tagged.append(f"1\t{i + 1}\t{i // ITEMS_PER_GROUP + 1}")
    (folder / "user_artists.dat").write_text("\n".join(listens) + "\n")
    friends = "".join(f"{u + 1}\t{v + 1}\n" for u, v in sorted(edges))
    (folder / "user_friends.dat").write_text("userID\tfriendID\n" + friends)
    (folder / "user_taggedartists.dat").write_text("\n".join(tagged) + "\n")
    (folder / "tags.dat").write_text("tagID\ttagValue\n" + "".join(f"{g + 1}\tstyle{g}\n" for g in range(GROUPS)))
    (folder / "artists.dat").write_text("id\tname\turl\tpictureURL\n"
                                        + "".join(f"{i + 1}\tArtist {i}\tu\tp\n" for i in range(n_items)))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def social_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_social_world(tmp_path_factory.mktemp("data") / "hetrec2011-lastfm-2k")


def social_overrides(folder: Path, **extra: object) -> dict[str, object]:
    base = {k: v for k, v in tiny_overrides(folder).items() if not k.startswith("data.")}
    return {**base, "data.dataset": "lastfm-2k", "data.data_dir": str(folder.parent), **extra}


def training_data(folder: Path) -> TrainingData:
    ds = load_dataset("lastfm-2k", folder.parent)
    split = leave_one_out(ds, 0)
    return TrainingData.build(ds, split, np.zeros((ds.n_items, 4), np.float32), np.zeros(ds.n_items, np.int8))


def test_friend_graph_is_symmetric_csr(social_world: Path) -> None:
    ds = load_dataset("lastfm-2k", social_world.parent)
    offsets, friends = ds.friend_graph()
    assert offsets[-1] == len(friends) and len(offsets) == ds.n_users + 1
    for u in range(ds.n_users):
        mine = friends[offsets[u] : offsets[u + 1]]
        assert np.all(np.diff(mine) > 0) and u not in mine and len(mine) >= 4
        for f in mine:  # listed in both directions
            assert u in friends[offsets[f] : offsets[f + 1]]


def test_social_labels_exposure_and_extra_rows(social_world: Path) -> None:
    data = training_data(social_world)
    task = build_tasks({"social": {"negatives": 3}})["social"]
    task.prepare(data)
    split = data.split
    offsets, friends = data.dataset.friend_graph()
    train = split.role == 0
    owner_of = np.repeat(np.arange(split.n_users), split.lengths)

    def train_items(u: int) -> set[int]:
        return set(split.items[train & (owner_of == u)].tolist())

    exposure = {u: set().union(*(train_items(f) for f in friends[offsets[u] : offsets[u + 1]])) for u in range(5)}
    positives = train_positive_rows(data, split.train_positions()[:40])
    rows = NegativeSampler(split, seed=1).rows(positives, 4)
    extra = task.extra_rows(rows, np.random.default_rng(0))
    assert extra is not None and len(extra.items) == 3 * int(rows.positive.sum())
    for u, i, o in zip(extra.users, extra.items, extra.owner, strict=True):
        assert rows.users[o] == u and rows.positive[o]
        if u in exposure:  # drawn from the friends' items the user never engaged with
            assert i in exposure[u] and i not in train_items(u)
    both = rows.extend(extra, "social")
    target, mask = task.labels(both)
    for r in range(len(both.items)):
        u, i = int(both.users[r]), int(both.items[r])
        if u in exposure:
            assert bool(mask[r]) == (i in exposure[u])
            assert float(target[r]) == float(both.positive[r] or i in train_items(u))
    # Partial labels: the extra rows are the social task's alone.
    assert both.for_task("social").all() and not both.for_task("interest")[len(rows.items) :].any()
    assert both.for_task("interest")[: len(rows.items)].all()
    assert task.extra_rows(rows, np.random.default_rng(0)).items.tolist() == extra.items.tolist()  # seeded


def test_friend_attention_starts_neutral_and_uses_friends(social_world: Path) -> None:
    data = training_data(social_world)
    cfg = ModelConfig(dim=8, hidden=(8,), dropout=0.0, history_len=6, friends=3)
    inputs = social_inputs(data.split, *data.dataset.friend_graph(), 3, 6)
    assert inputs.mask.sum(-1).max() == 3  # capped at model.friends
    torch.manual_seed(0)
    model = MultiTaskModel(cfg, build_tasks({"interest": {}}), data.split.n_users, torch.randn(data.split.n_items, 4),
                           n_categories=0, social=inputs).eval()  # fmt: skip
    users = torch.arange(6)
    hist, mask = torch.zeros(6, 6, dtype=torch.long), torch.zeros(6, 6, dtype=torch.bool)
    plain = model.user_encoder(users, hist, mask, model.item_encoder)
    assert torch.allclose(model.user_repr(users, hist, mask), plain)  # value projection starts at zero
    torch.nn.init.normal_(model.social.value.weight)
    moved = model.user_repr(users, hist, mask)
    assert not torch.allclose(moved, plain)
    # Changing a friend's id embedding changes the user's representation; a non-friend's does not.
    friend = int(inputs.friends[0, 0])
    stranger = next(v for v in range(data.split.n_users) if v not in inputs.friends[0].tolist() and v != 0)
    with torch.no_grad():
        model.user_encoder.ids.weight[stranger] += 5.0
        assert torch.allclose(model.user_repr(users[:1], hist[:1], mask[:1]), moved[:1])
        model.user_encoder.ids.weight[friend] += 5.0
        assert not torch.allclose(model.user_repr(users[:1], hist[:1], mask[:1]), moved[:1])


def test_social_run_learns_and_reloads(social_world: Path, tmp_path: Path) -> None:
    overrides = social_overrides(social_world, **{"model.friends": 4, "train.epochs": 6, "train.lr": 0.01})
    config = load_config(None, overrides).with_overrides({"tasks": {"interest": {}, "social": {"weight": 0.5}}})
    metrics = train_run(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert metrics["test"]["social_auc"] > 0.75  # friends' block items the user took vs ones they did not
    assert "seeded random leave-one-out" in metrics["protocol"]
    artifact = load_artifact(tmp_path / "run")
    assert artifact.model.social is not None and (tmp_path / "run" / "social.safetensors").is_file()
    again = evaluate_run(tmp_path / "run", log=lambda _: None)
    assert again["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    assert again["test"]["social_auc"] == pytest.approx(metrics["test"]["social_auc"], abs=1e-6)


def test_social_needs_a_graph(world: Path, tmp_path: Path) -> None:
    config = load_config(None, tiny_overrides(world)).with_overrides({"tasks": {"interest": {}, "social": {}}})
    with pytest.raises(ConfigError, match="needs a social graph"):
        train_run(config, tmp_path / "a", progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="model.friends"):
        train_run(load_config(None, tiny_overrides(world, **{"model.friends": 3})), tmp_path / "b", progress=False,
                  log=lambda _: None)  # fmt: skip
