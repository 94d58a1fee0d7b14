"""Cold-start items on MovieLens-100K: `mtlrec train --set data.cold_items=0.1`, per seed, beside content k-NN,
random and most-popular through the same ranking code (README, "Cold-start items"; src/mtlrec/eval/cold_start.py).

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/cold_items.py [--seeds 0 1 2] [--threads 1] [--share 0.1]

A seeded 10% of the items (seed [data.split_seed = 0, 1]: the same items for every training seed) lose all their
train interactions; the users whose test item is one of them are ranked over all items. Writes
benchmarks/results/cold_items.json and cold_items.md. Content k-NN and most-popular are deterministic, so they are
the same for every seed; the random ranker is drawn with the training seed; `chance` is its exact expectation.
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

METHODS = ["mtlrec", "content_knn", "random", "most_popular", "chance"]
KEYS = ["hr@10", "ndcg@10", "hr@20", "ndcg@20"]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    parser.add_argument("--share", type=float, default=0.1, help="share of items held out of training")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        overrides = {"train.seed": seed, "train.threads": args.threads, "data.cold_items": args.share}
        config = load_config(overrides=overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = train_run(config, Path(tmp) / "run", progress=False, log=print)
            wall = time.perf_counter() - start
        cold = metrics["cold_items"]
        runs.append({"seed": seed, "wall_seconds": round(wall, 1), "best_epoch": metrics["best_epoch"],
                     "evaluated_users": metrics["evaluated_users"], "cold_items": cold,
                     "test": metrics["test"]})  # fmt: skip
        print(f"seed {seed}: cold users {cold['users']}, hr@10 mtlrec {cold['mtlrec']['hr@10']:.4f} "
              f"content_knn {cold['content_knn']['hr@10']:.4f} chance {cold['chance']['hr@10']:.4f}  "
              f"(all users: ndcg@10 {metrics['test']['ndcg@10']:.4f})  wall {wall:.0f}s", flush=True)  # fmt: skip

    summary = {
        method: {k: (statistics.mean(r["cold_items"][method][k] for r in runs),
                     statistics.pstdev(r["cold_items"][method][k] for r in runs)) for k in KEYS}
        for method in METHODS
    }  # fmt: skip
    overall = {k: (statistics.mean(r["test"][k] for r in runs), statistics.pstdev(r["test"][k] for r in runs))
               for k in ("hr@10", "ndcg@10")}  # fmt: skip
    first = runs[0]["cold_items"]
    result = {"date": time.strftime("%Y-%m-%d"), "mtlrec": __version__, "python": platform.python_version(),
              "machine": f"{platform.machine()}, {args.threads or 'all'} torch threads",
              "protocol": "README 'Cold-start items' (PROTOCOL.md full ranking, test)", "share": args.share,
              "cold_items": first["items"], "cold_users": first["users"], "runs": runs, "mean_std": summary,
              "all_users_mean_std": overall}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "cold_items.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Cold-start items, MovieLens-100K ({result['date']}, seeds {args.seeds})", "",
             f"{first['items']} items ({args.share:.0%}, seed [0, 1]) held out of training; {first['users']} users "
             "whose test item is one of them, each ranked over all 1,682 items (train items and the validation "
             "item excluded, ties at expectation). Mean ± std over training seeds.", "",
             "| method | HR@10 | NDCG@10 | HR@20 | NDCG@20 |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for method in METHODS:
        cells = " | ".join(f"{summary[method][k][0]:.4f} ± {summary[method][k][1]:.4f}" for k in KEYS)
        lines.append(f"| {method} | {cells} |")
    lines += ["", f"All {runs[0]['evaluated_users']} test users of the same "
              f"runs: NDCG@10 {overall['ndcg@10'][0]:.4f} ± {overall['ndcg@10'][1]:.4f}, HR@10 "
              f"{overall['hr@10'][0]:.4f} ± {overall['hr@10'][1]:.4f}.",
              f"Wall time per run (s): {', '.join(str(r['wall_seconds']) for r in runs)}."]  # fmt: skip
    (args.output / "cold_items.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
