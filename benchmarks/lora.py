"""Frozen language model against LoRA fine-tuning (text.lora) on MovieLens-100K, CPU, one torch thread.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/lora.py [--epochs 4] [--seed 0] [--work runs/lora]

Both arms share one short config: the default model and tasks, ``train.epochs`` = ``--epochs`` with patience as
long (every epoch runs; the best epoch by validation NDCG@10 is kept, as always), ``train.seed`` = ``--seed``,
``train.threads`` 1. The LoRA arm adds adapters of rank ``--rank`` on the attention projections (query, key,
value) of every layer of all-MiniLM-L6-v2, texts cut at ``--max-length`` tokens (MovieLens-100K's item texts have
at most 32, so nothing is cut at 32) and ``--items-per-step`` items re-encoded with gradient per step (the others
read their latest vectors). The frozen arm reads the cached vectors. A run whose metrics.json is already in WORK
is reused. Writes benchmarks/results/lora.json and lora.md: test metrics (PROTOCOL.md), seconds per epoch, and a
paired comparison of the per-user test NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from mtlrec.config import load_config
from mtlrec.train.pipeline import prepare, set_threads
from mtlrec.train.run import train_run

RESULTS = Path(__file__).parent / "results"
METRICS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20", "auc", "rmse", "micro_f1", "map")


def arms(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    shared = {"data.dataset": "ml-100k", "train.seed": args.seed, "train.epochs": args.epochs,
              "train.patience": args.epochs, "train.threads": 1,
              "text.cache_dir": str(args.work / "cache")}  # fmt: skip
    lora = {"text.lora.rank": args.rank, "text.lora.alpha": 2.0 * args.rank, "text.lora.lr": args.lora_lr,
            "text.lora.max_length": args.max_length, "text.lora.items_per_step": args.items_per_step}  # fmt: skip
    return {"frozen": shared, "lora": {**shared, **lora}}


def run(name: str, overrides: dict[str, object], work: Path) -> dict:
    out = work / name
    reused = (out / "metrics.json").is_file()
    if not reused:
        print(f"training {name}: {overrides}", flush=True)
        train_run(load_config(overrides=overrides), out, progress=False, log=print)
    metrics = json.loads((out / "metrics.json").read_text())
    if (out / "run.json").is_file():  # times live there (metrics.json holds what config and seed determine)
        metrics = {**metrics, **json.loads((out / "run.json").read_text())}
    history = json.loads((out / "history.json").read_text())
    per_user = load_file(str(out / "per_user.safetensors"))
    return {"config": overrides, "metrics": metrics, "history": history, "reused": reused,
            "per_user_ndcg10": per_user["test/ndcg@10"].numpy()}  # fmt: skip


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """b - a per user: mean, its standard error and the two-sided p-value of a paired t-test (normal approximation,
    943 users)."""
    diff = b.astype(np.float64) - a.astype(np.float64)
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))
    p = math.erfc(abs(mean / se) / math.sqrt(2)) if se > 0 else 1.0
    return {"mean": mean, "se": se, "p": p, "users": len(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lora-lr", type=float, default=5e-4)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--items-per-step", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("runs/lora"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    set_threads(1)

    configs = arms(args)
    start = time.perf_counter()
    prepare(load_config(overrides=configs["frozen"]), progress=False, log=lambda _: None)  # warm the vector cache
    runs = {name: run(name, overrides, args.work) for name, overrides in configs.items()}
    rows = {}
    for name, r in runs.items():
        history, m = r["history"], r["metrics"]
        rows[name] = {"test": {k: m["test"][k] for k in METRICS}, "valid_ndcg@10": m["valid"]["ndcg@10"],
                      "best_epoch": m["best_epoch"], "epochs": len(history),
                      "epoch_train_seconds": statistics.mean(h["train_seconds"] for h in history),
                      "epoch_seconds": statistics.mean(h["seconds"] for h in history),
                      "train_seconds": m["train_seconds"], "encoder": json.loads(
                          (args.work / name / "meta.json").read_text())["encoder"]}  # fmt: skip
    comparison = paired(runs["frozen"]["per_user_ndcg10"], runs["lora"]["per_user_ndcg10"])
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "seed": args.seed, "threads": 1,
              "machine": f"{platform.machine()}, torch {torch.__version__}", "configs": configs, "arms": rows,
              "lora_minus_frozen_ndcg@10": comparison,
              "wall_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip

    lines = [f"# Frozen language model against LoRA fine-tuning, MovieLens-100K ({result['date']})", "",
             f"Seed {args.seed}, one torch thread, CPU. Both arms: default model and tasks, {args.epochs} epochs "
             f"(patience {args.epochs}: every epoch runs, the best by validation NDCG@10 is kept). LoRA: rank "
             f"{args.rank}, alpha {2 * args.rank}, query/key/value of all 6 layers of all-MiniLM-L6-v2, lr "
             f"{args.lora_lr:g}, texts cut at {args.max_length} tokens (none is longer), {args.items_per_step} "
             "items re-encoded with gradient per step (the others read their latest vectors), the catalogue "
             "re-encoded once per evaluation. Test figures: PROTOCOL.md (full ranking, 943 users).", "",
             "| arm | NDCG@10 | HR@10 | MRR@10 | NDCG@20 | HR@20 | AUC | RMSE | micro-F1 | mAP | best epoch "
             "| s/epoch (train) | s/epoch (+ validation) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, row in rows.items():
        figures = " | ".join(f"{row['test'][k]:.4f}" for k in METRICS)
        lines.append(f"| {name} | {figures} | {row['best_epoch']} of {row['epochs']} | "
                     f"{row['epoch_train_seconds']:.1f} | {row['epoch_seconds']:.1f} |")  # fmt: skip
    c = comparison
    fresh = "" if any(r["reused"] for r in runs.values()) else f" ({result['wall_seconds'] / 60:.0f} min here)"
    lines += ["", f"LoRA − frozen, test NDCG@10 per user: {c['mean']:+.4f} (standard error {c['se']:.4f}, paired "
              f"p = {c['p']:.2f}, {c['users']} users).", "",
              f"Rerun: `MTLREC_DATA_DIR=../shared/datasets python benchmarks/lora.py --epochs {args.epochs} "
              f"--seed {args.seed} --work FRESH_FOLDER`{fresh}."]  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lora.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "lora.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
