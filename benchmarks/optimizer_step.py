"""What one optimizer step costs as the worlds of benchmarks/suite.py grow: the user and item id tables grow with
them, and AdamW updates every row of every table at every step.

    python benchmarks/optimizer_step.py [--threads 2]

Builds the default model (interest task, 384-dim text vectors) for the synthetic worlds of 10^5, 10^6 and 10^7
interactions (users = N/20, items = max(1,000, N/50)), gives every parameter a gradient and times AdamW's step (mean
of 5 after one warm-up). Writes benchmarks/results/optimizer_step.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mtlrec.config import load_config
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import build_tasks

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = {"interest": {"weight": 1.0}}
    config = load_config(overrides={"tasks": tasks})
    lines = [f"# One AdamW step against world size ({time.strftime('%Y-%m-%d %H:%M')}, {args.threads} threads)", "",
             "| interactions | users | items | parameters | AdamW step ms |", "| --- | --- | --- | --- | --- |"]
    for n in (10**5, 10**6, 10**7):
        users, items = n // 20, max(1000, n // 50)
        model = MultiTaskModel(config.model, build_tasks(tasks), users, torch.zeros(items, 384), 0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        start = time.perf_counter()
        for _ in range(5):
            optimizer.step()
        ms = 1000 * (time.perf_counter() - start) / 5
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"| {n:,} | {users:,} | {items:,} | {params / 1e6:.1f} M | {ms:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", "Rerun: `python benchmarks/optimizer_step.py`."]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "optimizer_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
