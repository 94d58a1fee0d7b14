"""The real thing: MovieLens-100K, the packaged language model, a few epochs; it must beat most-popular."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import shared_datasets
from mtlrec import Recommender
from mtlrec.config import load_config
from mtlrec.data.splits import temporal_leave_one_out
from mtlrec.eval.baselines import most_popular
from mtlrec.eval.evaluator import rank_users
from mtlrec.train.run import train_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shared_datasets() is None, reason="set MTLREC_DATA_DIR to the shared datasets"),
]


def test_language_model_run_beats_most_popular(tmp_path: Path) -> None:
    config = load_config(overrides={"data.data_dir": str(shared_datasets()), "train.epochs": 3, "train.threads": 1})
    lines: list[str] = []
    metrics = train_run(config, tmp_path / "ml100k", progress=False, log=lines.append)
    assert config.text.encoder == "sentence-transformers"
    assert any("all-MiniLM-L6-v2" in line for line in lines)

    rec = Recommender.load(tmp_path / "ml100k")
    split = temporal_leave_one_out(_dataset())
    pop = {k: float(v.mean()) for k, v in rank_users(most_popular(split), split, "test").items()}
    assert pop["ndcg@10"] == pytest.approx(0.0380, abs=5e-4)  # anchors.md MostPop
    assert metrics["test"]["ndcg@10"] > 1.3 * pop["ndcg@10"]
    assert metrics["test"]["hr@10"] > 1.3 * pop["hr@10"]
    assert metrics["test"]["rmse"] < 1.1
    assert metrics["evaluated_users"] == 943

    # a warm cache: the second preparation encodes nothing
    from mtlrec.train.pipeline import prepare

    assert prepare(config, progress=False, log=lambda _: None).encoded == 0
    top = rec.recommend("196", k=10)
    assert len(top) == 10 and all(t["title"] for t in top)
    assert json.loads((tmp_path / "ml100k" / "meta.json").read_text())["n_items"] == 1682


def _dataset():  # the same data the run was trained on
    from mtlrec.data import load_dataset

    return load_dataset("ml-100k", shared_datasets())
