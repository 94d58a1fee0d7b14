"""Last.fm-2K: the multi-task model with vs. without the social task and friend attention, beside implicit ALS
and most-popular, all through the same evaluation code.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/lastfm.py [--seeds 0 1 2] [--jobs 2]

Split: seeded random leave-one-out (split seed 0; Last.fm has no timestamps), otherwise PROTOCOL.md: full ranking
of all 17,632 artists, train items excluded, ties at expectation. Both model variants share every setting (config
below) except the social parts; each seed is one run per variant, selected on validation NDCG@10. ALS (the
`implicit` package, confidence from the listening counts) is tuned on validation NDCG@10 over a small grid and
read once on test. Writes benchmarks/results/lastfm.{json,md}: test mean ± std, the relative change, and a paired
test over users (seed-averaged per-user NDCG@10).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mtlrec import __version__
from mtlrec.config import Config, load_config
from mtlrec.data import load_dataset
from mtlrec.data.splits import SPLIT_DESCRIPTIONS, leave_one_out
from mtlrec.eval.baselines import most_popular, tune_als
from mtlrec.eval.compare import paired_test
from mtlrec.eval.evaluator import rank_users

RESULTS = Path(__file__).parent / "results"
KEYS = ["ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20", "auc", "social_auc", "micro_f1", "map"]
# A catalogue of 17.6K artists makes full ranking per epoch the main cost: one shared layer, and early stopping
# on 500 sampled validation users (the reported figures rank every user), keep it affordable on 2 cores.
BASE = {"data.dataset": "lastfm-2k", "model.hidden": [64], "eval.select_users": 500, "train.threads": 1}
TASKS = {"interest": {"weight": 1.0}, "genre": {"weight": 0.2}}
VARIANTS = {
    "without social": ({}, TASKS),
    "with social task + friend attention": ({"model.friends": 20}, {**TASKS, "social": {"weight": 0.5}}),
}
ALS_GRID = {"factors": [64, 128], "regularization": [0.01, 0.1], "alpha": [1.0, 10.0]}


def variant_config(name: str, seed: int) -> Config:
    overrides, tasks = VARIANTS[name]
    config = load_config(overrides={**BASE, **overrides, "train.seed": seed})
    return config.with_overrides({"tasks": tasks})


def train_one(name: str, seed: int, run_dir: str) -> dict[str, Any]:
    from mtlrec.train.run import train_run

    start = time.perf_counter()
    metrics = train_run(variant_config(name, seed), Path(run_dir), progress=False, log=lambda _: None)
    return {"variant": name, "seed": seed, "run_dir": run_dir, "wall_seconds": round(time.perf_counter() - start, 1),
            "best_epoch": metrics["best_epoch"], "test": metrics["test"], "valid": metrics["valid"]}  # fmt: skip


def mean_std(runs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    keys = [k for k in KEYS if all(k in r["test"] for r in runs)]
    return {k: (statistics.mean(r["test"][k] for r in runs), statistics.pstdev(r["test"][k] for r in runs))
            for k in keys}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one torch thread each)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--runs", type=Path, default=None, help="keep run directories here (default: temporary)")
    args = parser.parse_args()
    started = time.perf_counter()
    runs_root = args.runs or Path(tempfile.mkdtemp(prefix="lastfm-runs-"))
    load_config(overrides=BASE)  # fail on a bad config before any work
    dataset = load_dataset("lastfm-2k")
    split = leave_one_out(dataset, 0)

    # Encode the item texts once (the usual embedding cache), so parallel runs all read a warm cache.
    from mtlrec.train.pipeline import prepare

    prepare(variant_config("without social", args.seeds[0]), progress=True)
    todo = [(name, seed) for seed in args.seeds for name in VARIANTS]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one, name, seed, str(runs_root / f"{name.split()[0]}-s{seed}"))
                   for name, seed in todo]  # fmt: skip
        runs = []
        for future in futures:
            runs.append(future.result())
            r = runs[-1]
            print(f"{r['variant']:<38} seed {r['seed']}: test ndcg@10 {r['test']['ndcg@10']:.4f} "
                  f"({r['wall_seconds']:.0f}s, best epoch {r['best_epoch']})", flush=True)  # fmt: skip

    # ALS on the listening counts, tuned on validation only.
    weights = dataset.interactions["weight"].to_numpy(dtype=np.float64)[split.rows]
    grid_results: list[dict[str, Any]] = []
    als = tune_als(split, ALS_GRID, results=grid_results, log=print, weights=weights, confidence="log",
                   iterations=15, seed=0)  # fmt: skip
    baselines = {"implicit ALS (tuned on valid)": als, "most popular": most_popular(split)}
    baseline_test = {name: {k: float(v.mean()) for k, v in rank_users(fn, split, "test").items()}
                     for name, fn in baselines.items()}  # fmt: skip

    by_variant = {name: [r for r in runs if r["variant"] == name] for name in VARIANTS}
    summary = {name: mean_std(rs) for name, rs in by_variant.items()}
    without, with_social = by_variant["without social"], by_variant["with social task + friend attention"]
    paired = paired_test([{"per_user": f"{r['run_dir']}/per_user.safetensors"} for r in with_social],
                         [{"per_user": f"{r['run_dir']}/per_user.safetensors"} for r in without])  # fmt: skip
    result = {"date": time.strftime("%Y-%m-%d"), "mtlrec": __version__, "python": platform.python_version(),
              "split": SPLIT_DESCRIPTIONS["random"] + ", split seed 0", "seeds": args.seeds, "base": BASE,
              "variants": {k: {"overrides": v[0], "tasks": v[1]} for k, v in VARIANTS.items()},
              "runs": runs, "mean_std": summary, "paired_with_vs_without": paired, "baselines": baseline_test,
              "als_grid": grid_results, "minutes": round((time.perf_counter() - started) / 60, 1)}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lastfm.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (args.output / "lastfm.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    summary, baselines = result["mean_std"], result["baselines"]
    keys = [k for k in KEYS if any(k in s for s in summary.values())]
    lines = [f"# Last.fm-2K ({result['date']}): {result['split']}; seeds {result['seeds']}; "
             f"{result['minutes']} minutes", "",
             "| ranker | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]  # fmt: skip
    for name, stats in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{stats[k][0]:.4f} ± {stats[k][1]:.4f}" if k in stats else ""
                                                  for k in keys) + " |")  # fmt: skip
    for name, values in baselines.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" if k in values else "" for k in keys) + " |")
    p = result["paired_with_vs_without"]
    if p:
        lines += ["", f"With vs. without social, paired over {p['users']} users (seed-averaged NDCG@10): "
                  f"{p['mean_difference']:+.4f} ({p['relative']:+.1%}), Wilcoxon p = {p['wilcoxon_p']:.3g}, "
                  f"paired t-test p = {p['ttest_p']:.3g}."]  # fmt: skip
    best = max(result["als_grid"], key=lambda r: r["ndcg@10"]) if result["als_grid"] else None
    if best:
        lines += ["", f"ALS grid (validation NDCG@10): best {best}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
