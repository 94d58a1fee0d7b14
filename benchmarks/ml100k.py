"""Default `mtlrec train` on MovieLens-100K: test metrics (PROTOCOL.md) and wall time, beside most-popular.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/ml100k.py [--seeds 0 1 2] [--threads 2]

Writes benchmarks/results/ml100k.json and ml100k.md. Each seed is a full default run, language model included.
The embedding cache starts empty (a temporary folder), so the first seed's wall time includes loading the
language model and encoding every item text; later seeds find the cache warm and encode nothing.
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
from mtlrec.data import load_dataset
from mtlrec.data.splits import temporal_leave_one_out
from mtlrec.eval.baselines import most_popular
from mtlrec.eval.evaluator import rank_users
from mtlrec.train.run import train_run

KEYS = ["hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "rmse", "mae", "micro_f1", "macro_f1", "map"]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs = []
    cache = tempfile.TemporaryDirectory()
    for seed in args.seeds:
        overrides = {"train.seed": seed, "train.threads": args.threads, "text.cache_dir": cache.name}
        config = load_config(overrides=overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            metrics = train_run(config, Path(tmp) / "run", progress=False, log=print)
            wall = time.perf_counter() - start
        runs.append(
            {
                "seed": seed,
                "wall_seconds": round(wall, 1),
                "best_epoch": metrics["best_epoch"],
                "texts_encoded": metrics["texts_encoded"],
                "test": metrics["test"],
                "valid": metrics["valid"],
            }
        )
        print(f"seed {seed}: test ndcg@10 {metrics['test']['ndcg@10']:.4f} hr@10 {metrics['test']['hr@10']:.4f} "
              f"rmse {metrics['test']['rmse']:.4f}  wall {wall:.0f}s", flush=True)  # fmt: skip
    cache.cleanup()

    split = temporal_leave_one_out(load_dataset("ml-100k"))
    pop = {k: float(v.mean()) for k, v in rank_users(most_popular(split), split, "test").items()}
    summary = {k: (statistics.mean(r["test"][k] for r in runs), statistics.pstdev(r["test"][k] for r in runs))
               for k in KEYS}  # fmt: skip
    result = {"date": time.strftime("%Y-%m-%d"), "mtlrec": __version__, "python": platform.python_version(),
              "machine": f"{platform.machine()}, {args.threads or 'all'} torch threads", "protocol": "PROTOCOL.md",
              "runs": runs, "mean_std": summary, "most_popular": pop}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ml100k.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# MovieLens-100K, default `mtlrec train` ({result['date']}, seeds {args.seeds})", "",
             "| metric | mtlrec (mean ± std) | most popular |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {k} | {m:.4f} ± {s:.4f} | {pop[k]:.4f} |" if k in pop else f"| {k} | {m:.4f} ± {s:.4f} | — |"
              for k, (m, s) in summary.items()]  # fmt: skip
    lines += ["", f"Wall time per run (s): {', '.join(str(r['wall_seconds']) for r in runs)}; "
              f"texts encoded per run: {', '.join(str(r['texts_encoded']) for r in runs)}."]  # fmt: skip
    (args.output / "ml100k.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
