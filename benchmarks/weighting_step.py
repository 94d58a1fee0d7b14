"""Time per training step of every loss-weighting strategy, side by side, on MovieLens-100K batches.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/weighting_step.py [--steps 20] [--rounds 3] [--threads 1]

Every strategy trains the same default model (shared-bottom, interest + rating + genre, 512 positives and 8
negatives each per step) on the same batches. Strategies take turns in each round, so a busy machine slows all
of them alike; the figure is the median step time over rounds, and its ratio to `fixed`.
Writes benchmarks/results/weighting_step.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mtlrec.config import load_config
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import build_tasks
from mtlrec.train.data import train_positive_rows
from mtlrec.train.pipeline import prepare, set_threads
from mtlrec.train.trainer import Trainer
from mtlrec.weighting import WEIGHTINGS

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    config = load_config(overrides={"train.threads": args.threads})
    set_threads(config.train.threads)
    data = prepare(config, progress=False).data
    trainers = {}
    for name in WEIGHTINGS.names():
        torch.manual_seed(0)
        tasks = build_tasks(config.tasks)
        for task in tasks.values():
            task.prepare(data)
        model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                               data.categories.shape[1])  # fmt: skip
        trainers[name] = Trainer(config, model, tasks, WEIGHTINGS.get(name)(tasks), data, progress=False)
    positions = data.split.train_positions()[np.random.default_rng(0).permutation(len(data.split.train_positions()))]
    batches = [train_positive_rows(data, positions[k * 512 : (k + 1) * 512]) for k in range(args.steps)]

    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for positives in batches:
                trainer.step(trainer._row_losses(trainer.sampler.rows(positives, config.train.negatives)))
            times[name].append((time.perf_counter() - start) / len(batches))
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "steps": args.steps,
              "rounds": args.rounds, "seconds_per_step": median,
              "ratio_to_fixed": {n: m / median["fixed"] for n, m in median.items()}}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "weighting_step.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Time per training step by weighting strategy ({result['date']}, {args.threads} thread, "
             f"median of {args.rounds} rounds x {args.steps} steps)", "", "| strategy | ms / step | vs fixed |",
             "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {n} | {1000 * m:.1f} | {result['ratio_to_fixed'][n]:.2f}x |" for n, m in median.items()]
    (RESULTS / "weighting_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
