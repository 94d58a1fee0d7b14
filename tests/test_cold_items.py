"""Cold-start items: the inductive id part of ItemEncoder, the hold-out protocol (eval/cold_start.py), and a run
that ranks items it never trained on from their text alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_split, tiny_overrides
from mtlrec import Recommender
from mtlrec.config import ModelConfig, load_config
from mtlrec.data.splits import TEST, TRAIN, VALID, Split
from mtlrec.errors import ConfigError
from mtlrec.eval.cold_start import chance, cold_item_set, cold_targets, hold_out_items, rank_cold
from mtlrec.eval.evaluator import rank_users
from mtlrec.models.inputs import ItemEncoder
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import build_tasks
from mtlrec.train.data import NegativeSampler, histories
from mtlrec.train.run import check_config, evaluate_run, train_run

N_ITEMS = 12


def encoder(id_dropout: float = 0.0) -> ItemEncoder:
    torch.manual_seed(0)
    enc = ItemEncoder(torch.randn(N_ITEMS, 6), dim=4, dropout=0.0, id_dropout=id_dropout)
    with torch.no_grad():
        torch.nn.init.normal_(enc.default)
    return enc


def world_split() -> Split:
    rng = np.random.default_rng(3)
    return make_split([rng.choice(N_ITEMS, int(rng.integers(1, 9)), replace=False) for _ in range(20)], N_ITEMS)


# ----------------------------------------------------------------------------- the fallback


def test_fallback_is_used_exactly_for_items_without_a_train_interaction() -> None:
    split = hold_out_items(world_split(), np.array([2, 5, 7]))
    warm = split.trained_items()
    assert np.array_equal(warm, np.isin(np.arange(N_ITEMS), split.items[split.role == TRAIN]))
    assert not warm[[2, 5, 7]].any()
    enc = encoder().eval()
    enc.set_warm(warm)
    items = torch.arange(N_ITEMS)
    before_rows, before_all = enc(items), enc.all()
    hist = torch.tensor([[2, 0, 5], [1, 7, 3]])
    weights = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    before_pool = enc.pool(hist, weights)
    text = enc.project(enc.text)
    cold = torch.from_numpy(~warm)
    assert torch.allclose(before_all[cold], enc.default + text[cold])  # default id + text, nothing of their own
    assert torch.allclose(before_all[~cold], enc.ids.weight[:N_ITEMS][~cold] + text[~cold])
    assert torch.allclose(before_rows, before_all)
    assert torch.allclose(before_pool, (weights[..., None] * enc(hist)).sum(1), atol=1e-6)  # embedding_bag path
    with torch.no_grad():  # a cold item's own id row must not matter anywhere ...
        enc.ids.weight[:N_ITEMS][cold] += 100.0
    assert torch.equal(enc(items), before_rows) and torch.equal(enc.all(), before_all)
    assert torch.allclose(enc.pool(hist, weights), before_pool)
    with torch.no_grad():  # ... while a warm item's does
        enc.ids.weight[1] += 1.0
    assert not torch.allclose(enc.all()[1], before_all[1]) and torch.allclose(enc.all()[cold], before_all[cold])


def test_every_item_is_warm_until_told_and_the_mask_is_checked() -> None:
    enc = encoder()
    assert enc.warm.all()
    with pytest.raises(ValueError, match="shape"):
        enc.set_warm(np.ones(N_ITEMS + 1, dtype=bool))


def test_id_dropout_replaces_ids_in_training_only() -> None:
    enc = encoder(id_dropout=0.3)
    items = torch.arange(N_ITEMS).repeat(500)  # more rows than items: the catalogue-projection path
    text = enc.project(enc.text)[items]
    reps = enc.train()(items)
    dropped = torch.isclose(reps, enc.default + text).all(-1)
    own = torch.isclose(reps, enc.ids(items) + text).all(-1)
    assert bool((dropped | own).all())
    assert abs(float(dropped.float().mean()) - 0.3) < 0.03
    assert not torch.isclose(enc.train().all(), enc.eval().all()).all()  # the catalogue is dropped too, in training
    enc.eval()
    assert torch.equal(enc(items), enc.all()[items])  # evaluation never drops an id
    loss = enc.train()(items[:8]).sum()  # the default learns from dropped rows
    loss.backward()
    assert enc.ids.weight.grad[N_ITEMS].abs().sum() > 0  # the default is the table's last row


def test_id_dropout_must_be_a_probability() -> None:
    assert ModelConfig().id_dropout == 0.1
    check_config(load_config(overrides={"model.id_dropout": 0.0}))
    with pytest.raises(ConfigError, match="model.id_dropout"):
        check_config(load_config(overrides={"model.id_dropout": 1.0}))


def test_a_model_written_before_the_fallback_still_loads() -> None:
    config = ModelConfig(dim=4, hidden=(8,), history_len=3)
    model = MultiTaskModel(config, build_tasks({"interest": {}}), 3, torch.randn(N_ITEMS, 6), n_categories=2)
    state = {k: v for k, v in model.state_dict().items() if k != "item_encoder.warm"}
    state["item_encoder.ids.weight"] = state["item_encoder.ids.weight"][:N_ITEMS]  # no default row yet
    again = MultiTaskModel(config, build_tasks({"interest": {}}), 3, torch.randn(N_ITEMS, 6), n_categories=2)
    again.item_encoder.set_warm(np.zeros(N_ITEMS, dtype=bool))
    again.load_state_dict(state)  # strict: the two new entries are filled in
    assert again.item_encoder.warm.all()  # every item keeps the id it was trained with
    assert torch.count_nonzero(again.item_encoder.default) == 0


def test_a_model_that_kept_the_default_apart_loads_it_as_the_last_row() -> None:
    config = ModelConfig(dim=4, hidden=(8,), history_len=3)
    model = MultiTaskModel(config, build_tasks({"interest": {}}), 3, torch.randn(N_ITEMS, 6), n_categories=2)
    state = model.state_dict()
    table = state["item_encoder.ids.weight"]
    default = torch.arange(4.0)
    state["item_encoder.ids.weight"], state["item_encoder.default"] = table[:N_ITEMS], default  # the older layout
    again = MultiTaskModel(config, build_tasks({"interest": {}}), 3, torch.randn(N_ITEMS, 6), n_categories=2)
    again.load_state_dict(state)
    assert torch.equal(again.item_encoder.ids.weight[:N_ITEMS], table[:N_ITEMS])
    assert torch.equal(again.item_encoder.default, default)


# ----------------------------------------------------------------------------- the protocol


def test_cold_item_set_is_seeded_and_sized() -> None:
    cold = cold_item_set(1682, 0.1, seed=0)
    assert len(cold) == 168 and np.array_equal(cold, np.unique(cold))
    assert np.array_equal(cold, cold_item_set(1682, 0.1, seed=0))
    assert not np.array_equal(cold, cold_item_set(1682, 0.1, seed=1))
    # not the category task's held-out items (default_rng(seed).permutation)
    assert not np.array_equal(cold, np.sort(np.random.default_rng(0).permutation(1682)[:168]))
    assert len(cold_item_set(50, 0.0)) == 0
    with pytest.raises(ValueError):
        cold_item_set(50, 1.0)


def test_cold_items_lose_their_train_role_and_never_appear_in_a_history() -> None:
    full = world_split()
    cold = np.array([0, 4, 9])
    split = hold_out_items(full, cold)
    assert not np.isin(split.items[split.role == TRAIN], cold).any()
    assert len(split.items) == len(full.items) - int((np.isin(full.items, cold) & (full.role == TRAIN)).sum())
    # the split is untouched otherwise: the same users, targets and non-cold train sequences
    assert np.array_equal(split.eval_users, full.eval_users)
    for stage in ("valid", "test"):
        assert np.array_equal(split.target(stage), full.target(stage))
    for u in range(full.n_users):
        mine = full.items[full.offsets[u] : full.offsets[u + 1]]
        role = full.role[full.offsets[u] : full.offsets[u + 1]]
        kept = split.items[split.offsets[u] : split.offsets[u + 1]]
        assert np.array_equal(kept, mine[~(np.isin(mine, cold) & (role == TRAIN))])
    # every training row's history, and every history at validation, is free of cold items
    positions = split.train_positions()
    users = np.repeat(np.arange(split.n_users), split.lengths)
    hist, mask = histories(split, users[positions], positions, 10)
    assert not np.isin(hist.numpy()[mask.numpy()], cold).any()
    hist, mask = histories(split, split.eval_users, split.history_end("valid")[split.eval_users], 10)
    assert not np.isin(hist.numpy()[mask.numpy()], cold).any()
    # at test only the validation item (PROTOCOL.md) can be cold; it is never a train item
    hist, mask = histories(split, split.eval_users, split.history_end("test")[split.eval_users], 10)
    seen_cold = np.isin(hist.numpy(), cold) & mask.numpy()
    assert np.array_equal(seen_cold[:, :-1], np.zeros_like(seen_cold[:, :-1]))
    assert np.array_equal(seen_cold[:, -1], np.isin(split.target("valid"), cold))
    # a cold item is never in a user's seen (masked) train items, and the sampler never draws it
    assert not np.isin(split.seen_pairs("valid")[1], cold).any()
    sampler = NegativeSampler(split, seed=0, exclude=cold)
    assert not np.isin(sampler.sample(np.arange(split.n_users), 50), cold).any()


def test_a_user_left_with_no_train_item_is_still_evaluated() -> None:
    split = make_split([[1, 2, 3, 4], [5, 1, 6]], N_ITEMS)
    reduced = hold_out_items(split, np.array([1, 2, 5]))
    assert reduced.lengths.tolist() == [2, 2]
    assert reduced.eval_users.tolist() == [0, 1]
    assert reduced.target("test").tolist() == [4, 6] and reduced.target("valid").tolist() == [3, 1]
    assert reduced.history_end("valid").tolist() == [0, 2] and reduced.history_end("test").tolist() == [1, 3]
    assert list(reduced.role) == [VALID, TEST, VALID, TEST]


def test_chance_is_the_expectation_of_a_constant_ranking() -> None:
    split = world_split()
    cold = np.arange(N_ITEMS)
    constant = rank_cold(lambda users, stage: torch.zeros(len(users), N_ITEMS), split, cold, ks=(3, 5))
    expected = chance(split, split.eval_users[cold_targets(split, cold)], ks=(3, 5))
    assert constant.keys() == expected.keys()
    assert all(constant[k] == pytest.approx(expected[k]) for k in expected)
    per_user = rank_users(lambda users, stage: torch.zeros(len(users), N_ITEMS), split, "test", ks=(3,))
    only = cold_targets(split, np.array([0, 1]))
    part = rank_cold(lambda users, stage: torch.zeros(len(users), N_ITEMS), split, np.array([0, 1]), ks=(3,))
    assert part["hr@3"] == pytest.approx(per_user["hr@3"][only].mean())


def test_the_share_of_cold_items_is_validated() -> None:
    assert load_config().data.cold_items == 0.0
    assert load_config(overrides={"data.cold_items": 0.25}).data.cold_items == 0.25
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="data.cold_items"):
            load_config(overrides={"data.cold_items": bad})


# ----------------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def cold_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "cold"
    config = load_config(overrides=tiny_overrides(world, **{"data.cold_items": 0.2}))
    train_run(config, out, progress=False, log=lambda _: None)
    return out


def test_a_run_ranks_cold_items_from_their_text_better_than_chance(cold_run: Path) -> None:
    """Item text names the item's category and users prefer one category: items never trained on must still
    rank far above chance among all 80 items (and most-popular cannot place them at all)."""
    report = json.loads((cold_run / "metrics.json").read_text())["cold_items"]
    assert report["items"] == 16 and report["users"] > 5 and report["share"] == 0.2
    assert set(report) >= {"mtlrec", "content_knn", "random", "most_popular", "chance"}
    assert report["mtlrec"]["hr@10"] > 2 * report["chance"]["hr@10"]
    assert report["mtlrec"]["ndcg@10"] > 2 * report["chance"]["ndcg@10"]
    assert report["mtlrec"]["hr@10"] > report["random"]["hr@10"]
    assert report["most_popular"]["hr@10"] == 0.0


def test_the_run_directory_keeps_which_items_are_cold(cold_run: Path) -> None:
    cold = cold_item_set(80, 0.2, seed=0)
    stored = load_file(str(cold_run / "model.safetensors"))
    assert stored["item_encoder.warm"].dtype == torch.bool
    rec = Recommender.load(cold_run)
    warm = rec.model.item_encoder.warm.numpy()
    assert np.array_equal(warm, rec.split.trained_items())
    assert not warm[cold].any() and warm.sum() == 80 - len(cold)
    scores = rec.score_all(["u1"])  # serving scores cold items too
    assert np.isfinite(scores).all()


def test_a_run_directory_without_the_mask_loads_as_all_warm(cold_run: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cold_run, old)
    state = load_file(str(old / "model.safetensors"))
    del state["item_encoder.warm"]
    state["item_encoder.ids.weight"] = state["item_encoder.ids.weight"][:-1].contiguous()  # no default row yet
    save_file(state, str(old / "model.safetensors"))
    assert Recommender.load(old).model.item_encoder.warm.all()


def test_reevaluating_a_cold_run_holds_the_same_items_out(cold_run: Path) -> None:
    stored = json.loads((cold_run / "metrics.json").read_text())
    again = evaluate_run(cold_run, log=lambda _: None)
    for stage in ("valid", "test"):
        for key in ("hr@10", "ndcg@10"):
            assert again[stage][key] == pytest.approx(stored[stage][key], abs=1e-6)
