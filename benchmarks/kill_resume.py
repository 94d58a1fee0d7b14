"""Kill and resume: SIGKILL `mtlrec train` at random moments on MovieLens-100K, resume it, and compare its
metrics.json with an uninterrupted run's, byte for byte.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/kill_resume.py [--trials 20] [--seed 0]

The short config: the default model and tasks, 2 epochs, a checkpoint every 25 steps (and at each epoch's end), one
torch thread, language-model vectors from the embedding cache (filled by the reference run). Each trial starts the
run afresh, kills it (SIGKILL: no chance to clean up) at a moment drawn uniformly between the reference run's first
checkpoint and its end, resumes it with `mtlrec train --resume`, and compares. A kill that lands after the run
finished (or had written its metrics and removed its checkpoint) is drawn again. Writes
benchmarks/results/kill_resume.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CHECKPOINT = "checkpoint.safetensors"
FLAGS = ["--dataset", "ml-100k", "--epochs", "2", "--set", "train.patience=2", "--set", "train.checkpoint_every=25",
         "--threads", "1", "--seed", "0", "--no-progress"]  # fmt: skip


def train(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtlrec", "train", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="Seeds the kill moments.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill_resume_") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "MTLREC_CACHE_DIR": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
        reference = tmp / "reference"
        t0 = time.monotonic()
        proc = train([*FLAGS, "--output", str(reference)], env)
        first = None
        while proc.poll() is None:
            if first is None and (reference / CHECKPOINT).exists():
                first = time.monotonic() - t0
            time.sleep(0.02)
        if proc.returncode != 0:
            sys.exit(f"the reference run failed (exit {proc.returncode}): run `mtlrec train {' '.join(FLAGS)}` "
                     "to see why")
        # the second run is the one timed: the first also filled the embedding cache
        shutil.rmtree(reference)
        t0 = time.monotonic()
        proc, first = train([*FLAGS, "--output", str(reference)], env), None
        while proc.poll() is None:
            if first is None and (reference / CHECKPOINT).exists():
                first = time.monotonic() - t0
            time.sleep(0.02)
        end = time.monotonic() - t0
        whole = (reference / "metrics.json").read_bytes()
        print(f"reference: first checkpoint at {first:.1f} s, finished at {end:.1f} s", flush=True)
        trials = []
        while len(trials) < args.trials:
            out = tmp / f"trial{len(trials)}"
            shutil.rmtree(out, ignore_errors=True)
            kill_at = rng.uniform(first, end)
            t0 = time.monotonic()
            proc = train([*FLAGS, "--output", str(out)], env)
            while proc.poll() is None and time.monotonic() - t0 < kill_at:
                time.sleep(0.01)
            if proc.poll() is not None:  # finished before the kill: draw again
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if (out / "metrics.json").exists() and not (out / CHECKPOINT).exists():  # its work was done: draw again
                continue
            where = "no checkpoint yet"
            if (out / CHECKPOINT).exists():
                from mtlrec.train.checkpoint import load_checkpoint

                position = load_checkpoint(out / CHECKPOINT)["position"]
                where = f"epoch {position['epoch']}, step {position['step']}"
            resumed = subprocess.run([sys.executable, "-m", "mtlrec", "train", "--resume", str(out), "--no-progress"],
                                     env=env, capture_output=True, text=True)  # fmt: skip
            same = resumed.returncode == 0 and (out / "metrics.json").read_bytes() == whole
            trials.append({"killed_at_s": round(kill_at, 2), "resumed_from": where, "exit": resumed.returncode,
                           "identical": same})  # fmt: skip
            print(f"trial {len(trials):2d}: killed at {kill_at:5.1f} s ({where}), resumed: "
                  f"{'identical metrics' if same else 'DIFFERENT'}", flush=True)  # fmt: skip
            if resumed.returncode != 0:
                print(resumed.stderr[-2000:], flush=True)
    ok = sum(t["identical"] for t in trials)
    result = {"date": time.strftime("%Y-%m-%d"), "flags": FLAGS, "seed": args.seed,
              "reference_seconds": round(end, 1), "first_checkpoint_s": round(first, 1), "identical": ok,
              "trials": trials}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kill_resume.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Kill and resume ({result['date']})", "",
             f"`mtlrec train {' '.join(FLAGS)}` on MovieLens-100K, SIGKILLed at a random moment between the first "
             f"checkpoint ({first:.1f} s) and the end ({end:.1f} s) of an uninterrupted run, then `--resume`d.", "",
             f"**{ok} of {len(trials)}** resumed runs wrote a metrics.json identical (byte for byte) to the "
             "uninterrupted run's.", "", "| trial | killed at s | resumed from | identical |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {k + 1} | {t['killed_at_s']} | {t['resumed_from']} | {'yes' if t['identical'] else 'NO'} |"
              for k, t in enumerate(trials)]  # fmt: skip
    (RESULTS / "kill_resume.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:5]))


if __name__ == "__main__":
    main()
