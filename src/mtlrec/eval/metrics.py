"""Evaluation metrics, as defined in the measurement protocol (``PROTOCOL.md``).

Ranking metrics work on torch tensors (full-catalogue scores, excluded items set to ``-inf``);
the rest accept numpy arrays, torch tensors or anything ``numpy.asarray`` takes, and compute in
float64. Every function is pure and vectorised, and raises ``ValueError`` on NaN input or
malformed shapes instead of returning a silently wrong number. None of them needs scikit-learn;
the test suite checks them against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "ranks_from_scores",
    "rank_metrics",
    "multi_rank_metrics",
    "mean_metrics",
    "rmse",
    "mae",
    "multilabel_f1",
    "mean_average_precision",
    "roc_auc",
    "log_loss",
]

RANK_METRICS = ("hr", "ndcg", "mrr")


# --------------------------------------------------------------------------------------------
# Ranking (full ranking, one held-out target per row, ties averaged)
# --------------------------------------------------------------------------------------------


def _check_rank_inputs(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [batch, n_items], got shape {tuple(scores.shape)}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(
            f"targets must be 1-D with one item per row of scores ({scores.shape[0]}), "
            f"got shape {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer item indices, got dtype {targets.dtype}")
    targets = targets.to(device=scores.device, dtype=torch.long)
    n_items = scores.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_items):
        bad = int(((targets < 0) | (targets >= n_items)).sum())
        raise ValueError(f"{bad} target(s) fall outside the catalogue [0, {n_items})")
    if scores.is_floating_point():
        nan_rows = torch.isnan(scores).any(dim=1)
        n_nan = int(nan_rows.sum())
        if n_nan:
            first = int(nan_rows.nonzero()[0, 0])
            raise ValueError(
                f"scores contain NaN in {n_nan} of {scores.shape[0]} rows (first: row {first}); "
                "metrics on NaN scores would be meaningless"
            )
    return scores, targets


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(g, t)`` per row: ``g`` items score strictly higher than the target, ``t`` other items tie with it.

    The target's 0-based rank under uniform random tie-breaking is uniform on ``g..g+t``
    (PROTOCOL.md, "Ties never favour the model"). Excluded items carry ``-inf`` and never
    count: a target whose own score is ``-inf`` (i.e. excluded) raises ``ValueError``, as does
    NaN anywhere in a row.
    """
    scores, targets = _check_rank_inputs(scores, targets)
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    if scores.is_floating_point():
        masked = torch.isneginf(target_scores[:, 0])
        if bool(masked.any()):
            raise ValueError(
                f"the target item scores -inf (is excluded) in {int(masked.sum())} of {scores.shape[0]} rows; "
                "the held-out item must never be masked"
            )
    higher = (scores > target_scores).sum(dim=1)
    ties = (scores == target_scores).sum(dim=1) - 1  # minus the target itself
    return higher, ties


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    out = tuple(ks)
    if not out:
        raise ValueError("ks must name at least one cut-off")
    for k in out:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every cut-off K must be a positive integer, got {k!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"cut-offs must be distinct, got {out}")
    return tuple(int(k) for k in out)


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (10, 20)) -> dict[str, torch.Tensor]:
    """Per-row HR@K, NDCG@K and MRR@K (float64, shape [B]) for a single held-out target per row.

    ``scores`` [B, n_items]: excluded items already ``-inf``; ``targets`` [B]: the target item.
    With rank r (0-based): HR@K = 1[r < K], NDCG@K = 1/log2(r + 2) if r < K (ideal DCG = 1),
    MRR@K = 1/(r + 1) if r < K. Ties never favour the model: r is uniform on ``g..g+t``
    (see :func:`ranks_from_scores`) and each metric is its exact expectation,
    ``(P[min(g+t+1, K)] - P[min(g, K)]) / (t + 1)`` with ``P`` the prefix sums of the per-rank
    values; O(1) per row once g and t are known. Keys are ``"hr@K"``, ``"ndcg@K"``, ``"mrr@K"``.
    """
    ks = _check_ks(ks)
    higher, ties = ranks_from_scores(scores, targets)
    device = higher.device
    lo = higher
    hi = higher + ties + 1  # exclusive end of the rank range
    count = (ties + 1).to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for name in RANK_METRICS:
        for k in ks:
            r = torch.arange(k, dtype=torch.float64, device=device)
            if name == "hr":
                per_rank = torch.ones_like(r)
            elif name == "ndcg":
                per_rank = 1.0 / torch.log2(r + 2.0)
            else:
                per_rank = 1.0 / (r + 1.0)
            prefix = torch.zeros(k + 1, dtype=torch.float64, device=device)
            prefix[1:] = torch.cumsum(per_rank, dim=0)
            total = prefix[hi.clamp(max=k)] - prefix[lo.clamp(max=k)]
            out[f"{name}@{k}"] = total / count
    return out


def multi_rank_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, ks: Iterable[int] = (10, 20)
) -> dict[str, torch.Tensor]:
    """Per-row HR@K, NDCG@K and Recall@K (float64, shape [B]) with several relevant items per row.

    ``scores`` [B, n_items]: excluded items already ``-inf``; ``relevant`` bool [B, n_items], at least one per row
    and never an excluded item. With 0-based ranks r_i of the relevant items i in R:
    NDCG@K = sum_{i, r_i < K} 1/log2(r_i + 2) / IDCG, IDCG = sum_{r < min(K, |R|)} 1/log2(r + 2) (binary gains);
    Recall@K = |{i : r_i < K}| / |R|; HR@K = 1 if some r_i < K. Ties never favour the model: every metric is its
    exact expectation over a uniformly random order of tied items (PROTOCOL.md's rule for one target). NDCG and
    recall are sums over relevant items, so each item counts with its rank uniform on ``g..g+t``
    (:func:`ranks_from_scores`, tied relevant items included in ``t``); HR@K = 1 - P(no relevant item in the top K),
    where, if no relevant item scores above the K-th highest score s, the top K take ``c`` of the ``m`` items tied
    at s uniformly, ``r`` of them relevant: P(none) = C(m - r, c) / C(m, c) (hypergeometric). Keys ``"hr@K"``,
    ``"ndcg@K"``, ``"recall@K"``; with one relevant item per row these equal :func:`rank_metrics`' hr and ndcg.
    """
    ks = _check_ks(ks)
    if not isinstance(relevant, torch.Tensor):
        relevant = torch.as_tensor(relevant)
    if relevant.dtype != torch.bool:
        raise ValueError(f"relevant must be a bool mask, got dtype {relevant.dtype}")
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if scores.dim() != 2 or tuple(relevant.shape) != tuple(scores.shape):
        raise ValueError(f"scores [B, n_items] and relevant must have the same 2-D shape, got {tuple(scores.shape)} "
                         f"and {tuple(relevant.shape)}")  # fmt: skip
    # the row checks of the single-target case: real scores, no NaN (each row's first relevant item as the target)
    scores, _ = _check_rank_inputs(scores, relevant.to(torch.long).argmax(dim=1))
    relevant = relevant.to(scores.device)
    n_rel = relevant.sum(dim=1)
    if bool((n_rel == 0).any()):
        raise ValueError(f"{int((n_rel == 0).sum())} row(s) have no relevant item")
    if scores.is_floating_point() and bool((relevant & torch.isneginf(scores)).any()):
        raise ValueError("a relevant item scores -inf (is excluded); relevant items must never be masked")
    n = scores.shape[1]
    ascending = torch.sort(scores, dim=1).values
    at_most = torch.searchsorted(ascending, scores.contiguous(), right=True)  # [B, n] items scoring <= each
    below = torch.searchsorted(ascending, scores.contiguous(), right=False)  # [B, n] items scoring < each
    lo = n - at_most  # items strictly higher: the best 0-based rank
    hi = n - below  # exclusive end of the rank range (ties + 1 wide)
    count = (hi - lo).to(torch.float64)
    rel = relevant.to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        r = torch.arange(k, dtype=torch.float64, device=scores.device)
        gain = torch.zeros(k + 1, dtype=torch.float64, device=scores.device)
        gain[1:] = torch.cumsum(1.0 / torch.log2(r + 2.0), dim=0)  # gain[j] = DCG of j hits at the top
        top_lo, top_hi = lo.clamp(max=k), hi.clamp(max=k)
        hit = (top_hi - top_lo).to(torch.float64) / count  # P(item in the top k)
        dcg = (gain[top_hi] - gain[top_lo]) / count  # E[1/log2(rank + 2) 1[rank < k]]
        k_eff = min(k, n)
        kth = ascending[:, n - k_eff : n - k_eff + 1]  # [B, 1] the k-th highest score
        above = scores > kth
        tied = scores == kth
        c = (k_eff - above.sum(dim=1)).to(torch.float64)  # slots of the top k left to the tied items (>= 1)
        m = tied.sum(dim=1).to(torch.float64)
        r_tied = (tied & relevant).sum(dim=1).to(torch.float64)
        free = m - r_tied  # tied items that are not relevant
        lgamma = torch.lgamma
        log_none = lgamma(free + 1) - lgamma((free - c).clamp_min(0) + 1) - lgamma(m + 1) + lgamma(m - c + 1)
        p_none = torch.where(free >= c, torch.exp(log_none), torch.zeros_like(m))
        p_none = torch.where((above & relevant).any(dim=1), torch.zeros_like(m), p_none)
        out[f"hr@{k}"] = 1.0 - p_none
        out[f"ndcg@{k}"] = (rel * dcg).sum(dim=1) / gain[n_rel.clamp(max=k)]
        out[f"recall@{k}"] = (rel * hit).sum(dim=1) / n_rel.to(torch.float64)
    return out


def mean_metrics(per_row: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Average each per-row metric over rows (users), as the protocol reports them."""
    out: dict[str, float] = {}
    for key, values in per_row.items():
        t = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
        if t.numel() == 0:
            raise ValueError(f"metric {key!r} has no rows to average")
        t = t.to(torch.float64)
        if bool(torch.isnan(t).any()):
            raise ValueError(f"metric {key!r} contains NaN in {int(torch.isnan(t).sum())} rows")
        out[key] = float(t.mean())
    return out


# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str, *, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.to(torch.float64)
        x = x.numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.dtype.kind == "f":
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN value(s)")
    return arr


def _pair(a: Any, b: Any, names: tuple[str, str], ndim: int) -> tuple[np.ndarray, np.ndarray]:
    x = _to_numpy(a, names[0])
    y = _to_numpy(b, names[1])
    if x.ndim != ndim or x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must both have {ndim} dimension(s) and the same shape, "
            f"got {x.shape} and {y.shape}"
        )
    if x.size == 0:
        raise ValueError(f"{names[0]} is empty")
    return x, y


def _binary_labels(y: np.ndarray, name: str = "labels") -> np.ndarray:
    bad = (y != 0) & (y != 1)
    if bad.any():
        raise ValueError(f"{name} must be 0/1, found {int(bad.sum())} other value(s), e.g. {y[bad].flat[0]!r}")
    return y.astype(bool)


# --------------------------------------------------------------------------------------------
# Rating prediction
# --------------------------------------------------------------------------------------------


def rmse(pred: Any, target: Any) -> float:
    """Root mean squared error, sqrt(mean((pred - target)^2)) over all entries."""
    p, t = _pair(np.ravel(_to_numpy(pred, "pred")), np.ravel(_to_numpy(target, "target")), ("pred", "target"), 1)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred: Any, target: Any) -> float:
    """Mean absolute error, mean(|pred - target|) over all entries."""
    p, t = _pair(np.ravel(_to_numpy(pred, "pred")), np.ravel(_to_numpy(target, "target")), ("pred", "target"), 1)
    return float(np.mean(np.abs(p - t)))


# --------------------------------------------------------------------------------------------
# Multi-label classification
# --------------------------------------------------------------------------------------------


def multilabel_f1(
    probs: Any, labels: Any, threshold: float = 0.5, *, include_empty_labels: bool = False
) -> tuple[float, float]:
    """Return ``(micro_f1, macro_f1)``; label j is predicted for a sample when ``probs > threshold``.

    F1 = 2 TP / (2 TP + FP + FN), 0 when the denominator is 0. Micro pools TP/FP/FN over all
    labels (= sklearn ``f1_score(average="micro", zero_division=0)``). Macro averages the
    per-label F1 over labels with at least one positive or one predicted positive
    (= sklearn ``f1_score(average="macro", zero_division=np.nan)``; 0.0 if there is no such
    label). ``include_empty_labels=True`` averages over all labels, counting empty ones as 0
    (= sklearn ``f1_score(average="macro", zero_division=0)``, which is lower whenever a label
    has neither positives nor predictions).
    The strict ``>`` follows scikit-learn classifiers' ``predict`` (p > 0.5) and torchmetrics.
    """
    p, y = _pair(probs, labels, ("probs", "labels"), 2)
    y = _binary_labels(y)
    pred = p > threshold
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0).astype(np.float64)
    fn = (~pred & y).sum(axis=0).astype(np.float64)
    denom_all = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / denom_all) if denom_all > 0 else 0.0
    denom = 2 * tp + fp + fn
    nonempty = denom > 0
    per_label = np.where(nonempty, 2 * tp / np.where(nonempty, denom, 1.0), 0.0)
    if include_empty_labels:
        macro = float(per_label.mean())
    else:
        macro = float(per_label[nonempty].mean()) if nonempty.any() else 0.0
    return micro, macro


def _average_precision_columns(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per column: sum over thresholds of (R_n - R_{n-1}) P_n, tied scores form one threshold.

    Every positive in a tie group contributes 1/n_pos times the precision at the end of its group,
    which is sklearn's ``average_precision_score``. Columns without positives give NaN.
    """
    n, _ = scores.shape
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    lab = np.take_along_axis(y, order, axis=0).astype(np.float64)
    tp = np.cumsum(lab, axis=0)
    precision = tp / np.arange(1, n + 1, dtype=np.float64)[:, None]
    # index of the last row of each row's tie group: reverse running minimum of group-end indices
    is_end = np.ones_like(s, dtype=bool)
    is_end[:-1] = s[:-1] != s[1:]
    end_idx = np.where(is_end, np.arange(n)[:, None], n)
    group_end = np.minimum.accumulate(end_idx[::-1], axis=0)[::-1]
    prec_at_end = np.take_along_axis(precision, group_end, axis=0)
    n_pos = lab.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (lab * prec_at_end).sum(axis=0) / n_pos


def mean_average_precision(probs: Any, labels: Any) -> float:
    """Macro average precision over labels (columns) that have at least one positive.

    AP is non-interpolated with tied scores as one threshold, equal to sklearn
    ``average_precision_score(labels[:, keep], probs[:, keep], average="macro")`` with
    ``keep = labels.any(axis=0)``. Raises ``ValueError`` if no label has a positive.
    """
    p, y = _pair(probs, labels, ("probs", "labels"), 2)
    y = _binary_labels(y)
    keep = y.any(axis=0)
    if not keep.any():
        raise ValueError("no label has a positive sample; mean average precision is undefined")
    return float(_average_precision_columns(p[:, keep], y[:, keep]).mean())


# --------------------------------------------------------------------------------------------
# Binary tasks
# --------------------------------------------------------------------------------------------


def roc_auc(scores: Any, labels: Any) -> float:
    """ROC-AUC as the Mann-Whitney statistic: P(score_pos > score_neg) + 0.5 P(tie), ties averaged.

    Counted exactly in integers over groups of equal scores; equals sklearn ``roc_auc_score``.
    Raises ``ValueError`` when only one class is present.
    """
    s, y = _pair(np.ravel(_to_numpy(scores, "scores")), np.ravel(_to_numpy(labels, "labels")), ("scores", "labels"), 1)
    y = _binary_labels(y)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both positive and negative labels")
    _, inv = np.unique(s, return_inverse=True)
    inv = inv.ravel()
    pos = np.bincount(inv[y], minlength=inv.max() + 1).astype(np.int64)
    neg = np.bincount(inv[~y], minlength=inv.max() + 1).astype(np.int64)
    neg_below = np.cumsum(neg) - neg
    twice_wins = int((pos * (2 * neg_below + neg)).sum())  # 2 * (wins + 0.5 ties)
    return twice_wins / (2 * n_pos * n_neg)


def log_loss(probs: Any, labels: Any, eps: float | None = None) -> float:
    """Mean binary cross-entropy, -mean(y log p + (1 - y) log(1 - p)), natural log.

    ``probs`` (probability of the positive class) are clipped to ``[eps, 1 - eps]``; the default
    ``eps`` is the machine epsilon of the input's float dtype (float64 for non-float input),
    as sklearn ``log_loss`` does since 1.5 (older sklearn used 1e-15).
    """
    if eps is None:
        if isinstance(probs, torch.Tensor) and probs.is_floating_point():
            eps = float(torch.finfo(probs.dtype).eps)
        else:
            arr = np.asarray(probs)
            eps = float(np.finfo(arr.dtype if arr.dtype.kind == "f" else np.float64).eps)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps}")
    p, y = _pair(np.ravel(_to_numpy(probs, "probs")), np.ravel(_to_numpy(labels, "labels")), ("probs", "labels"), 1)
    y = _binary_labels(y)
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"probs must lie in [0, 1]; {int(((p < 0) | (p > 1)).sum())} value(s) do not")
    p = np.clip(p, eps, 1.0 - eps)
    with np.errstate(divide="ignore"):
        loss = -np.where(y, np.log(p), np.log1p(-p))
    return float(loss.mean())
