"""Sparse id-table updates (train.sparse_ids): a step's gradient holds only the id rows it read, equals the dense
gradient there, and the lazy Adam moves those rows only; the option trains end to end, towers and friends included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_world, tiny_overrides
from mtlrec.config import load_config
from mtlrec.errors import ConfigError
from mtlrec.models.model import MultiTaskModel
from mtlrec.train.pipeline import prepare
from mtlrec.train.run import check_config, train_run
from mtlrec.train.trainer import Trainer
from mtlrec.weighting import WEIGHTINGS


def build(tmp_path: Path, **extra: object) -> Trainer:
    config = load_config(overrides=tiny_overrides(make_world(tmp_path / "w"), **extra))
    tasks = check_config(config)
    data = prepare(config, progress=False, log=lambda _: None).data
    for task in tasks.values():
        task.prepare(data)
    torch.manual_seed(0)
    model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                           data.categories.shape[1])  # fmt: skip
    return Trainer(config, model, tasks, WEIGHTINGS.get(config.train.weighting)(tasks), data, progress=False,
                   log=lambda _: None)  # fmt: skip


def one_batch(trainer: Trainer) -> dict[str, torch.Tensor]:
    from mtlrec.train.data import train_positive_rows

    positions = trainer.data.split.train_positions()[:16]  # a few users' first interactions: few rows read
    rows = trainer.sampler.rows(train_positive_rows(trainer.data, positions), 2)
    trainer.model.eval()  # no dropout: the same batch gives the same gradient twice
    return trainer._row_losses(rows)


def test_the_sparse_gradient_is_the_dense_one_on_the_rows_read(tmp_path: Path) -> None:
    dense, sparse = build(tmp_path / "d"), build(tmp_path / "s", **{"train.sparse_ids": True})
    for trainer in (dense, sparse):
        sum(one_batch(trainer).values()).backward()
    for d, s in zip(dense.model.id_tables(), sparse.model.id_tables(), strict=True):
        assert not d.weight.grad.is_sparse and s.weight.grad.is_sparse
        grad = s.weight.grad.coalesce()
        rows = grad.indices()[0]
        assert len(rows) < d.num_embeddings  # only what the batch read ...
        touched = d.weight.grad.abs().sum(1) > 0
        assert set(torch.nonzero(touched).flatten().tolist()) <= set(rows.tolist())  # ... covering every nonzero row
        assert torch.allclose(grad.to_dense(), d.weight.grad, atol=1e-7)


def test_a_step_moves_only_the_rows_read_and_every_dense_parameter(tmp_path: Path) -> None:
    trainer = build(tmp_path, **{"train.sparse_ids": True})
    assert [type(o).__name__ for o in trainer.optimizers] == ["AdamW", "SparseAdam"]
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    losses = one_batch(trainer)
    trainer.step(losses)
    read = {id(t.weight): set(t.weight.grad.coalesce().indices()[0].tolist()) for t in trainer.model.id_tables()}
    for name, p in trainer.model.named_parameters():
        moved = (p.detach() != before[name]).reshape(len(p), -1).any(1) if p.dim() else p != before[name]
        if id(p) in read:
            assert set(torch.nonzero(moved).flatten().tolist()) <= read[id(p)], name  # no row it did not read
            assert moved.any(), name
        elif p.grad is not None and p.grad.abs().sum() > 0:
            assert moved.any(), name


def test_sparse_ids_train_end_to_end_with_a_transformer_tower(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w")
    metrics = {}
    for sparse in (False, True):
        overrides = tiny_overrides(world, **{"train.sparse_ids": sparse, "model.user_tower": "transformer",
                                             "train.epochs": 12, "train.patience": 12,
                                             "tasks": {"interest": {}, "rating": {"weight": 0.2}}})  # fmt: skip
        metrics[sparse] = train_run(load_config(overrides=overrides), tmp_path / f"run{sparse}", progress=False,
                                    log=lambda _: None)["test"]  # fmt: skip
    # the world is learnable (users prefer one category): both learn it, to a like degree
    assert metrics[True]["auc"] > 0.75 and metrics[False]["auc"] > 0.75
    assert abs(metrics[True]["auc"] - metrics[False]["auc"]) < 0.03
    assert np.isfinite(metrics[True]["rmse"])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.optimizer": "sgd"}, "train.sparse_ids needs train.optimizer=adamw"),
    ({"train.weighting": "pcgrad"}, "pcgrad"),
])  # fmt: skip
def test_what_sparse_ids_cannot_combine_with_is_a_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(overrides={"train.sparse_ids": True, **overrides}))
