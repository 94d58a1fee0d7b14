"""next_item: the sampled-softmax loss (groups from PairRows.owner, logQ correction), masking, broadcasting, and
that it trains beside interest with the transformer tower, and alone through the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_overrides
from mtlrec.config import ModelConfig, load_config
from mtlrec.models import MultiTaskModel
from mtlrec.tasks import TASKS, Features, HeadDims, build_tasks
from mtlrec.tasks.next_item import NextItemTask
from mtlrec.train.data import PairRows
from mtlrec.train.run import evaluate_run, train_run


def task() -> NextItemTask:
    t = build_tasks({"next_item": {}})["next_item"]
    assert isinstance(t, NextItemTask) and t.rankable and "next_item" in TASKS
    return t


def grouped_rows() -> PairRows:
    """2 positives, then 3 negatives each, laid out as NegativeSampler.rows does."""
    return PairRows(users=np.array([0, 1, 0, 0, 0, 1, 1, 1]), items=np.array([1, 2, 3, 4, 5, 6, 0, 3]),
                    history_end=np.zeros(8, int), position=np.array([10, 11, -1, -1, -1, -1, -1, -1]),
                    owner=np.array([0, 1, 0, 0, 0, 1, 1, 1]))  # fmt: skip


def test_sampled_softmax_equals_hand_computed_cross_entropy() -> None:
    t = task()
    rows = grouped_rows()
    logits = torch.tensor([2.0, -1.0, 0.5, 1.0, -0.3, 0.2, 1.5, -2.0])
    t.sampling_log_prob = torch.log(torch.tensor([0.05, 0.1, 0.2, 0.1, 0.15, 0.1, 0.1, 0.2]))  # not uniform
    logq = t.sampling_log_prob[rows.items].float()
    z = logits - logq
    groups = [[0, 2, 3, 4], [1, 5, 6, 7]]
    expected = sum(F.cross_entropy(z[g][None], torch.tensor([0])) for g in groups) / 2
    assert t.loss(logits, *t.labels(rows)).item() == pytest.approx(expected.item(), rel=1e-6)
    by_hand = sum(-(z[g[0]] - torch.log(torch.exp(z[g]).sum())) for g in groups) / 2
    assert expected.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # a uniform sampler's correction is one constant: it cancels
    t.sampling_log_prob = torch.full((8,), -math.log(8.0))
    plain = sum(F.cross_entropy(logits[g][None], torch.tensor([0])) for g in groups) / 2
    assert t.loss(logits, *t.labels(rows)).item() == pytest.approx(plain.item(), rel=1e-6)


def test_rows_outside_a_labelled_group_are_masked() -> None:
    """Groups whose owner is not a positive take part in no softmax; no labelled group at all gives 0, not NaN."""
    t = task()
    rows = grouped_rows()
    rows.position[1] = -1  # group 1 loses its positive
    targets, mask = t.labels(rows)
    assert mask.tolist() == [True, False, True, True, True, False, False, False]
    logits = torch.tensor([2.0, -1.0, 0.5, 1.0, -0.3, 0.2, 1.5, -2.0], requires_grad=True)
    loss = t.loss(logits, targets, mask)
    assert loss.item() == pytest.approx(F.cross_entropy(logits[[0, 2, 3, 4]][None], torch.tensor([0])).item())
    loss.backward()
    assert logits.grad is not None and (logits.grad[[1, 5, 6, 7]] == 0).all()
    rows.position[0] = -1
    none = t.loss(logits, *t.labels(rows))
    assert none.item() == 0.0
    alone = PairRows(users=np.zeros(2, int), items=np.array([1, 2]), history_end=np.zeros(2, int),
                     position=np.array([3, 4]))  # no owner: each row is its own group  # fmt: skip
    assert float(t.loss(torch.tensor([1.0, 2.0]), *t.labels(alone))) == 0.0


def test_head_broadcasts_over_the_catalogue() -> None:
    torch.manual_seed(0)
    head = task().build_head(HeadDims(dim=4, shared=6, n_categories=2))
    user, item = torch.randn(3, 4), torch.randn(5, 4)
    full = head(Features(item=item[None], user=user[:, None]))
    assert full.shape == (3, 5)
    rows = head(Features(item=item.repeat(3, 1), user=user.repeat_interleave(5, 0)))
    assert torch.allclose(full.reshape(-1), rows, atol=1e-6)


def sequences(n_users: int, n_items: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Each user walks the catalogue in steps of +1 from a random start: the next item follows from the last."""
    return (rng.integers(0, n_items, n_users)[:, None] + np.arange(length)[None, :]) % n_items


def batch(seqs: np.ndarray, n_items: int, negatives: int, hist_len: int, rng: np.random.Generator):  # noqa: ANN201
    users, ends = np.nonzero(np.ones_like(seqs[:, 1:]))
    ends = ends + 1  # the positive is seqs[u, end]; its history is seqs[u, :end]
    pad = np.arange(hist_len)[None, :] - hist_len + ends[:, None]  # [P, L] positions, negative = padding
    hist = torch.from_numpy(np.where(pad >= 0, seqs[users[:, None], pad.clip(0)], 0))
    mask = torch.from_numpy(pad >= 0)
    p = len(users)
    owner = np.concatenate([np.arange(p), np.repeat(np.arange(p), negatives)])
    items = np.concatenate([seqs[users, ends], rng.integers(0, n_items, p * negatives)])
    rows = PairRows(users=users[owner], items=items, history_end=ends[owner],
                    position=np.concatenate([np.arange(p), -np.ones(p * negatives, int)]), owner=owner)  # fmt: skip
    return torch.from_numpy(users), hist, mask, rows


def test_tiny_model_with_interest_and_next_item_learns() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n_users, n_items = 12, 20
    tasks = build_tasks({"interest": {}, "next_item": {}})
    tasks["next_item"].sampling_log_prob = torch.full((n_items,), -math.log(n_items))  # type: ignore[attr-defined]
    config = ModelConfig(dim=16, hidden=(16,), dropout=0.0, history_len=4, user_tower="transformer")
    m = MultiTaskModel(config, tasks, n_users, torch.randn(n_items, 8), n_categories=2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    seqs = sequences(n_users, n_items, 6, rng)
    fixed = batch(seqs, n_items, 4, 4, np.random.default_rng(1))

    def losses(users: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor, rows: PairRows) -> dict[str, torch.Tensor]:
        user = m.user_repr(users, hist, mask)[torch.from_numpy(rows.owner)]  # type: ignore[index]
        logits = m.pair_logits(user, torch.from_numpy(rows.items))
        return {name: t.loss(logits[name], *t.labels(rows)) for name, t in tasks.items()}

    with torch.no_grad():
        before = losses(*fixed)
    for _ in range(40):
        step = losses(*batch(seqs, n_items, 4, 4, rng))
        opt.zero_grad()
        sum(step.values()).backward()  # type: ignore[union-attr]
        opt.step()
    with torch.no_grad():
        after = losses(*fixed)
    for name in tasks:
        assert after[name] < 0.7 * before[name], (name, before[name], after[name])


def test_next_item_alone_trains_and_selects_on_ndcg(world: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(world, **{"tasks": {"next_item": {}}, "eval.blend": {"next_item": 1.0},
                                         "model.user_tower": "transformer", "train.epochs": 2})  # fmt: skip
    metrics = train_run(load_config(overrides=overrides), tmp_path / "run", progress=False, log=lambda _: None)
    assert np.isfinite(metrics["valid"]["ndcg@10"]) and np.isfinite(metrics["test"]["sampled_ce"])
    assert metrics["best_epoch"] >= 1
    again = evaluate_run(tmp_path / "run", log=lambda _: None)  # the saved artifact rebuilds the tower
    assert again["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
