"""Sparse id-table updates (train.sparse_ids: SparseAdam on the user and item id tables) against dense AdamW on
MovieLens-100K: does the faster update cost accuracy?

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/sparse_ids.py [--seeds 0 1 2] [--work runs/sparse_ids]

Both arms: the default config, one torch thread, each seed. The sparse arm differs in ``train.sparse_ids: true``
alone: its id tables get sparse gradients, updated by SparseAdam (only the rows a step read; Adam's moments of the
other rows wait, where AdamW decays them every step); every other parameter keeps AdamW. Weight decay is 0 in both
(the default; SparseAdam has none). A run whose metrics.json is already in WORK is reused. Writes
benchmarks/results/sparse_ids.json and sparse_ids.md: validation and test metrics (PROTOCOL.md) per seed, their
means, seconds per epoch, and a paired comparison over users of the seed-averaged test NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from lora import paired  # benchmarks/lora.py
from safetensors.torch import load_file

from mtlrec.config import load_config
from mtlrec.train.pipeline import set_threads
from mtlrec.train.run import train_run

RESULTS = Path(__file__).parent / "results"
METRICS = ("ndcg@10", "hr@10", "mrr@10", "auc", "rmse", "micro_f1")
ARMS = {"dense": {}, "sparse": {"train.sparse_ids": True}}


def run(arm: str, seed: int, work: Path) -> dict:
    out = work / f"{arm}_s{seed}"
    overrides = {"data.dataset": "ml-100k", "train.seed": seed, "train.threads": 1,
                 "text.cache_dir": str(work / "cache"), **ARMS[arm]}  # fmt: skip
    if not (out / "metrics.json").is_file():
        print(f"training {out.name}", flush=True)
        train_run(load_config(overrides=overrides), out, progress=False, log=print)
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    return {"metrics": metrics, "per_user": load_file(str(out / "per_user.safetensors"))["test/ndcg@10"].numpy(),
            "epoch_train_seconds": statistics.mean(h["train_seconds"] for h in history)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/sparse_ids"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(1)

    runs = {(arm, s): run(arm, s, args.work) for s in args.seeds for arm in ARMS}
    mean = {arm: {stage: {k: statistics.mean(runs[arm, s]["metrics"][stage][k] for s in args.seeds)
                          for k in METRICS} for stage in ("valid", "test")} for arm in ARMS}  # fmt: skip
    per_user = {arm: np.mean([runs[arm, s]["per_user"] for s in args.seeds], axis=0) for arm in ARMS}
    comparison = paired(per_user["dense"], per_user["sparse"])
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "seeds": args.seeds, "threads": 1,
              "runs": {f"{arm}_s{s}": {"best_epoch": r["metrics"]["best_epoch"],
                                       "valid": {k: r["metrics"]["valid"][k] for k in METRICS},
                                       "test": {k: r["metrics"]["test"][k] for k in METRICS},
                                       "epoch_train_seconds": r["epoch_train_seconds"]}
                       for (arm, s), r in runs.items()},
              "mean": mean, "sparse_minus_dense_test_ndcg@10": comparison}  # fmt: skip

    lines = [f"# Sparse id-table updates against dense AdamW, MovieLens-100K ({result['date']})", "",
             "Default config, one torch thread; `sparse`: `train.sparse_ids: true` (SparseAdam on the user and item "
             "id tables, only the rows a step read). Weight decay 0 in both (the default). "
             "Figures: PROTOCOL.md (full ranking, 943 users).", "",
             "| arm | seed | best epoch | s/epoch | valid NDCG@10 | "
             + " | ".join(f"test {k}" for k in METRICS) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]  # fmt: skip
    for (arm, s), r in sorted(runs.items(), key=lambda x: (x[0][1], x[0][0])):
        m = r["metrics"]
        lines.append(f"| {arm} | {s} | {m['best_epoch']} | {r['epoch_train_seconds']:.1f} | "
                     f"{m['valid']['ndcg@10']:.4f} | " + " | ".join(f"{m['test'][k]:.4f}" for k in METRICS) + " |")
    for arm in ARMS:
        seconds = statistics.mean(runs[arm, s]["epoch_train_seconds"] for s in args.seeds)
        lines.append(f"| {arm} | mean | | {seconds:.1f} | {mean[arm]['valid']['ndcg@10']:.4f} | "
                     + " | ".join(f"{mean[arm]['test'][k]:.4f}" for k in METRICS) + " |")
    c = comparison
    seeds = " ".join(map(str, args.seeds))
    lines += ["", f"Sparse − dense, test NDCG@10 per user (mean over seeds): {c['mean']:+.4f} (standard error "
              f"{c['se']:.4f}, paired p = {c['p']:.2f}, {c['users']} users).", "",
              f"Rerun: `MTLREC_DATA_DIR=../shared/datasets python benchmarks/sparse_ids.py --seeds {seeds} "
              "--work FRESH_FOLDER`."]  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "sparse_ids.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "sparse_ids.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
