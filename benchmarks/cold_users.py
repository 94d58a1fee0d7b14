"""Cold-start users on MovieLens-100K: `mtlrec train --set data.cold_users=0.1`, per seed, beside most-popular and
content k-NN through the same ranking code (README, "Cold-start users"; src/mtlrec/eval/cold_users.py).

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/cold_users.py [--seeds 0 1 2] [--threads 1] [--share 0.1]

A seeded 10% of the users (seed [data.split_seed = 0, 2]: the same users for every training seed) lose all their
interactions to training and to the normal evaluation. Each is given their first 3 interactions in time order as
liked items, as `Recommender.recommend_new_user(liked=...)` would, and every other item is ranked against the rest
of their items (HR, NDCG, Recall at 10 and 20; ties at their expectation). Writes benchmarks/results/cold_users.json
and cold_users.md. Most-popular and content k-NN are deterministic, so they are the same for every seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from mtlrec import __version__
from mtlrec.config import load_config
from mtlrec.train.run import train_run

METHODS = ["mtlrec", "most_popular", "content_knn"]
KEYS = ["hr@10", "ndcg@10", "recall@10", "hr@20", "ndcg@20", "recall@20", "next/hr@10", "next/ndcg@10"]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    parser.add_argument("--share", type=float, default=0.1, help="share of users held out of training")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        overrides = {"train.seed": seed, "train.threads": args.threads, "data.cold_users": args.share}
        config = load_config(overrides=overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = train_run(config, Path(tmp) / "run", progress=False, log=print)
            wall = time.perf_counter() - start
        cold = metrics["cold_users"]
        runs.append({"seed": seed, "wall_seconds": round(wall, 1), "best_epoch": metrics["best_epoch"],
                     "evaluated_users": metrics["evaluated_users"], "cold_users": cold,
                     "test": metrics["test"]})  # fmt: skip
        print(f"seed {seed}: {cold['users']} cold users, ndcg@10 mtlrec {cold['mtlrec']['ndcg@10']:.4f} "
              f"most_popular {cold['most_popular']['ndcg@10']:.4f} content_knn {cold['content_knn']['ndcg@10']:.4f}"
              f"  (other users: ndcg@10 {metrics['test']['ndcg@10']:.4f})  wall {wall:.0f}s", flush=True)  # fmt: skip

    summary = {
        method: {k: (statistics.mean(r["cold_users"][method][k] for r in runs),
                     statistics.pstdev(r["cold_users"][method][k] for r in runs)) for k in KEYS}
        for method in METHODS
    }  # fmt: skip
    ratio = [r["cold_users"]["mtlrec"]["ndcg@10"] / r["cold_users"]["most_popular"]["ndcg@10"] for r in runs]
    next_ratio = [r["cold_users"]["mtlrec"]["next/ndcg@10"] / r["cold_users"]["most_popular"]["next/ndcg@10"]
                  for r in runs]  # fmt: skip
    overall = {k: (statistics.mean(r["test"][k] for r in runs), statistics.pstdev(r["test"][k] for r in runs))
               for k in ("hr@10", "ndcg@10")}  # fmt: skip
    first = runs[0]["cold_users"]
    result = {"date": time.strftime("%Y-%m-%d"), "mtlrec": __version__, "python": platform.python_version(),
              "machine": f"{platform.machine()}, {args.threads or 'all'} torch threads",
              "protocol": "README 'Cold-start users' (first 3 interactions liked, the rest relevant, full ranking, "
                          "ties at expectation)", "share": args.share,
              "held_out_users": first["held_out"], "cold_users": first["users"], "liked": first["liked"],
              "mean_relevant": first["mean_relevant"], "runs": runs, "mean_std": summary,
              "ndcg@10_over_most_popular": ratio, "next/ndcg@10_over_most_popular": next_ratio,
              "other_users_mean_std": overall}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "cold_users.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Cold-start users, MovieLens-100K ({result['date']}, seeds {args.seeds})", "",
             f"{first['held_out']} users ({args.share:.0%}, seed [0, 2]) held out of training; {first['users']} of "
             f"them evaluated, each given their first {first['liked']} interactions in time order as liked items and "
             f"ranked over every other item against the rest of their items ({first['mean_relevant']:.1f} on "
             "average; ties at expectation). `next/`: the single item that came right after the liked ones, as "
             "PROTOCOL.md measures a known user. Mean ± std over training seeds.", "",
             "| method | " + " | ".join(k.replace("hr", "HR").replace("ndcg", "NDCG").replace("recall", "Recall")
                                     for k in KEYS) + " |",
             "| --- |" + " --- |" * len(KEYS)]  # fmt: skip
    for method in METHODS:
        cells = " | ".join(f"{summary[method][k][0]:.4f} ± {summary[method][k][1]:.4f}" for k in KEYS)
        lines.append(f"| {method} | {cells} |")
    lines += ["", f"mtlrec NDCG@10 / most-popular NDCG@10 per seed: {', '.join(f'{x:.2f}' for x in ratio)}; "
              f"on the next item: {', '.join(f'{x:.2f}' for x in next_ratio)}.",
              f"The other {runs[0]['evaluated_users']} test users of the same runs (PROTOCOL.md): NDCG@10 "
              f"{overall['ndcg@10'][0]:.4f} ± {overall['ndcg@10'][1]:.4f}, HR@10 "
              f"{overall['hr@10'][0]:.4f} ± {overall['hr@10'][1]:.4f}.",
              f"Wall time per run (s): {', '.join(str(r['wall_seconds']) for r in runs)}."]  # fmt: skip
    (args.output / "cold_users.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
