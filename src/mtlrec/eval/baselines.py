"""Reference rankers scored through the same protocol code as the model (tests and benchmarks).

Each returns a :data:`~mtlrec.eval.evaluator.ScoreFn` and sees, at each stage, exactly the history the model sees
(PROTOCOL.md, :meth:`Split.history_end`): at 'valid' the train interactions, at 'test' the train interactions plus
the validation interaction. Masking the seen items is left to :func:`~mtlrec.eval.evaluator.rank_users`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from mtlrec.data.splits import TRAIN, Split
from mtlrec.eval.evaluator import ScoreFn, rank_users

STAGES = ("valid", "test")
_STAGE_CODE = {"valid": 1, "test": 2}


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")


def visible_positions(split: Split, stage: str) -> np.ndarray:
    """Bool mask over the flat positions of ``split``: the interactions visible at ``stage`` ('valid' or 'test').

    Defined by :meth:`Split.history_end`, the same cut the model's histories use, so that for an evaluated user
    'valid' keeps the train items and 'test' adds the validation item; other users keep everything.
    """
    _check_stage(stage)
    end = split.history_end(stage)
    user_of = np.repeat(np.arange(split.n_users), split.lengths)
    return np.arange(len(split.items)) < end[user_of]


def most_popular(split: Split) -> ScoreFn:
    """Every user gets the train interaction counts of the items."""
    counts = torch.from_numpy(np.bincount(split.items[split.role == TRAIN], minlength=split.n_items)).double()

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        return counts.expand(len(users), -1)

    return score


# ----------------------------------------------------------------------------- random


def random_scores(split: Split, seed: int) -> ScoreFn:
    """Uniform [0, 1) scores, float64: the chance-level ranker.

    User ``u``'s row is drawn from ``numpy.random.default_rng([seed, s, u])`` with s = 1 at 'valid' and 2 at
    'test', so it depends on the seed, the stage and the user only (not on how users are batched), and the two
    stages are independent draws. Its expected HR@K is K / (number of unmasked items) per user.
    """
    n_items = split.n_items

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        _check_stage(stage)
        code = _STAGE_CODE[stage]
        rows = [np.random.default_rng([seed, code, int(u)]).random(n_items) for u in np.asarray(users)]
        return torch.from_numpy(np.stack(rows) if rows else np.empty((0, n_items)))

    return score


# ----------------------------------------------------------------------------- content kNN


def content_knn(
    split: Split, item_vectors: np.ndarray | torch.Tensor, k_history: int | None = None, eps: float = 1e-12
) -> ScoreFn:
    """Item-based kNN on item text: ``score(u, i)`` = mean cosine similarity between item ``i``'s vector and the
    vectors of the user's visible history items.

    The aggregation is the mean, i.e. the classic item-kNN sum of similarities over the user's items (Sarwar et al.
    2001; Deshpande & Karypis 2004; Lops et al. 2011 for content-based similarities) divided by the history
    length, which does not change a user's ranking. Every similarity is kept (no neighbourhood truncation). It
    equals the cosine between item ``i`` and the mean of the *normalised* history vectors times that mean's norm,
    so one matmul per user batch scores the whole catalogue. Items nobody interacted with are scored the same
    way (cold items); a zero vector has similarity 0 to everything, and a user with no visible history gets 0
    for every item. Each visible interaction counts, so a repeated item weighs more.

    ``k_history``: only the user's ``k_history`` most recent visible interactions (like the model's
    ``history_len``); None keeps them all. Scores are float32 when the vectors are float32, else float64.
    """
    vectors = (
        item_vectors.detach().cpu() if torch.is_tensor(item_vectors) else torch.as_tensor(np.asarray(item_vectors))
    )
    if vectors.ndim != 2 or vectors.shape[0] != split.n_items:
        raise ValueError(f"item_vectors must be [n_items={split.n_items}, dim], got {tuple(vectors.shape)}")
    if k_history is not None and k_history < 1:
        raise ValueError(f"k_history must be positive or None, got {k_history}")
    if vectors.dtype not in (torch.float32, torch.float64):
        vectors = vectors.double()
    unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(eps)  # zero rows stay zero
    unit_t = unit.T.contiguous()

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        _check_stage(stage)
        users = np.asarray(users, dtype=np.int64)
        end = split.history_end(stage)[users]
        start = split.offsets[users]
        if k_history is not None:
            start = np.maximum(start, end - k_history)
        counts = end - start
        rows = np.repeat(np.arange(len(users)), counts)
        pos = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        items = torch.from_numpy(split.items[pos])
        profile = torch.zeros(len(users), unit.shape[1], dtype=unit.dtype)
        profile.index_add_(0, torch.from_numpy(rows), unit[items])
        profile /= torch.from_numpy(np.maximum(counts, 1)).to(unit.dtype)[:, None]
        return profile @ unit_t

    return score


# ----------------------------------------------------------------------------- implicit ALS


def als_confidence(weights: np.ndarray, alpha: float, confidence: str = "linear", epsilon: float = 1.0) -> np.ndarray:
    """Hu, Koren & Volinsky (2008) confidence of an observed (user, item) pair from its summed weight ``r``:
    ``1 + alpha * r`` ('linear') or ``1 + alpha * log(1 + r / epsilon)`` ('log', their eq. for large counts)."""
    if confidence == "linear":
        return 1.0 + alpha * weights
    if confidence == "log":
        return 1.0 + alpha * np.log1p(weights / epsilon)
    raise ValueError(f"confidence must be 'linear' or 'log', not {confidence!r}")


def als_matrix(
    split: Split,
    stage: str,
    alpha: float,
    weights: np.ndarray | None = None,
    confidence: str = "linear",
    epsilon: float = 1.0,
) -> sp.csr_matrix:
    """The user x item confidence matrix (float32 CSR) of the interactions visible at ``stage``.

    Each visible interaction contributes its weight (1 when ``weights`` is None); repeats of a (user, item) pair
    add up, then :func:`als_confidence` turns the sum into ``c_ui`` (implicit reads the stored value as the whole
    confidence, with preference 1). Unobserved pairs, and pairs whose weights sum to 0, are absent (c = 1, p = 0).
    """
    keep = visible_positions(split, stage)
    users = np.repeat(np.arange(split.n_users), split.lengths)[keep]
    if weights is None:
        w = np.ones(int(keep.sum()))
    else:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != split.items.shape:
            raise ValueError(f"weights must be aligned with the split's positions {split.items.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and non-negative")
        w = weights[keep]
    summed = sp.csr_matrix((w, (users, split.items[keep])), shape=(split.n_users, split.n_items))
    summed.sum_duplicates()
    summed.eliminate_zeros()  # a pair whose weights sum to 0 is not a positive (p = 0, c = 1): leave it out
    summed.data = als_confidence(summed.data, alpha, confidence, epsilon)
    return summed.astype(np.float32)


def implicit_als(
    split: Split,
    factors: int = 64,
    regularization: float = 0.01,
    alpha: float = 40.0,
    iterations: int = 15,
    seed: int = 0,
    weights: np.ndarray | None = None,
    confidence: str = "linear",
    epsilon: float = 1.0,
    num_threads: int = 1,
) -> ScoreFn:
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) fitted by ALS with the conjugate-gradient
    step of Takács et al. (2011), via ``implicit.cpu.als.AlternatingLeastSquares`` (the ``baselines`` extra).

    One model per stage, fitted on the first call at that stage on the interactions visible there
    (:func:`als_matrix`): 'valid' on train only, 'test' on train plus the validation item. ``score(u, i)`` is the
    dot product of the user and item factors (float32). ``weights`` are per-interaction strengths aligned with the
    split's flat positions (e.g. Last.fm listen counts: ``counts_by_source_row[split.rows]``); the confidence is
    ``1 + alpha * sum(weights)`` per pair, or with ``confidence='log'`` ``1 + alpha * log(1 + sum / epsilon)``.
    The default alpha is the paper's 40. Deterministic for a given seed with ``num_threads=1``.
    """
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("implicit_als needs the 'implicit' package: pip install 'mtlrec[baselines]'") from exc

    user_factors: dict[str, torch.Tensor] = {}  # stage -> [n_users, factors]
    item_factors_t: dict[str, torch.Tensor] = {}  # stage -> [factors, n_items]

    def fit(stage: str) -> None:
        matrix = als_matrix(split, stage, alpha, weights, confidence, epsilon)
        with threadpool_limits(limits=1, user_api="blas"):  # implicit's own threads; BLAS threads slow it down
            model = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=1.0,  # the matrix already holds c_ui; implicit would multiply it by alpha otherwise
                iterations=iterations,
                num_threads=num_threads,
                random_state=seed,
            )
            model.fit(matrix, show_progress=False)
        user_factors[stage] = torch.from_numpy(np.ascontiguousarray(model.user_factors))
        item_factors_t[stage] = torch.from_numpy(np.ascontiguousarray(model.item_factors.T))

    def score(users: np.ndarray, stage: str) -> torch.Tensor:
        _check_stage(stage)
        if stage not in user_factors:
            fit(stage)
        return user_factors[stage][torch.from_numpy(np.asarray(users, dtype=np.int64))] @ item_factors_t[stage]

    return score


ALS_GRID_KEYS = frozenset({"factors", "regularization", "alpha", "iterations", "confidence", "epsilon"})


def tune_als(
    split: Split,
    grid: Mapping[str, Sequence[Any]],
    metric: str = "ndcg@10",
    results: list[dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    **fixed: Any,
) -> ScoreFn:
    """Grid search for :func:`implicit_als` on the validation stage only, then the best one's ScoreFn.

    ``grid`` maps parameter names (factors, regularization, alpha, iterations, confidence, epsilon) to the
    values to try; every combination is fitted at 'valid' and scored by ``rank_users(..., 'valid')`` mean
    ``metric``. The first best combination (grid order) wins. Test data is never looked at here: the returned
    ScoreFn fits its 'test' model (train + validation item) only when called at 'test'. ``fixed`` goes to every
    :func:`implicit_als` call (seed, weights, num_threads, ...). ``results``, if given, receives one
    ``{**params, metric: value}`` per combination.
    """
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg", "mrr") or not k.isdigit():
        raise ValueError(f"metric must look like 'ndcg@10' (hr, ndcg or mrr), not {metric!r}")
    unknown = set(grid) - ALS_GRID_KEYS
    if unknown:
        raise ValueError(f"unknown ALS grid parameters: {sorted(unknown)}")
    names = list(grid)
    combos = list(itertools.product(*(grid[name] for name in names)))
    if not combos:
        raise ValueError("the grid is empty")
    best: tuple[float, ScoreFn] | None = None
    for values in combos:
        params = dict(zip(names, values, strict=True))
        score_fn = implicit_als(split, **fixed, **params)
        value = float(rank_users(score_fn, split, "valid", ks=(int(k),))[metric].mean())
        if results is not None:
            results.append({**params, metric: value})
        if log is not None:
            log(f"ALS {params}: valid {metric} {value:.4f}")
        if best is None or value > best[0]:
            best = (value, score_fn)
    assert best is not None
    return best[1]
