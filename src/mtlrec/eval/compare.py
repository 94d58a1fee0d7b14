"""Does learning tasks together help? Single-task baselines against architecture x weighting combinations, over
seeds, on PROTOCOL.md, with a paired significance test over users and plain words on negative transfer.

Every run gets the same budget and selection rule: the base config's epochs, patience and learning rate, and
early stopping on a validation metric (NDCG@10 for multi-task runs; a single-task run selects on its own task's
metric, e.g. RMSE for rating). The best configurations are chosen on validation; test is only reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from mtlrec.config import Config, from_dict, load_config, read_yaml
from mtlrec.errors import ConfigError
from mtlrec.eval.evaluator import LOWER_IS_BETTER
from mtlrec.recommend.artifact import write_json
from mtlrec.tasks.base import build_tasks

RANKING_PREFIXES = ("hr@", "ndcg@", "mrr@")
KEY_METRIC = "ndcg@10"


@dataclass(frozen=True)
class CompareSpec:
    """What to compare; YAML keys are the field names (``base`` is an ordinary config mapping)."""

    base: dict[str, Any] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("shared-bottom", "mmoe", "ple")
    weightings: tuple[str, ...] = ("fixed", "uncertainty")
    seeds: tuple[int, ...] = (0, 1, 2)
    single_task: bool = True
    per_architecture: dict[str, dict[str, Any]] = field(default_factory=dict)  # arch -> config mapping on top


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "single:rating" or "mmoe+uncertainty"
    multi_task: bool
    config: Config


def load_spec(path: str | Path | None, overrides: dict[str, Any] | None = None) -> CompareSpec:
    raw: Any = {}
    if path is not None:
        raw = read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of spec keys, got {type(raw).__name__}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return from_dict(CompareSpec, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def plan(spec: CompareSpec, base_overrides: dict[str, Any] | None = None) -> list[Variant]:
    """Single-task baselines (one per task of the base config), then every architecture x weighting."""
    base = load_config(overrides={**_flatten(spec.base), **(base_overrides or {})})
    tasks = build_tasks(base.tasks)
    variants: list[Variant] = []
    if spec.single_task:
        for name, task in tasks.items():
            options = {**base.tasks[name], "weight": 1.0}
            config = base.with_overrides({"tasks": {name: options}, "train.weighting": "fixed",
                                          "train.select": task.select_metric})  # fmt: skip
            config = _replace_blend(config, {name: 1.0} if task.rankable else {})
            variants.append(Variant(f"single:{name}", False, config))
    for arch in spec.architectures:
        extra = _flatten(spec.per_architecture.get(arch, {}))
        for weighting in spec.weightings:
            config = base.with_overrides({**extra, "model.arch": arch, "train.weighting": weighting})
            variants.append(Variant(f"{arch}+{weighting}", True, config))
    return variants


def _replace_blend(config: Config, blend: dict[str, float]) -> Config:
    data = config.to_dict()
    data["eval"]["blend"] = blend  # a dict override would merge; the blend must be replaced whole
    return from_dict(Config, data)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("tasks", "blend", "columns"):
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


Trainer = Callable[[Config, Path], dict[str, Any]]


def train_quietly(config: Config, run_dir: Path) -> dict[str, Any]:
    """The default trainer of a comparison: a normal run, without progress output."""
    from mtlrec.train.run import train_run

    return train_run(config, run_dir, progress=False, log=lambda _: None)


def run_compare(
    spec: CompareSpec,
    output: Path,
    base_overrides: dict[str, Any] | None = None,
    on_run: Callable[[int, int, str], None] = lambda done, total, what: None,
    jobs: int = 1,
    train: Trainer = train_quietly,
) -> dict[str, Any]:
    """Train every variant for every seed (``train(config, run_dir) -> metrics``), then write the report.

    ``jobs`` > 1 trains that many runs at once in worker processes, each at one torch thread (on a small CPU,
    two one-thread runs side by side finish sooner than two runs one after the other at two threads each).
    """
    variants = plan(spec, base_overrides)
    todo = [(v, seed, output / "runs" / v.name.replace(":", "-").replace("+", "_") / f"seed{seed}")
            for v in variants for seed in spec.seeds]  # fmt: skip
    started = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}

    def record(k: int, metrics: dict[str, Any]) -> None:
        variant, seed, run_dir = todo[k]
        per_user = run_dir / "per_user.safetensors"
        results[k] = {"variant": variant.name, "multi_task": variant.multi_task, "seed": seed, "dir": str(run_dir),
                      "config": variant.config.to_dict(), "metrics": metrics,
                      "per_user": str(per_user) if per_user.exists() else None}  # fmt: skip
        on_run(len(results), len(todo), f"{variant.name} seed {seed}")

    on_run(0, len(todo), "starting")
    if jobs <= 1:
        for k, (variant, seed, run_dir) in enumerate(todo):
            record(k, train(variant.config.with_overrides({"train.seed": seed}), run_dir))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train, v.config.with_overrides({"train.seed": s, "train.threads": 1}), d): k
                       for k, (v, s, d) in enumerate(todo)}  # fmt: skip
            for future in as_completed(futures):
                record(futures[future], future.result())
    runs = [results[k] for k in range(len(todo))]
    report = summarise(runs)
    report["minutes"] = round((time.perf_counter() - started) / 60, 1)
    report["spec"] = {"architectures": list(spec.architectures), "weightings": list(spec.weightings),
                      "seeds": list(spec.seeds), "single_task": spec.single_task,
                      "per_architecture": spec.per_architecture}  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "compare.json", report)
    (output / "compare.md").write_text(markdown(report))
    chart(report, output / "compare.png")
    return report


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std per variant, the best of each kind (chosen on validation), the paired test, and transfer."""
    variants: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = variants.setdefault(run["variant"], {"multi_task": run["multi_task"], "runs": []})
        entry["runs"].append(run)
    for entry in variants.values():
        for stage in ("valid", "test"):
            keys = set.intersection(*(set(r["metrics"][stage]) for r in entry["runs"]))
            entry[stage] = {k: _mean_std([r["metrics"][stage][k] for r in entry["runs"]]) for k in sorted(keys)}

    def best(multi: bool) -> str | None:
        ranked = [(e["valid"][KEY_METRIC]["mean"], n) for n, e in variants.items()
                  if e["multi_task"] == multi and KEY_METRIC in e["valid"]]  # fmt: skip
        return max(ranked)[1] if ranked else None

    best_multi, best_single = best(True), best(False)
    report: dict[str, Any] = {
        "protocol": "PROTOCOL.md; best configurations chosen on validation NDCG@10, test reported",
        "variants": {n: {k: v for k, v in e.items() if k != "runs"} for n, e in variants.items()},
        "runs": runs,
    }
    for key, name in (("best_multi_task", best_multi), ("best_single_task", best_single)):
        if name is not None:
            report[key] = {"variant": name, "test": {k: v["mean"] for k, v in variants[name]["test"].items()},
                           "test_std": {k: v["std"] for k, v in variants[name]["test"].items()}}  # fmt: skip
    if best_multi and best_single:
        report["significance"] = paired_test(variants[best_multi]["runs"], variants[best_single]["runs"])
    report["transfer"] = transfer(variants, best_single)
    return report


def _per_user(runs: list[dict[str, Any]], metric: str) -> np.ndarray | None:
    arrays = [load_file(r["per_user"])[f"test/{metric}"] for r in runs if r.get("per_user")]
    return np.mean(arrays, axis=0) if arrays else None


def paired_test(multi: list[dict[str, Any]], single: list[dict[str, Any]], metric: str = KEY_METRIC) -> dict:
    """Wilcoxon signed-rank and paired t-test over users on the seed-averaged per-user test metric."""
    from scipy import stats

    a, b = _per_user(multi, metric), _per_user(single, metric)
    if a is None or b is None or len(a) != len(b):
        return {}
    diff = a - b
    wilcoxon = stats.wilcoxon(a, b, zero_method="wilcox") if np.any(diff != 0) else None
    ttest = stats.ttest_rel(a, b)
    return {"metric": metric, "users": int(len(a)), "mean_difference": float(diff.mean()),
            "relative": float(diff.mean() / b.mean()) if b.mean() else math.nan,
            "wilcoxon_p": float(wilcoxon.pvalue) if wilcoxon is not None else 1.0,
            "ttest_p": float(ttest.pvalue)}  # fmt: skip


def transfer(variants: dict[str, dict[str, Any]], best_single: str | None) -> list[dict[str, Any]]:
    """Each multi-task variant against the single-task run that owns each metric: ranking metrics against the
    best single-task ranker, a task's own metrics against that task trained alone. 'hurts' = worse by more than
    one standard deviation (the larger of the two)."""
    owners: dict[str, str] = {}
    for name, entry in variants.items():
        if entry["multi_task"]:
            continue
        for metric in entry["test"]:
            if not metric.startswith(RANKING_PREFIXES):
                owners[metric] = name
    if best_single:
        for metric in variants[best_single]["test"]:
            if metric.startswith(RANKING_PREFIXES):
                owners[metric] = best_single
    rows = []
    for name, entry in variants.items():
        if not entry["multi_task"]:
            continue
        for metric, owner in sorted(owners.items()):
            if metric not in entry["test"] or metric not in variants[owner]["test"]:
                continue
            mine, theirs = entry["test"][metric], variants[owner]["test"][metric]
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            gain = sign * (mine["mean"] - theirs["mean"])
            noise = max(mine["std"], theirs["std"])
            verdict = "helps" if gain > noise else "hurts" if gain < -noise else "no clear difference"
            rows.append({"variant": name, "metric": metric, "baseline": owner, "multi": mine["mean"],
                         "single": theirs["mean"], "relative": (mine["mean"] - theirs["mean"]) / theirs["mean"]
                         if theirs["mean"] else math.nan, "verdict": verdict})  # fmt: skip
    return rows


def markdown(report: dict[str, Any]) -> str:
    variants = report["variants"]
    metrics = [m for m in ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "rmse", "mae", "micro_f1", "macro_f1", "map",
                           "auc") if any(m in v["test"] for v in variants.values())]  # fmt: skip
    lines = ["# Single-task vs multi-task (PROTOCOL.md, test set, mean ± std over seeds)", "",
             f"Seeds: {report['spec']['seeds']}. Wall time: {report.get('minutes', '?')} minutes. "
             "Best configurations chosen on validation NDCG@10.", "",
             "| variant | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]  # fmt: skip
    for name, v in variants.items():
        cells = [f"{v['test'][m]['mean']:.4f} ± {v['test'][m]['std']:.4f}" if m in v["test"] else "" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "best_multi_task" in report and "best_single_task" in report:
        bm, bs = report["best_multi_task"], report["best_single_task"]
        lines += ["", f"**Best multi-task**: {bm['variant']} (test NDCG@10 {bm['test'][KEY_METRIC]:.4f}); "
                  f"**best single-task**: {bs['variant']} ({bs['test'][KEY_METRIC]:.4f})."]  # fmt: skip
        sig = report.get("significance") or {}
        if sig:
            lines.append(f"Paired over {sig['users']} users: mean NDCG@10 difference {sig['mean_difference']:+.4f} "
                         f"({sig['relative']:+.1%}), Wilcoxon p = {sig['wilcoxon_p']:.3g}, "
                         f"paired t-test p = {sig['ttest_p']:.3g}.")  # fmt: skip
    hurts = [r for r in report["transfer"] if r["verdict"] == "hurts"]
    lines += ["", "## Where multi-task learning hurts (negative transfer)", ""]
    if hurts:
        lines += [f"- {r['variant']}: {r['metric']} {r['multi']:.4f} vs {r['single']:.4f} alone "
                  f"({r['relative']:+.1%}, against {r['baseline']})" for r in hurts]  # fmt: skip
    else:
        lines.append("- Nowhere beyond one standard deviation.")
    lines += ["", "## Relative change against single-task", "", "| variant | metric | vs | relative | verdict |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    lines += [f"| {r['variant']} | {r['metric']} | {r['baseline']} | {r['relative']:+.1%} | {r['verdict']} |"
              for r in report["transfer"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    """One panel per headline metric, one bar per variant with its std as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    metrics = [m for m in ("ndcg@10", "hr@10", "rmse", "micro_f1", "map") if any(m in v["test"] for v in
                                                                                   variants.values())]  # fmt: skip
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 0.35 * len(variants) + 1.8),
                             squeeze=False)  # fmt: skip
    for ax, metric in zip(axes[0], metrics, strict=True):
        names = [n for n, v in variants.items() if metric in v["test"]]
        means = [variants[n]["test"][metric]["mean"] for n in names]
        stds = [variants[n]["test"][metric]["std"] for n in names]
        colors = ["tab:blue" if variants[n]["multi_task"] else "tab:grey" for n in names]
        ax.barh(names, means, xerr=stds, color=colors)
        ax.set_title(f"test {metric}" + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
        ax.set_xlim(min(means) * 0.9 if metric in LOWER_IS_BETTER else 0, max(means) * 1.08)
        ax.invert_yaxis()
    fig.suptitle("single-task (grey) vs multi-task (blue), mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
