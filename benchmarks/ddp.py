"""Data-parallel training against one process on MovieLens-100K: test metrics (PROTOCOL.md) per seed and their means.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/ddp.py [--seeds 0 1 2] [--work runs/ddp]

For each seed: `mtlrec train --seed S --output WORK/p1_sS` (one process, every core) and
`mtlrec train --seed S --nproc 2 --output WORK/p2_sS` (two processes, a core each), default config otherwise; a run
whose metrics.json is already in WORK is reused. Writes benchmarks/results/ddp.json and ddp.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METRICS = ("ndcg@10", "hr@10", "mrr@10", "auc", "rmse", "micro_f1")


def run(seed: int, nproc: int, work: Path) -> dict:
    out = work / f"p{nproc}_s{seed}"
    if not (out / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "mtlrec", "train", "--seed", str(seed), "--nproc", str(nproc), "--output",
               str(out), "--no-progress"]  # fmt: skip
        print(" ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("runs/ddp"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs = {(s, p): run(s, p, args.work) for s in args.seeds for p in (1, 2)}
    mean = {p: {k: statistics.mean(runs[s, p]["test"][k] for s in args.seeds) for k in METRICS} for p in (1, 2)}
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "seeds": args.seeds,
              "runs": {f"p{p}_s{s}": {"best_epoch": m["best_epoch"], "processes": m["processes"],
                                      "test": {k: m["test"][k] for k in METRICS}} for (s, p), m in runs.items()},
              "mean": {f"p{p}": v for p, v in mean.items()},
              "relative_difference": {k: (mean[2][k] - mean[1][k]) / mean[1][k] for k in METRICS}}  # fmt: skip
    lines = [f"# Two processes against one, MovieLens-100K ({result['date']})", "",
             "Default config; test metrics (PROTOCOL.md). One process uses every core; `--nproc 2` a core each.", "",
             "| seed | processes | best epoch | " + " | ".join(METRICS) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]  # fmt: skip
    for (s, p), m in sorted(runs.items()):
        lines.append(f"| {s} | {p} | {m['best_epoch']} | " + " | ".join(f"{m['test'][k]:.4f}" for k in METRICS) + " |")
    for p in (1, 2):
        lines.append(f"| mean | {p} | | " + " | ".join(f"{mean[p][k]:.4f}" for k in METRICS) + " |")
    change = " | ".join(f"{result['relative_difference'][k]:+.1%}" for k in METRICS)
    lines.append(f"| two vs one | | | {change} |")
    seeds = " ".join(map(str, args.seeds))
    lines += ["", f"Rerun: `MTLREC_DATA_DIR=../shared/datasets python benchmarks/ddp.py --seeds {seeds}`."]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ddp.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "ddp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
