"""Cold-start users: the hold-out (eval/cold_users.py), the multi-relevant ranking metrics, and a run that ranks for
users it never trained on from their first three items, through the scores ``recommend_new_user`` serves."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import ndcg_score

from conftest import make_split, tiny_overrides
from mtlrec import Recommender
from mtlrec.config import ModelConfig, load_config
from mtlrec.errors import ConfigError
from mtlrec.eval.cold_start import cold_item_set
from mtlrec.eval.cold_users import (
    LIKED,
    cold_user_set,
    hold_out_users,
    model_new_user_fn,
    new_user_cases,
    rank_new_users,
)
from mtlrec.eval.metrics import multi_rank_metrics, rank_metrics
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import build_tasks
from mtlrec.train.data import TrainingData, histories, train_positive_rows
from mtlrec.train.pipeline import prepare
from mtlrec.train.run import evaluate_run, train_run

N_USERS, N_ITEMS, SHARE = 60, 80, 0.2  # the conftest world


# ----------------------------------------------------------------------------- the hold-out


def test_cold_user_set_is_seeded_sized_and_validated() -> None:
    held = cold_user_set(943, 0.1, seed=0)
    assert len(held) == 94 and np.array_equal(held, np.unique(held))
    assert np.array_equal(held, np.sort(np.random.default_rng([0, 2]).permutation(943)[:94]))
    assert not np.array_equal(held, cold_item_set(943, 0.1, seed=0))  # not the cold items' draw ([seed, 1])
    assert not np.array_equal(held, cold_user_set(943, 0.1, seed=1))
    assert len(cold_user_set(50, 0.0)) == 0
    with pytest.raises(ValueError):
        cold_user_set(50, 1.0)
    assert load_config().data.cold_users == 0.0
    assert load_config(overrides={"data.cold_users": 0.25}).data.cold_users == 0.25
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="data.cold_users"):
            load_config(overrides={"data.cold_users": bad})


def test_held_out_users_lose_every_interaction_and_keep_their_order() -> None:
    seqs = [[1, 2, 3, 4, 5], [6, 1, 7], [2, 8], [9, 3, 1, 0, 4, 6], [5, 4]]
    full = make_split(seqs, 10)
    rest, held = hold_out_users(full, np.array([0, 3]))
    assert rest.lengths.tolist() == [0, 3, 2, 0, 2] and held.lengths.tolist() == [5, 0, 0, 6, 0]
    assert rest.eval_users.tolist() == [1]  # the held-out users are not evaluated any more
    assert not np.isin(np.repeat(np.arange(5), rest.lengths)[rest.train_positions()], [0, 3]).any()
    for u, seq in enumerate(seqs):
        mine = held if u in (0, 3) else rest
        assert mine.items[mine.offsets[u] : mine.offsets[u + 1]].tolist() == seq  # PROTOCOL order kept
    cases = new_user_cases(held, np.array([0, 3]))
    assert cases.users.tolist() == [0, 3] and cases.liked.tolist() == [[1, 2, 3], [9, 3, 1]]
    relevant = cases.relevant(np.arange(2), 10)
    assert np.flatnonzero(relevant[0]).tolist() == [4, 5] and np.flatnonzero(relevant[1]).tolist() == [0, 4, 6]
    assert cases.next_items.tolist() == [4, 0]  # the item right after the liked ones, in time order
    repeat = new_user_cases(make_split([[1, 2, 3, 2, 7, 8]], 10), np.array([0]))
    assert repeat.next_items.tolist() == [7]  # a liked item coming back is not the next new item
    # too short: three interactions leave nothing to find
    assert len(new_user_cases(make_split([[1, 2, 3], [4, 5, 6, 7]], 10), np.array([0, 1]))) == 1


# ----------------------------------------------------------------------------- the metrics


def test_multi_relevant_ndcg_matches_a_hand_computation() -> None:
    # relevant items 1 and 4 ranked 1st and 4th of 6 (no ties), K = 3 and 10
    scores = torch.tensor([[0.9, 1.0, 0.5, 0.7, 0.6, 0.1]])
    relevant = torch.tensor([[False, True, False, False, True, False]])
    out = multi_rank_metrics(scores, relevant, ks=(3, 10))
    assert out["ndcg@10"].item() == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert out["ndcg@3"].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert out["recall@3"].item() == 0.5 and out["recall@10"].item() == 1.0 and out["hr@3"].item() == 1.0
    # three relevant items, only K = 2 slots: the ideal DCG is over min(K, |R|) = 2 ranks
    out = multi_rank_metrics(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), torch.tensor([[True, False, True, True]]), (2,))
    assert out["ndcg@2"].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert out["recall@2"].item() == pytest.approx(1 / 3)
    # ties never favour the model: one relevant item tied with two others for ranks 1..3 counts at the mean
    out = multi_rank_metrics(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), torch.tensor([[False, True, False, False]]), (1, 2))
    assert out["ndcg@2"].item() == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert out["hr@1"].item() == pytest.approx(1 / 3) and out["hr@2"].item() == pytest.approx(2 / 3)


def test_multi_relevant_ndcg_equals_sklearn_where_comparable() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(5, 40))
        scores = rng.integers(0, 6, n).astype(np.float64)  # many ties: sklearn averages gains over them too
        relevant = rng.random(n) < 0.3
        relevant[int(rng.integers(n))] = True
        excluded = (rng.random(n) < 0.2) & ~relevant
        masked = np.where(excluded, -np.inf, scores)
        for k in (1, 3, 10):
            ours = multi_rank_metrics(torch.from_numpy(masked)[None], torch.from_numpy(relevant)[None], (k,))
            keep = ~excluded  # sklearn has no exclusion: rank the remaining items only
            oracle = ndcg_score(relevant[keep][None].astype(float), scores[keep][None], k=k)
            assert ours[f"ndcg@{k}"].item() == pytest.approx(oracle, abs=1e-12)


def test_hr_recall_and_ndcg_are_exact_expectations_over_tie_orders() -> None:
    rng = np.random.default_rng(1)
    for _ in range(15):
        n = 6
        scores = rng.integers(0, 3, n).astype(np.float64)
        relevant = rng.random(n) < 0.4
        relevant[0] = True
        for k in (1, 2, 4):
            values = []
            for order in itertools.permutations(range(n)):  # every way to break the ties
                ranked = sorted(range(n), key=lambda i: (-scores[i], order[i]))
                ranks = [ranked.index(i) for i in np.flatnonzero(relevant)]
                dcg = sum(1 / math.log2(r + 2) for r in ranks if r < k)
                ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(ranks))))
                hits = sum(r < k for r in ranks)
                values.append((float(hits > 0), dcg / ideal, hits / len(ranks)))
            expected = np.mean(values, axis=0)
            out = multi_rank_metrics(torch.from_numpy(scores)[None], torch.from_numpy(relevant)[None], (k,))
            got = [out[f"{m}@{k}"].item() for m in ("hr", "ndcg", "recall")]
            assert got == pytest.approx(expected.tolist(), abs=1e-12)


def test_one_relevant_item_reduces_to_the_protocol_metrics() -> None:
    scores = torch.randn(6, 30, generator=torch.Generator().manual_seed(0))
    scores[:, :8] = 0.0  # ties
    targets = torch.tensor([0, 3, 9, 15, 29, 7])
    relevant = torch.zeros(6, 30, dtype=torch.bool)
    relevant[torch.arange(6), targets] = True
    multi, single = multi_rank_metrics(scores, relevant), rank_metrics(scores, targets)
    for k in (10, 20):
        assert torch.allclose(multi[f"ndcg@{k}"], single[f"ndcg@{k}"])
        assert torch.allclose(multi[f"hr@{k}"], single[f"hr@{k}"])
        assert torch.allclose(multi[f"recall@{k}"], single[f"hr@{k}"])
    with pytest.raises(ValueError, match="no relevant item"):
        multi_rank_metrics(scores, torch.zeros(6, 30, dtype=torch.bool))
    scores[0, 0] = float("-inf")
    with pytest.raises(ValueError, match="excluded"):
        multi_rank_metrics(scores, relevant)


# ----------------------------------------------------------------------------- the mean id of a new user


def test_the_mean_id_of_a_new_user_is_over_trained_users_only() -> None:
    config = ModelConfig(dim=4, hidden=(8,), history_len=3)
    model = MultiTaskModel(config, build_tasks({"interest": {}}), 5, torch.randn(N_ITEMS, 6), n_categories=2).eval()
    hist, mask = torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool)
    ids = model.user_encoder.ids.weight
    known = model.user_repr(torch.tensor([2]), hist, mask)
    assert torch.allclose(model.cold_user_repr(hist, mask), known - ids[2] + ids.mean(0), atol=1e-6)
    model.set_warm_users(np.array([True, False, True, True, False]))
    assert torch.allclose(model.cold_user_repr(hist, mask), known - ids[2] + ids[[0, 2, 3]].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        model.set_warm_users(np.ones(4, dtype=bool))
    state = {k: v for k, v in model.state_dict().items() if k != "user_warm"}  # a model saved before the mask
    model.load_state_dict(state)
    assert model.user_warm.all()


# ----------------------------------------------------------------------------- a whole run


def cold_users_data(world: Path) -> TrainingData:
    config = load_config(overrides=tiny_overrides(world, **{"data.cold_users": SHARE}))
    return prepare(config, progress=False, log=lambda _: None).data


@pytest.fixture(scope="module")
def cold_users_run(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "cold_users"
    config = load_config(overrides=tiny_overrides(world, **{"data.cold_users": SHARE}))
    return out, train_run(config, out, progress=False, log=lambda _: None)


def test_held_out_users_are_not_trained_on_nor_evaluated(world: Path, cold_users_run: tuple[Path, dict]) -> None:
    out, metrics = cold_users_run
    held = cold_user_set(N_USERS, SHARE, seed=0)
    assert len(held) == 12
    data = cold_users_data(world)
    split = data.split
    assert np.array_equal(data.cold_users, held)
    assert (split.lengths[held] == 0).all() and (np.delete(split.lengths, held) == 12).all()
    assert (data.cold_user_split.lengths[held] == 12).all()  # theirs, kept aside for the cold-users evaluation
    rows = train_positive_rows(data, split.train_positions())  # every training row: its user and its history
    assert not np.isin(rows.users, held).any() and len(rows.users) == (N_USERS - 12) * 10
    assert not np.isin(split.rows, data.cold_user_split.rows).any()  # no held-out interaction is left to read
    _, mask = histories(split, held, split.offsets[1:][held], 8)  # a held-out user's history is empty
    assert not mask.any()
    assert not np.isin(split.eval_users, held).any() and metrics["evaluated_users"] == N_USERS - 12
    per_user = load_file(str(out / "per_user.safetensors"))["users"].numpy()  # the normal evaluation's users
    assert len(per_user) == N_USERS - 12 and not np.isin(per_user, held).any()
    rec = Recommender.load(out)
    assert (rec.split.lengths[held] == 0).all()  # the run keeps no interaction of theirs either
    assert not rec.model.user_warm[held].any() and int(rec.model.user_warm.sum()) == N_USERS - 12
    again = evaluate_run(out, log=lambda _: None)  # re-evaluation holds the same users out
    assert again["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)


def test_cold_user_scores_are_what_recommend_new_user_serves(world: Path, cold_users_run: tuple[Path, dict]) -> None:
    out, _ = cold_users_run
    data = cold_users_data(world)
    cases = new_user_cases(data.cold_user_split, data.cold_users)
    rec = Recommender.load(out)
    score_fn = model_new_user_fn(rec.model, rec.tasks, rec.default_blend, cases)
    batch = score_fn(np.arange(len(cases)), "test")  # [U, n_items], as the evaluation batches them
    for p in range(len(cases)):
        liked = [rec.item_ids[i] for i in cases.liked[p]]
        served = rec.recommend_new_user(liked=liked, k=N_ITEMS - LIKED)  # every item but the liked ones
        row = score_fn(np.array([p]), "test")[0].clone()  # one at a time, as recommend_new_user
        assert torch.allclose(row, batch[p], atol=1e-5)
        row[torch.from_numpy(cases.liked[p])] = float("-inf")
        order = torch.argsort(row, descending=True, stable=True)[: N_ITEMS - LIKED]
        assert [r["item_id"] for r in served] == [rec.item_ids[i] for i in order]
        assert [r["score"] for r in served] == [round(float(row[i]), 4) for i in order]


def test_held_out_users_are_served_far_better_than_most_popular(cold_users_run: tuple[Path, dict]) -> None:
    """Users prefer one category and item text names it: three items are enough to find the rest."""
    out, metrics = cold_users_run
    report = json.loads((out / "metrics.json").read_text())["cold_users"]
    assert report == json.loads(json.dumps(metrics["cold_users"]))
    assert report["held_out"] == 12 and report["users"] == 12 and report["liked"] == LIKED
    assert report["share"] == SHARE and report["mean_relevant"] == 9.0
    assert set(report) >= {"mtlrec", "most_popular", "content_knn"}
    multi = {f"{m}@{k}" for m in ("hr", "ndcg", "recall") for k in (10, 20)}
    single = {f"next/{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (10, 20)}
    assert set(report["mtlrec"]) == multi | single
    assert report["mtlrec"]["ndcg@10"] >= 2 * report["most_popular"]["ndcg@10"]
    assert report["mtlrec"]["recall@10"] >= 2 * report["most_popular"]["recall@10"]


def test_ranking_excludes_exactly_the_liked_items() -> None:
    held = make_split([[0, 1, 2, 3, 4]], 6)
    cases = new_user_cases(held, np.array([0]))
    # a scorer that puts the liked items on top: they are masked, so relevant items 3 and 4 come next
    top = rank_new_users(lambda p, s: torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 0.0]]), cases, 6, ks=(2,))
    assert top["ndcg@2"][0] == pytest.approx(1.0) and top["recall@2"][0] == 1.0


def test_a_run_directory_without_the_user_mask_loads(cold_users_run: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cold_users_run[0], old)
    state = load_file(str(old / "model.safetensors"))
    del state["user_warm"]
    save_file(state, str(old / "model.safetensors"))
    assert Recommender.load(old).model.user_warm.all()
