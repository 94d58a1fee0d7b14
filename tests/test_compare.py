"""mtlrec compare on the tiny world: the plan, the report's numbers, the paired test, and negative transfer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides
from mtlrec.eval.compare import CompareSpec, paired_test, plan, run_compare, transfer


def spec() -> CompareSpec:
    return CompareSpec(architectures=("shared-bottom",), weightings=("fixed", "uncertainty"), seeds=(0, 1))


def test_plan_has_single_task_baselines_with_their_own_selection(world: Path) -> None:
    variants = plan(spec(), tiny_overrides(world))
    names = [v.name for v in variants]
    assert names == ["single:interest", "single:rating", "single:genre", "shared-bottom+fixed",
                     "shared-bottom+uncertainty"]  # fmt: skip
    single = {v.name: v.config for v in variants if not v.multi_task}
    assert list(single["single:rating"].tasks) == ["rating"] and single["single:rating"].train.select == "rmse"
    assert single["single:genre"].eval.blend == {} and single["single:genre"].train.select == "map"
    assert single["single:interest"].eval.blend == {"interest": 1.0}
    multi = variants[-1].config
    assert multi.train.weighting == "uncertainty" and set(multi.tasks) == {"interest", "rating", "genre"}
    # same budget everywhere
    assert len({(v.config.train.epochs, v.config.train.patience, v.config.train.lr) for v in variants}) == 1


def test_compare_writes_a_consistent_report(world: Path, tmp_path: Path) -> None:
    seen: list[str] = []
    run_compare(spec(), tmp_path, tiny_overrides(world, **{"train.epochs": 2}),
                lambda done, total, what: seen.append(what))  # fmt: skip
    assert seen[0] == "starting" and len(seen) == 5 * 2 + 1
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    md = (tmp_path / "compare.md").read_text()
    assert "negative transfer" in md and "single:rating" in md
    assert len(saved["runs"]) == 10 and all(r["config"] for r in saved["runs"])
    # the reported means are the means of the runs
    runs = [r for r in saved["runs"] if r["variant"] == "shared-bottom+fixed"]
    mean = np.mean([r["metrics"]["test"]["ndcg@10"] for r in runs])
    assert saved["variants"]["shared-bottom+fixed"]["test"]["ndcg@10"]["mean"] == pytest.approx(mean)
    assert saved["best_multi_task"]["variant"].startswith("shared-bottom+")
    assert saved["best_single_task"]["variant"] in {"single:interest", "single:rating"}
    assert "ndcg@10" in saved["best_multi_task"]["test"] and "ndcg@10" in saved["best_single_task"]["test"]
    assert "map" not in saved["variants"]["single:interest"]["test"]  # a task alone reports only its metrics
    assert {"wilcoxon_p", "ttest_p", "users"} <= set(saved["significance"])


def test_paired_test_detects_a_real_difference(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    base = rng.random(300) * 0.2
    for name, values in (("a", base + 0.02 + rng.normal(0, 0.01, 300)), ("b", base)):
        save_file({"test/ndcg@10": values}, str(tmp_path / f"{name}.safetensors"))
    result = paired_test([{"per_user": str(tmp_path / "a.safetensors")}],
                         [{"per_user": str(tmp_path / "b.safetensors")}])  # fmt: skip
    assert result["mean_difference"] == pytest.approx(0.02, abs=0.002) and result["wilcoxon_p"] < 1e-6


def test_transfer_says_where_multi_task_hurts() -> None:
    def entry(multi: bool, **metrics: tuple[float, float]) -> dict:
        return {"multi_task": multi, "test": {k: {"mean": m, "std": s} for k, (m, s) in metrics.items()}}

    variants = {
        "single:interest": entry(False, **{"ndcg@10": (0.10, 0.002)}),
        "single:rating": entry(False, rmse=(0.95, 0.01)),
        "mtl": entry(True, **{"ndcg@10": (0.11, 0.002)}, rmse=(1.00, 0.01)),
    }
    verdicts = {r["metric"]: r["verdict"] for r in transfer(variants, "single:interest")}
    assert verdicts == {"ndcg@10": "helps", "rmse": "hurts"}


def test_parallel_jobs_give_the_same_runs(world: Path, tmp_path: Path) -> None:
    small = CompareSpec(architectures=("shared-bottom",), weightings=("fixed",), seeds=(0, 1), single_task=False)
    overrides = tiny_overrides(world, **{"train.epochs": 1})
    one = run_compare(small, tmp_path / "one", overrides, jobs=1)
    two = run_compare(small, tmp_path / "two", overrides, jobs=2)
    assert [r["metrics"]["test"] for r in one["runs"]] == [r["metrics"]["test"] for r in two["runs"]]


def test_per_architecture_settings_apply_to_that_architecture_only(world: Path) -> None:
    custom = CompareSpec(architectures=("shared-bottom", "mmoe"), weightings=("fixed",), seeds=(0,),
                         per_architecture={"mmoe": {"model": {"hidden": [8, 4], "experts": 3}}})  # fmt: skip
    configs = {v.name: v.config.model for v in plan(custom, tiny_overrides(world))}
    assert configs["mmoe+fixed"].hidden == (8, 4) and configs["mmoe+fixed"].experts == 3
    assert configs["shared-bottom+fixed"].hidden == (32, 16) and configs["single:interest"].hidden == (32, 16)
