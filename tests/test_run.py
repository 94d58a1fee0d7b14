"""A whole run on a tiny synthetic world: artifact contents, reload, recommend, score_all, re-evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtlrec import Recommender
from mtlrec.errors import ArtifactError, MtlrecError
from mtlrec.train.run import evaluate_run

RANKING = ["hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20"]


def test_run_directory_holds_everything_and_no_pickle(tiny_run: Path) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.yaml", "model.safetensors", "item_vectors.safetensors", "interactions.safetensors",
            "items.parquet", "ids.json", "meta.json", "metrics.json", "history.json", "plots"} <= names  # fmt: skip
    assert {p.name for p in (tiny_run / "plots").iterdir()} == {"losses.png", "metrics.png", "weights.png"}
    assert not [p for p in tiny_run.rglob("*") if p.suffix in {".pt", ".pkl", ".pth", ".bin"}]
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for stage in ("valid", "test"):
        assert set(RANKING + ["rmse", "mae", "auc", "micro_f1", "macro_f1", "map"]) <= set(metrics[stage])
        assert all(0.0 <= metrics[stage][k] <= 1.0 for k in RANKING)
    assert {"seed", "protocol", "best_epoch"} <= set(metrics) and "train_seconds" not in metrics  # same bytes each run
    assert {"train_seconds", "threads", "texts_encoded"} <= set(json.loads((tiny_run / "run.json").read_text()))
    history = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert set(history[0]["train_loss"]) == {"interest", "rating", "genre", "total"}


def test_the_model_learns_the_world(tiny_run: Path) -> None:
    """Users prefer one category: the trained model must rank far better than chance (HR@10 about 10/70)."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["test"]["hr@10"] > 0.6
    assert metrics["test"]["rmse"] < 1.4  # ratings are 5 (favourite) or 2: the mean alone is ~1.2 off


def test_recommend_returns_unseen_items_with_per_task_scores(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    items = rec.recommend("u1", k=5)
    assert len(items) == 5
    seen = {rec.item_ids[i] for i in rec.seen_items("u1")}
    assert not seen & {r["item_id"] for r in items}
    assert [r["score"] for r in items] == sorted((r["score"] for r in items), reverse=True)
    first = items[0]
    assert set(first["scores"]) == {"interest", "rating", "genre"}
    assert 0.0 <= first["scores"]["interest"] <= 1.0
    # user u1's favourite category is index 1 (Comedy): its top picks should be comedies
    assert sum("Comedy" in r["categories"] for r in items) >= 3


def test_score_all_matches_recommend_and_item_order(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    scores = rec.score_all(["u1", "u2"])
    assert scores.dtype == np.float32 and scores.shape == (2, len(rec.item_ids))
    top = rec.recommend("u2", k=3, exclude_seen=False)
    assert [r["item_id"] for r in top] == [rec.item_ids[i] for i in np.argsort(-scores[1], kind="stable")[:3]]
    blended = rec.score_all(["u2"], blend={"interest": 1.0, "rating": 0.5})
    assert not np.allclose(blended[0], scores[1])


def test_bad_requests_are_clear(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    with pytest.raises(MtlrecError, match="unknown user 'nobody'"):
        rec.recommend("nobody")
    with pytest.raises(MtlrecError, match="'genre' is not a rankable task"):
        rec.score_all(["u1"], blend={"genre": 1.0})
    with pytest.raises(MtlrecError, match="k must be between 1 and 80"):
        rec.recommend("u1", k=0)


def test_reevaluation_repeats_the_stored_metrics(tiny_run: Path) -> None:
    stored = json.loads((tiny_run / "metrics.json").read_text())
    again = evaluate_run(tiny_run, log=lambda _: None)
    for stage in ("valid", "test"):
        for key, value in again[stage].items():
            assert value == pytest.approx(stored[stage][key], abs=1e-6), (stage, key)


def test_evaluation_refuses_other_data_or_another_split_unless_forced(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = (run / "config.yaml").read_text()
    data_path = Path(yaml.safe_load(config)["data"]["data_path"])
    changed = pd.read_csv(data_path)
    changed.loc[3, "rating"] = 1  # one rating of one user
    changed.to_csv(tmp_path / "changed.csv", index=False)
    (run / "config.yaml").write_text(config.replace(str(data_path), str(tmp_path / "changed.csv")))
    with pytest.raises(ArtifactError, match="dataset fingerprint mismatch"):
        evaluate_run(run, log=lambda _: None)
    assert "test" in evaluate_run(run, force=True, log=lambda _: None)
    (run / "config.yaml").write_text(config.replace("category_test: 0.2", "category_test: 0.3"))  # same data
    with pytest.raises(ArtifactError, match="split fingerprint mismatch"):
        evaluate_run(run, log=lambda _: None)
    assert "test" in evaluate_run(run, force=True, log=lambda _: None)


def test_evaluation_ranks_with_the_recommender_scores(tiny_run: Path) -> None:
    """Full ranking in the evaluator and Recommender.score_all go through one scoring function."""
    from mtlrec.recommend.scoring import ranking_scores
    from mtlrec.train.data import histories

    rec = Recommender.load(tiny_run)
    split = rec.split
    users = np.arange(3)
    end = split.offsets[1:][users]
    direct, _ = ranking_scores(rec.model, rec.tasks, rec.default_blend, users, histories(split, users, end, 8))
    assert torch.allclose(direct, torch.from_numpy(rec.score_all([rec.user_ids[u] for u in users])))


def test_incomplete_run_directory_is_reported(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing model.safetensors"):
        Recommender.load(broken)
    shutil.copy(tiny_run / "model.safetensors", broken / "model.safetensors")
    text = (broken / "config.yaml").read_text().replace("dim: 16", "dim: 24")
    (broken / "config.yaml").write_text(text)
    with pytest.raises(ArtifactError, match="does not fit config.yaml"):
        Recommender.load(broken)


@pytest.mark.parametrize("name", ["config.yaml", "model.safetensors", "item_vectors.safetensors",
                                  "interactions.safetensors", "items.parquet", "ids.json", "meta.json"])
def test_a_damaged_run_file_is_named(tiny_run: Path, tmp_path: Path, name: str) -> None:
    import shutil

    from mtlrec.errors import ConfigError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(data[: len(data) // 2] + b"\x00\xff{")  # cut short, garbage at the end
    with pytest.raises((ArtifactError, ConfigError)) as info:
        Recommender.load(broken)
    assert name in str(info.value)


def test_a_run_file_with_a_part_missing_is_named(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    tensors = load_file(str(broken / "interactions.safetensors"))
    del tensors["offsets"]
    save_file(tensors, str(broken / "interactions.safetensors"))
    with pytest.raises(ArtifactError, match="interactions.safetensors: lacks offsets"):
        Recommender.load(broken)
    shutil.copy(tiny_run / "interactions.safetensors", broken / "interactions.safetensors")
    ids = json.loads((broken / "ids.json").read_text())
    (broken / "ids.json").write_text(json.dumps({**ids, "items": ids["items"][:-1]}))
    with pytest.raises(ArtifactError, match="item_vectors.safetensors has 80 rows for 79 items"):
        Recommender.load(broken)


def test_no_pickle_is_ever_loaded() -> None:
    """torch.load (pickle underneath) and pickle itself appear nowhere in the package."""
    import re

    import mtlrec

    root = Path(mtlrec.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bimport pickle\b|\bpickle\.load|torch\.load\(", text), path


def _train(world: Path, out: Path, **extra: object) -> dict:
    from conftest import tiny_overrides
    from mtlrec.config import load_config
    from mtlrec.train.run import train_run

    config = load_config(overrides=tiny_overrides(world, **{"train.epochs": 2, **extra}))
    return train_run(config, out, progress=False, log=lambda _: None)


def test_same_seed_same_metrics_other_seed_other_metrics(world: Path, tmp_path: Path) -> None:
    a = _train(world, tmp_path / "a", **{"train.seed": 3})
    b = _train(world, tmp_path / "b", **{"train.seed": 3})
    c = _train(world, tmp_path / "c", **{"train.seed": 4})
    assert a["test"] == b["test"] and a["valid"] == b["valid"]
    assert a["test"] != c["test"]


def test_sgd_trains_too(world: Path, tmp_path: Path) -> None:
    _train(world, tmp_path / "sgd", **{"train.optimizer": "sgd", "train.lr": 0.05})
    history = json.loads((tmp_path / "sgd" / "history.json").read_text())
    assert history[-1]["train_loss"]["interest"] < history[0]["train_loss"]["interest"]


def test_learned_task_weights_are_logged_per_epoch(world: Path, tmp_path: Path) -> None:
    _train(world, tmp_path / "u", **{"train.weighting": "uncertainty", "train.epochs": 3, "train.patience": 5})
    history = json.loads((tmp_path / "u" / "history.json").read_text())
    first, last = history[0]["weights"], history[-1]["weights"]
    assert set(first) == {"interest", "rating", "genre"}
    assert any(abs(last[t] - first[t]) > 1e-3 for t in first)  # uncertainty weights move and the log shows it


def test_a_sample_of_users_ranks_exactly_as_in_the_full_evaluation(tiny_run: Path) -> None:
    """eval.select_users: early stopping may rank a sample of users; each sampled user's metrics are unchanged."""
    from mtlrec.eval.evaluator import model_score_fn, rank_users

    rec = Recommender.load(tiny_run)
    score_fn = model_score_fn(rec.model, rec.tasks, rec.default_blend, rec.split)
    full = rank_users(score_fn, rec.split, "valid")
    sample = np.array([0, 3, 7, 20])
    part = rank_users(score_fn, rec.split, "valid", sample=sample)
    for name, values in part.items():
        assert np.allclose(values, full[name][sample])


def test_blend_weights_must_be_finite_and_bounded(tiny_run: Path) -> None:
    rec = Recommender.load(tiny_run)
    for weight in (float("inf"), float("nan"), 1e308, -1e7):
        with pytest.raises(MtlrecError, match="must be a finite number"):
            rec.recommend("u1", blend={"interest": weight})
    assert len(rec.recommend("u1", k=3, blend={"interest": 1e6})) == 3


@pytest.mark.parametrize(("key", "value"), [("train.batch_size", -4), ("train.epochs", 0), ("train.lr", 0.0),
                                            ("train.negatives", -1), ("model.hidden", []), ("model.dropout", 1.0),
                                            ("train.checkpoint_every", -1), ("model.dim", 0)])  # fmt: skip
def test_numbers_training_cannot_use_name_their_key(key: str, value: object) -> None:
    from mtlrec.config import load_config
    from mtlrec.errors import ConfigError
    from mtlrec.train.run import check_config

    with pytest.raises(ConfigError, match=f"^{key}: expected"):
        check_config(load_config(overrides={key: value}))
