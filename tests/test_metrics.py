"""Tests for mtlrec.eval.metrics: hand-computed values, brute force over tie orders, and scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mtlrec.eval.metrics import (
    log_loss,
    mae,
    mean_average_precision,
    mean_metrics,
    multilabel_f1,
    rank_metrics,
    ranks_from_scores,
    rmse,
    roc_auc,
)

sk = pytest.importorskip("sklearn.metrics")

NEG_INF = float("-inf")


def _one(scores: list[float], target: int, ks=(10, 20)) -> dict[str, float]:
    out = rank_metrics(torch.tensor([scores], dtype=torch.float64), torch.tensor([target]), ks=ks)
    for v in out.values():
        assert v.dtype == torch.float64 and v.shape == (1,)
    return {k: float(v[0]) for k, v in out.items()}


def _expected_over_ranks(ranks: range, k: int) -> dict[str, float]:
    """Average of each metric over the given ranks, summed naively."""
    n = len(ranks)
    return {
        f"hr@{k}": sum(1.0 for r in ranks if r < k) / n,
        f"ndcg@{k}": sum(1.0 / math.log2(r + 2) for r in ranks if r < k) / n,
        f"mrr@{k}": sum(1.0 / (r + 1) for r in ranks if r < k) / n,
    }


# ----------------------------------------------------------------------------- ranking: hand cases


def test_target_third_of_five():
    m = _one([0.9, 0.8, 0.5, 0.3, 0.1], target=2)
    assert m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(4)) and m["ndcg@10"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert (m["hr@20"], m["ndcg@20"], m["mrr@20"]) == pytest.approx((1.0, 0.5, 1 / 3))
    assert set(m) == {"hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@10", "mrr@20"}


def test_tie_with_three_others_at_top_averages_ranks_0_to_3():
    m = _one([1.0, 1.0, 1.0, 1.0, 0.0], target=2, ks=(2, 10))
    assert m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in range(4)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # cut-off inside the tie group: only ranks 0 and 1 count
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["mrr@2"] == pytest.approx((1 + 1 / 2) / 4)


def test_target_at_rank_10_counts_only_at_k20():
    scores = [float(30 - i) for i in range(25)]
    m = _one(scores, target=10)
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0 and m["mrr@10"] == 0.0
    assert m["hr@20"] == 1.0
    assert m["ndcg@20"] == pytest.approx(1 / math.log2(12))
    assert m["mrr@20"] == pytest.approx(1 / 11)
    # rank 9 is the last one inside K=10
    m9 = _one(scores, target=9)
    assert m9["hr@10"] == 1.0 and m9["mrr@10"] == pytest.approx(1 / 10)


def test_tie_group_straddling_cutoff():
    # 8 strictly higher, target tied with 4 others -> ranks 8..12
    scores = [10.0] * 8 + [5.0] * 5 + [1.0] * 7
    m = _one(scores, target=10)
    assert m == pytest.approx(_expected_over_ranks(range(8, 13), 10) | _expected_over_ranks(range(8, 13), 20))
    assert m["hr@10"] == pytest.approx(2 / 5)


def test_neg_inf_items_never_tie_or_count():
    m = _one([NEG_INF, 0.5, NEG_INF, 0.5, NEG_INF], target=1, ks=(1, 10))
    assert m["hr@1"] == pytest.approx(0.5)  # tied with item 3 only, not with the masked ones
    assert m["mrr@10"] == pytest.approx(0.75)
    # masking items changes nothing but their own contribution
    full = _one([0.1, 0.2, 0.9, 0.2, 0.2, 0.3], target=1)
    masked = _one([NEG_INF, 0.2, 0.9, NEG_INF, 0.2, 0.3], target=1)
    dropped = _one([0.2, 0.9, 0.2, 0.3], target=0)
    assert masked == pytest.approx(dropped)
    assert masked["mrr@10"] > full["mrr@10"]  # fewer ties -> better expected rank
    # every other item masked: rank 0
    assert _one([NEG_INF, NEG_INF, -3.0, NEG_INF], target=2)["ndcg@10"] == 1.0


def test_all_items_tied_gives_chance_level():
    n = 1000
    m = _one([0.0] * n, target=123)
    assert m["hr@10"] == pytest.approx(10 / n)
    assert m["hr@20"] == pytest.approx(20 / n)
    assert m["mrr@10"] == pytest.approx(sum(1 / (r + 1) for r in range(10)) / n)


def test_ranks_from_scores_counts():
    scores = torch.tensor([[3.0, 2.0, 2.0, NEG_INF, 1.0, 2.0], [NEG_INF, 0.0, NEG_INF, 0.0, 0.0, 5.0]])
    g, t = ranks_from_scores(scores, torch.tensor([1, 4]))
    assert g.tolist() == [1, 1]
    assert t.tolist() == [2, 2]


def test_many_cold_ties_large_t_float32():
    # thousands of items share a cold score; O(1) prefix formula vs naive summation
    rng = np.random.default_rng(1)
    n = 6000
    rows, targets, expected = [], [], []
    for g_hot, t_cold in [(3, 5000), (0, 5999 - 1), (15, 4000), (25, 10)]:
        s = np.full(n, NEG_INF, dtype=np.float32)
        s[:g_hot] = rng.uniform(1, 2, g_hot)
        s[g_hot : g_hot + t_cold + 1] = 0.25
        rows.append(s)
        targets.append(g_hot + t_cold // 2)
        exp = {}
        for k in (10, 20):
            exp |= _expected_over_ranks(range(g_hot, g_hot + t_cold + 1), k)
        expected.append(exp)
    out = rank_metrics(torch.tensor(np.stack(rows)), torch.tensor(targets))
    for i, exp in enumerate(expected):
        for key, val in exp.items():
            assert float(out[key][i]) == pytest.approx(val, rel=1e-12, abs=1e-15), (i, key)


# ----------------------------------------------------------------------------- ranking: brute force


def test_brute_force_over_all_tie_orders():
    """Enumerate every tie-breaking permutation of a 6-item catalogue and average the metrics."""
    rng = np.random.default_rng(7)
    n = 6
    perms = np.array(list(itertools.permutations(range(n))))  # [720, 6]: item -> tie-break position
    ks = (1, 2, 3, 10)
    rows, targets = [], []
    for _ in range(40):
        s = rng.integers(0, 3, n).astype(np.float64)
        s[rng.random(n) < 0.25] = NEG_INF
        tgt = int(rng.integers(n))
        s[tgt] = float(rng.integers(0, 3))
        rows.append(s)
        targets.append(tgt)
    out = rank_metrics(torch.tensor(np.stack(rows)), torch.tensor(targets), ks=ks)
    for i, (s, tgt) in enumerate(zip(rows, targets, strict=True)):
        others = np.arange(n) != tgt
        before = (s > s[tgt]) | ((s == s[tgt]) & others & (perms < perms[:, [tgt]]))
        ranks = before.sum(axis=1)  # [720] rank of the target under each total order
        for k in ks:
            inside = ranks < k
            exp = {
                "hr": inside.mean(),
                "ndcg": np.where(inside, 1 / np.log2(ranks + 2), 0).mean(),
                "mrr": np.where(inside, 1 / (ranks + 1), 0).mean(),
            }
            for name, val in exp.items():
                assert float(out[f"{name}@{k}"][i]) == pytest.approx(val, rel=1e-12), (i, name, k)


# ----------------------------------------------------------------------------- ranking: scikit-learn


@pytest.mark.parametrize("k", [1, 3, 5, 10, 20, 40])
def test_ndcg_matches_sklearn_tie_averaged(k):
    rng = np.random.default_rng(k)
    b, n = 40, 30
    scores = rng.integers(0, 5, (b, n)).astype(np.float64)  # many ties
    mask = rng.random((b, n)) < 0.3
    targets = rng.integers(0, n, b)
    mask[np.arange(b), targets] = False
    scores[mask] = NEG_INF
    out = rank_metrics(torch.tensor(scores), torch.tensor(targets), ks=(k,))
    finite_scores = np.where(mask, -100.0, scores)  # sklearn rejects inf; masked items sit below all
    y_true = np.zeros((b, n))
    y_true[np.arange(b), targets] = 1
    ref = [sk.ndcg_score(y_true[i : i + 1], finite_scores[i : i + 1], k=k) for i in range(b)]
    np.testing.assert_allclose(out[f"ndcg@{k}"].numpy(), ref, rtol=1e-12)
    assert mean_metrics(out)[f"ndcg@{k}"] == pytest.approx(sk.ndcg_score(y_true, finite_scores, k=k), rel=1e-12)


# ----------------------------------------------------------------------------- ranking: errors, dtypes


def test_nan_raises_with_row_count():
    s = torch.rand(5, 8)
    s[1, 3] = float("nan")
    s[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN in 2 of 5 rows"):
        rank_metrics(s, torch.zeros(5, dtype=torch.long))


def test_masked_target_and_bad_inputs_raise():
    s = torch.tensor([[0.1, NEG_INF, 0.3], [0.5, 0.2, 0.1]])
    with pytest.raises(ValueError, match=r"-inf.*1 of 2 rows"):
        rank_metrics(s, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="outside"):
        rank_metrics(s, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="one item per row"):
        rank_metrics(s, torch.tensor([0]))
    with pytest.raises(ValueError, match="2-D"):
        rank_metrics(s[0], torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        rank_metrics(s, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="positive integer"):
        rank_metrics(s, torch.tensor([0, 0]), ks=(0,))


def test_dtypes_and_batch_independence():
    rng = np.random.default_rng(3)
    s = np.round(rng.random((16, 50)), 1)  # ties
    t = rng.integers(0, 50, 16)
    a = rank_metrics(torch.tensor(s, dtype=torch.float64), torch.tensor(t))
    b = rank_metrics(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.int32))
    row = rank_metrics(torch.tensor(s[5:6]), torch.tensor(t[5:6]))
    for key in a:
        assert b[key].dtype == torch.float64
        torch.testing.assert_close(a[key], b[key])
        assert float(row[key][0]) == float(a[key][5])
    empty = rank_metrics(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long))
    assert all(v.shape == (0,) for v in empty.values())


def test_mean_metrics():
    per_row = {"hr@10": torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float64), "mrr@10": torch.tensor([1.0, 0.0])}
    assert mean_metrics(per_row) == {"hr@10": 0.5, "mrr@10": 0.5}
    with pytest.raises(ValueError, match="no rows"):
        mean_metrics({"hr@10": torch.zeros(0)})


# ----------------------------------------------------------------------------- rating


def test_rmse_mae_hand_and_sklearn():
    assert rmse([1.0, 2.0], [3.0, 2.0]) == pytest.approx(math.sqrt(2))
    assert mae([1.0, 2.0], [3.0, 2.0]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    p, t = rng.uniform(1, 5, 200), rng.integers(1, 6, 200).astype(float)
    assert rmse(p, t) == pytest.approx(math.sqrt(sk.mean_squared_error(t, p)), rel=1e-12)
    assert mae(torch.tensor(p, dtype=torch.float64), torch.tensor(t)) == pytest.approx(
        sk.mean_absolute_error(t, p), rel=1e-12
    )
    with pytest.raises(ValueError, match="same shape"):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        mae([1.0, float("nan")], [1.0, 2.0])


# ----------------------------------------------------------------------------- multi-label


def test_multilabel_f1_hand():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    p = np.array([[0.9, 0.1, 0.2], [0.7, 0.8, 0.5], [0.5, 0.0, 0.1]])  # 0.5 is NOT predicted (strict >)
    micro, macro = multilabel_f1(p, y)
    assert micro == pytest.approx(2 / 3)  # tp=2, fp=1, fn=1
    assert macro == pytest.approx((0.5 + 1.0) / 2)  # label 2 has no positive and no prediction: skipped
    assert multilabel_f1(p, y, include_empty_labels=True)[1] == pytest.approx(0.5)
    # threshold 0.45: label 0 tp=2 fp=1 (F1 0.8), label 1 F1 1, label 2 fp=1 (F1 0); pooled tp=3 fp=2 fn=0
    assert multilabel_f1(p, y, threshold=0.45) == pytest.approx((0.75, (0.8 + 1.0 + 0.0) / 3))


def test_multilabel_f1_matches_sklearn():
    rng = np.random.default_rng(11)
    n, n_labels = 120, 10
    labels = (rng.random((n, n_labels)) < rng.uniform(0.05, 0.5, n_labels)).astype(int)
    probs = np.clip(labels * 0.3 + rng.random((n, n_labels)) * 0.7, 0, 1)
    labels[:, 3] = 0
    probs[:, 3] = 0.2  # empty label: no positive, no prediction
    labels[:, 7] = 0  # no positive but some predictions
    probs[:, 7] = rng.random(n)
    pred = (probs > 0.5).astype(int)
    micro, macro = multilabel_f1(torch.tensor(probs), torch.tensor(labels))
    assert micro == pytest.approx(sk.f1_score(labels, pred, average="micro", zero_division=0), rel=1e-12)
    assert macro == pytest.approx(sk.f1_score(labels, pred, average="macro", zero_division=np.nan), rel=1e-12)
    keep = (labels.sum(0) + pred.sum(0)) > 0
    assert macro == pytest.approx(
        sk.f1_score(labels[:, keep], pred[:, keep], average="macro", zero_division=0), rel=1e-12
    )
    macro_all = multilabel_f1(probs, labels, include_empty_labels=True)[1]
    assert macro_all == pytest.approx(sk.f1_score(labels, pred, average="macro", zero_division=0), rel=1e-12)
    assert macro_all < macro  # the difference the keyword exists for


def test_average_precision_hand():
    assert mean_average_precision(np.array([[0.9], [0.8], [0.7]]), np.array([[1], [0], [1]])) == pytest.approx(5 / 6)
    # tied scores form one threshold: precision 1/2 there
    assert mean_average_precision(np.array([[0.5], [0.5]]), np.array([[1], [0]])) == pytest.approx(0.5)
    # column without positives is skipped
    probs = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.3]])
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    assert mean_average_precision(probs, labels) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="no label has a positive"):
        mean_average_precision(probs, np.zeros((3, 2)))


def test_average_precision_matches_sklearn():
    rng = np.random.default_rng(5)
    n, n_labels = 150, 12
    labels = (rng.random((n, n_labels)) < rng.uniform(0.02, 0.4, n_labels)).astype(int)
    labels[:, [2, 9]] = 0
    probs = np.round(np.clip(labels * 0.25 + rng.random((n, n_labels)) * 0.75, 0, 1), 1)  # heavy ties
    keep = labels.any(axis=0)
    ref = sk.average_precision_score(labels[:, keep], probs[:, keep], average="macro")
    assert mean_average_precision(probs, labels) == pytest.approx(ref, rel=1e-12)
    per_col = [sk.average_precision_score(labels[:, j], probs[:, j]) for j in np.flatnonzero(keep)]
    assert mean_average_precision(probs, labels) == pytest.approx(np.mean(per_col), rel=1e-12)


# ----------------------------------------------------------------------------- binary


def test_roc_auc_hand_and_sklearn():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0
    rng = np.random.default_rng(2)
    for _ in range(5):
        y = (rng.random(500) < 0.3).astype(int)
        s = rng.integers(0, 20, 500) + 3 * y  # many ties
        assert roc_auc(torch.tensor(s, dtype=torch.float32), torch.tensor(y)) == pytest.approx(
            sk.roc_auc_score(y, s), rel=1e-12
        )
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.2, 0.3], [1, 2])


def test_log_loss_hand_and_sklearn():
    assert log_loss([0.9, 0.2], [1, 0]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.4).astype(int)
    p = rng.random(300)
    p[:3] = [0.0, 1.0, 1.0]  # clipped at machine epsilon, as sklearn does
    y[:3] = [1, 0, 1]
    assert log_loss(p, y) == pytest.approx(sk.log_loss(y, p), rel=1e-12)
    eps = 1e-7
    manual = -np.mean(y * np.log(np.clip(p, eps, 1 - eps)) + (1 - y) * np.log(1 - np.clip(p, eps, 1 - eps)))
    assert log_loss(torch.tensor(p), torch.tensor(y), eps=eps) == pytest.approx(manual, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss([1.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        log_loss([float("nan"), 0.3], [1, 0])
