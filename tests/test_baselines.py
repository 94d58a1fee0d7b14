"""Tests for mtlrec.eval.baselines: the reference rankers against brute-force oracles, chance levels and a
block-structured dataset, and each one's view of the history at 'valid' (train) and 'test' (+ validation item)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_split
from mtlrec.data.generic import load_generic
from mtlrec.data.splits import TEST, TRAIN, VALID, Split, temporal_leave_one_out
from mtlrec.eval import baselines
from mtlrec.eval.baselines import (
    als_matrix,
    content_knn,
    implicit_als,
    most_popular,
    random_scores,
    tune_als,
    visible_positions,
)
from mtlrec.eval.evaluator import rank_users

pairwise = pytest.importorskip("sklearn.metrics.pairwise")


def replace_heldout(split: Split, rng: np.random.Generator, roles: tuple[int, ...]) -> Split:
    """The same split with every validation and/or test item swapped for another item."""
    items = split.items.copy()
    change = np.isin(split.role, roles)
    items[change] = (items[change] + rng.integers(1, split.n_items, int(change.sum()))) % split.n_items
    return Split(split.n_users, split.n_items, items, split.ratings, split.rows, split.offsets, split.role)


def random_split(rng: np.random.Generator, n_users: int, n_items: int, max_len: int, repeats: bool = True) -> Split:
    seqs = []
    for _ in range(n_users):
        n = int(rng.integers(1, max_len + 1))
        seqs.append(rng.integers(0, n_items, n) if repeats else rng.choice(n_items, n, replace=False))
    return make_split(seqs, n_items)


def block_split(seed: int = 0, n_a: int = 50, n_b: int = 150, half: int = 30, per_user: int = 8) -> Split:
    """Group A (users 0..n_a-1) only picks items 0..half-1, group B only items half..2*half-1; B is larger, so
    B's items are the most popular ones for everybody."""
    rng = np.random.default_rng(seed)
    seqs = [rng.choice(half, per_user, replace=False) + (0 if u < n_a else half) for u in range(n_a + n_b)]
    return make_split(seqs, 2 * half)


def test_visible_positions_are_train_at_valid_and_add_the_validation_item_at_test() -> None:
    split = random_split(np.random.default_rng(0), 30, 20, 7)
    assert np.array_equal(visible_positions(split, "valid"), split.role == TRAIN)
    assert np.array_equal(visible_positions(split, "test"), split.role != TEST)
    with pytest.raises(ValueError, match="stage"):
        visible_positions(split, "train")


# ----------------------------------------------------------------------------- random


def test_random_scores_reproduce_per_seed_and_differ_across_seeds_and_stages() -> None:
    split = random_split(np.random.default_rng(1), 40, 25, 6)
    users = np.arange(split.n_users)
    a = random_scores(split, seed=3)(users, "valid")
    assert a.shape == (40, 25) and a.dtype == torch.float64
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert torch.equal(a, random_scores(split, seed=3)(users, "valid"))
    # a user's row does not depend on the batch it is scored in
    fn = random_scores(split, seed=3)
    assert torch.equal(torch.cat([fn(users[i : i + 7], "valid") for i in range(0, 40, 7)]), a)
    assert torch.equal(fn(users[::-1].copy(), "valid"), a.flip(0))
    assert not torch.isclose(a, random_scores(split, seed=4)(users, "valid")).any()
    assert not torch.isclose(a, fn(users, "test")).any()
    with pytest.raises(ValueError, match="stage"):
        fn(users, "train")


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_random_hit_rate_is_k_over_candidates(stage: str) -> None:
    """Each user's hit@K is Bernoulli(p_u), p_u = K / c_u with c_u the items left after masking the seen ones, so
    the mean over U users has mean p = mean(p_u) and standard deviation sqrt(sum p_u (1 - p_u)) / U; allow 4 of
    them (a two-sided normal tail of 6e-5; the scores are seeded, so the check is deterministic anyway)."""
    rng = np.random.default_rng(5)
    n_items = 200
    split = random_split(rng, 3000, n_items, 40, repeats=False)  # distinct items: the target is never seen
    out = rank_users(random_scores(split, seed=11), split, stage, ks=(10, 20))
    seen = split.history_end(stage) - split.offsets[:-1]
    candidates = n_items - seen[split.eval_users]
    for k in (10, 20):
        p = k / candidates
        expected, sd = p.mean(), math.sqrt((p * (1 - p)).sum()) / len(p)
        assert len(p) > 2000 and sd < 0.006
        assert abs(out[f"hr@{k}"].mean() - expected) < 4 * sd, (k, out[f"hr@{k}"].mean(), expected, sd)


# ----------------------------------------------------------------------------- content kNN


def knn_oracle(split: Split, vectors: np.ndarray, stage: str, k_history: int | None = None) -> np.ndarray:
    """Per user, the mean cosine (scikit-learn) to the history read off the roles, not history_end."""
    visible = (TRAIN,) if stage == "valid" else (TRAIN, VALID)
    out = np.zeros((split.n_users, split.n_items))
    for u in range(split.n_users):
        seq = slice(split.offsets[u], split.offsets[u + 1])
        history = split.items[seq][np.isin(split.role[seq], visible)]
        if k_history is not None:
            history = history[-k_history:]
        if len(history):
            out[u] = pairwise.cosine_similarity(vectors[history], vectors).mean(axis=0)
    return out


@pytest.mark.parametrize("k_history", [None, 1, 3])
@pytest.mark.parametrize("stage", ["valid", "test"])
def test_content_knn_matches_sklearn_cosine(stage: str, k_history: int | None) -> None:
    rng = np.random.default_rng(2)
    n_items = 30
    split = dataclasses.replace(random_split(rng, 25, n_items - 4, 9), n_items=n_items)  # 26..29: cold items
    vectors = rng.normal(size=(n_items, 12))
    vectors[5] = 0.0  # an item with no text: similarity 0
    vectors[27] = 3.0 * vectors[split.items[0]]  # a cold item parallel to user 0's first item
    fn = content_knn(split, vectors, k_history=k_history)
    users = rng.permutation(split.n_users)
    got = torch.cat([fn(users[i : i + 6], stage) for i in range(0, len(users), 6)]).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, knn_oracle(split, vectors, stage, k_history)[users], rtol=1e-10, atol=1e-12)
    assert np.all(got[:, 5] == 0.0)
    assert np.all(got[:, 26:] != 0.0)  # cold items are scored from their text ...
    np.testing.assert_allclose(got[:, 27], got[:, split.items[0]], rtol=1e-10, atol=1e-12)  # ... by direction
    # float32 vectors: float32 scores, same values to float32 precision
    got32 = content_knn(split, vectors.astype(np.float32), k_history)(users, stage)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), got, atol=2e-6)


def test_content_knn_sees_the_validation_item_at_test_only() -> None:
    rng = np.random.default_rng(3)
    split = random_split(rng, 40, 50, 10)
    vectors = rng.normal(size=(50, 8))
    users = split.eval_users
    fn = content_knn(split, vectors)
    valid, test = fn(users, "valid").numpy(), fn(users, "test").numpy()
    # test = the valid mean over n train items, updated with the validation item's cosine
    n = (split.history_end("valid") - split.offsets[:-1])[users][:, None]
    val_cos = pairwise.cosine_similarity(vectors[split.target("valid")], vectors)
    np.testing.assert_allclose(test, (n * valid + val_cos) / (n + 1), rtol=1e-10, atol=1e-12)
    # the held-out items themselves never leak: swap them and 'valid' does not move, 'test' moves with the
    # validation item only
    other_test = content_knn(replace_heldout(split, rng, (TEST,)), vectors)
    other_both = content_knn(replace_heldout(split, rng, (VALID, TEST)), vectors)
    assert torch.equal(other_both(users, "valid"), fn(users, "valid"))
    assert torch.equal(other_test(users, "test"), fn(users, "test"))
    assert not np.allclose(other_both(users, "test").numpy(), test)


def test_content_knn_on_category_vectors_beats_random_and_checks_shapes(world: Path) -> None:
    ds = load_generic(world / "interactions.csv", items_path=world / "items.csv")
    split = temporal_leave_one_out(ds)
    knn = {k: float(v.mean()) for k, v in rank_users(content_knn(split, ds.category_matrix()), split, "test").items()}
    rand = {k: float(v.mean()) for k, v in rank_users(random_scores(split, 0), split, "test").items()}
    # users pick 10 of their category's 20 items and 2 others: ~10 unseen favourites tie at the top
    assert knn["hr@10"] > 0.5 > 0.25 > rand["hr@10"]
    with pytest.raises(ValueError, match="n_items"):
        content_knn(split, ds.category_matrix()[1:])
    with pytest.raises(ValueError, match="k_history"):
        content_knn(split, ds.category_matrix(), k_history=0)


# ----------------------------------------------------------------------------- implicit ALS


def test_als_matrix_sums_repeats_and_turns_weights_into_confidence() -> None:
    rng = np.random.default_rng(4)
    split = random_split(rng, 30, 12, 10)  # repeats of a (user, item) pair are common here
    weights = rng.integers(0, 20, len(split.items)).astype(np.float64)
    for stage, visible in (("valid", (TRAIN,)), ("test", (TRAIN, VALID))):
        for confidence, alpha in (("linear", 2.5), ("log", 4.0)):
            expected = np.zeros((split.n_users, split.n_items))
            observed = np.zeros((split.n_users, split.n_items), dtype=bool)
            for u in range(split.n_users):
                for p in range(split.offsets[u], split.offsets[u + 1]):
                    if split.role[p] in visible:
                        expected[u, split.items[p]] += weights[p]
                        observed[u, split.items[p]] = True
            observed &= expected > 0  # weights summing to 0 are not positives
            linear = confidence == "linear"
            expected = 1 + alpha * (expected if linear else np.log(1 + expected / 2.0))
            m = als_matrix(split, stage, alpha, weights, confidence, epsilon=2.0)
            assert m.dtype == np.float32 and m.shape == (30, 12) and m.has_canonical_format
            np.testing.assert_array_equal(m.toarray() != 0, observed)
            np.testing.assert_allclose(m.toarray()[observed], expected[observed], rtol=1e-6)
    assert (weights == 0).any()
    # unweighted: 1 + alpha * (number of visible repeats)
    train = split.role == TRAIN
    counts = np.zeros((split.n_users, split.n_items))
    np.add.at(counts, (np.repeat(np.arange(split.n_users), split.lengths)[train], split.items[train]), 1.0)
    assert counts.max() > 1
    np.testing.assert_array_equal(
        als_matrix(split, "valid", alpha=2.0).toarray(), np.where(counts > 0, 1 + 2 * counts, 0)
    )
    with pytest.raises(ValueError, match="aligned"):
        als_matrix(split, "valid", 1.0, weights[1:])
    with pytest.raises(ValueError, match="non-negative"):
        als_matrix(split, "valid", 1.0, -weights)
    with pytest.raises(ValueError, match="confidence"):
        als_matrix(split, "valid", 1.0, confidence="sqrt")


def test_als_fits_the_matrix_with_implicit_and_is_deterministic() -> None:
    from implicit.cpu.als import AlternatingLeastSquares  # the dev extra has it (7.7 MB wheel), so CI runs these
    from threadpoolctl import threadpool_limits

    split = block_split()
    users = np.arange(split.n_users)
    fn = implicit_als(split, factors=4, regularization=0.5, alpha=3.0, iterations=5, seed=7)
    for stage in ("valid", "test"):
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(factors=4, regularization=0.5, iterations=5, num_threads=1, random_state=7)
            model.fit(als_matrix(split, stage, alpha=3.0), show_progress=False)
        got = fn(users, stage)
        assert got.shape == (split.n_users, split.n_items) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), model.user_factors @ model.item_factors.T, rtol=1e-5, atol=1e-6)
    same = implicit_als(split, factors=4, regularization=0.5, alpha=3.0, iterations=5, seed=7)
    assert torch.equal(same(users, "test"), fn(users, "test"))
    assert not torch.equal(implicit_als(split, 4, 0.5, 3.0, 5, seed=8)(users, "test"), fn(users, "test"))


def test_als_ranks_the_users_own_block_first() -> None:
    split = block_split()
    users = np.arange(split.n_users)
    n_a, half = 50, 30
    fn = implicit_als(split, factors=2, regularization=1.0, alpha=5.0)
    scores = fn(users, "test").numpy()
    own = (np.arange(2 * half)[None, :] >= half) == (users[:, None] >= n_a)
    seen_u, seen_i = split.seen_pairs("test")
    unseen = np.ones_like(own)
    unseen[seen_u, seen_i] = False
    for u in users:  # every unseen item of the user's block above every item of the other block
        assert scores[u][own[u] & unseen[u]].min() > scores[u][~own[u]].max(), u
    als = rank_users(fn, split, "test")
    pop = rank_users(most_popular(split), split, "test")
    rand = rank_users(random_scores(split, 0), split, "test")
    # a perfect block ranker hits 10 of the 23 unseen own items: 0.43; random about 10 / 53 = 0.19
    assert als["hr@10"].mean() > 0.4 > 0.3 > rand["hr@10"].mean()
    assert als["hr@10"].mean() > pop["hr@10"].mean() + 0.07
    assert als["hr@10"][:n_a].mean() > 0.3 and pop["hr@10"][:n_a].mean() == 0.0  # B's items crowd A's top 10


def test_als_at_valid_does_not_see_the_validation_item() -> None:
    split = block_split(seed=1)
    users = split.eval_users
    rng = np.random.default_rng(6)
    fn = implicit_als(split, factors=8, regularization=0.1, alpha=10.0)
    # swapping every validation and test item leaves the 'valid' fit bit for bit unchanged
    swapped = implicit_als(replace_heldout(split, rng, (VALID, TEST)), factors=8, regularization=0.1, alpha=10.0)
    assert torch.equal(swapped(users, "valid"), fn(users, "valid"))
    assert not torch.allclose(swapped(users, "test"), fn(users, "test"))
    # ... and the test item never enters the 'test' fit
    swapped_test = implicit_als(replace_heldout(split, rng, (TEST,)), factors=8, regularization=0.1, alpha=10.0)
    assert torch.equal(swapped_test(users, "test"), fn(users, "test"))
    # at 'test' the validation item is a fitted positive: its score rises for nearly every user
    rows, target = torch.arange(len(users)), torch.from_numpy(split.target("valid"))
    rise = fn(users, "test")[rows, target] - fn(users, "valid")[rows, target]
    assert float((rise > 0).double().mean()) > 0.8 and float(rise.mean()) > 0.2


def test_tune_als_selects_on_validation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    split = block_split(seed=2)
    stages: list[str] = []
    real_matrix, real_rank = baselines.als_matrix, baselines.rank_users

    def spy_matrix(s: Split, stage: str, *args, **kwargs):
        stages.append(stage)
        return real_matrix(s, stage, *args, **kwargs)

    def spy_rank(fn, s: Split, stage: str, *args, **kwargs):
        stages.append(stage)
        return real_rank(fn, s, stage, *args, **kwargs)

    monkeypatch.setattr(baselines, "als_matrix", spy_matrix)
    monkeypatch.setattr(baselines, "rank_users", spy_rank)
    grid = {"factors": [2, 8], "regularization": [0.1, 1.0], "alpha": [1.0, 10.0]}
    results: list[dict] = []
    logged: list[str] = []
    best = tune_als(split, grid, results=results, log=logged.append, iterations=8)
    assert set(stages) == {"valid"} and len(results) == 8 == len(logged)
    assert [(r["factors"], r["regularization"], r["alpha"]) for r in results][:2] == [(2, 0.1, 1.0), (2, 0.1, 10.0)]
    top = max(range(8), key=lambda i: (results[i]["ndcg@10"], -i))
    params = {key: results[top][key] for key in grid}
    users = split.eval_users
    stages.clear()
    test_scores = best(users, "test")  # the test model is fitted only now, on train + validation
    assert stages == ["test"]
    np.testing.assert_array_equal(test_scores, implicit_als(split, iterations=8, **params)(users, "test"))
    valid = float(rank_users(best, split, "valid")["ndcg@10"].mean())
    assert valid == pytest.approx(results[top]["ndcg@10"]) and valid == max(r["ndcg@10"] for r in results)
    with pytest.raises(ValueError, match="unknown"):
        tune_als(split, {"seed": [1]})
    with pytest.raises(ValueError, match="metric"):
        tune_als(split, grid, metric="auc")
