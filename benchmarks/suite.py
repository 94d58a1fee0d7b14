"""The benchmark suite: how mtlrec's cost grows with its work, in one command.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/suite.py [--sizes 100000 1000000 10000000] [--threads 0]

1. Training cost vs size: synthetic worlds (`mtlrec data synth`: users = N/20, items = max(1,000, N/50)) of N
   interactions; for each, in its own process, one training epoch of the default shared-bottom model on the
   interest task (hashing text vectors, computed before training like the embedding cache's), timed alone; peak
   memory is that process's peak resident set (generation, loading and training included).
2. Training throughput on MovieLens-100K: one epoch of the default config with the language-model vectors from the
   embedding cache (warmed first), in (user, item) rows the loss sees per second (positives and sampled negatives)
   and in train interactions per second.
3. Language-model encoding: mtlrec's encoder with an empty cache against plain sentence-transformers
   `SentenceTransformer.encode` on the same ML-100K item texts, same batch size, alternated three times (best of each).
4. Full-ranking evaluation: every ML-100K test user against every item (PROTOCOL.md), after that epoch; and the whole
   evaluation with every task's own metrics.
5. Recommendation latency: `Recommender.recommend` for one user (p50, p99 over 300 users) and `recommend_many`
   for 8 at once, without the score cache.

Writes benchmarks/results/suite-DATE.json, suite.md and suite.png (cost vs size).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = {"ml100k_rows_per_s": 50_000, "encode_ratio": 0.90, "eval_seconds": 1.0, "epoch_ratio_10x": 12.0,
           "peak_gib_1e7": 6.0}  # fmt: skip


def peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20 if sys.platform != "darwin" else kib / 2**30


def build_trainer(config) -> tuple[dict, object]:  # type: ignore[no-untyped-def]
    """prepare (timed) and a Trainer ready for its first epoch: (figures, trainer)."""
    import torch

    from mtlrec.models.model import MultiTaskModel
    from mtlrec.train.pipeline import prepare, set_threads
    from mtlrec.train.run import check_config
    from mtlrec.train.trainer import Trainer
    from mtlrec.weighting import WEIGHTINGS

    tasks = check_config(config)
    threads = set_threads(config.train.threads)
    t0 = time.perf_counter()
    data = prepare(config, progress=False, log=lambda _: None).data
    prepare_s = time.perf_counter() - t0
    for task in tasks.values():
        task.prepare(data)
    torch.manual_seed(0)
    model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                           data.categories.shape[1])  # fmt: skip
    weighting = WEIGHTINGS.get(config.train.weighting)(tasks)
    trainer = Trainer(config, model, tasks, weighting, data, progress=False, log=lambda _: None)
    model.train()
    return {"threads": threads, "prepare_s": round(prepare_s, 2),
            "train_interactions": len(data.split.train_positions()), "users": data.split.n_users,
            "items": data.split.n_items}, trainer  # fmt: skip


def epoch_figures(figures: dict, seconds: float, rows: int) -> dict:
    return {**figures, "epoch_s": round(seconds, 2), "rows": rows, "rows_per_s": round(rows / seconds),
            "interactions_per_s": round(figures["train_interactions"] / seconds)}  # fmt: skip


def train_one_epoch(config, tmp: Path) -> tuple[dict, object]:  # type: ignore[no-untyped-def]
    """prepare + one timed epoch: (figures, trainer)."""
    figures, trainer = build_trainer(config)
    t0 = time.perf_counter()
    trainer._epoch(1)
    return epoch_figures(figures, time.perf_counter() - t0, trainer.rows_seen), trainer


def synthetic_config(n: int, tmp: Path, threads: int, sparse_ids: bool):  # type: ignore[no-untyped-def]
    """The world of N interactions (generated into ``tmp``; seconds it took) and the config that trains on it."""
    from mtlrec.config import load_config
    from mtlrec.data.synth import synth_world

    t0 = time.perf_counter()
    paths = synth_world(max(2, n // 20), max(1000, n // 50), n, friends=0, seed=0).write(tmp / "world")
    synth_s = time.perf_counter() - t0
    config = load_config(overrides={
        "data.dataset": "generic", "data.data_path": str(paths["interactions"]),
        "data.items_path": str(paths["items"]), "text.encoder": "hashing", "text.dim": 384,
        "text.cache_dir": str(tmp / "cache"), "tasks": {"interest": {"weight": 1.0}},
        "train.threads": threads, "train.sparse_ids": sparse_ids})  # fmt: skip
    return config, synth_s


def child_scaling(n: int, threads: int, sparse_ids: bool = True) -> dict:
    """Part 1 for one size, in this (child) process."""
    with tempfile.TemporaryDirectory(prefix="suite_") as tmp_name:
        config, synth_s = synthetic_config(n, Path(tmp_name), threads, sparse_ids)
        figures, _ = train_one_epoch(config, Path(tmp_name))
    return {"interactions": n, "sparse_ids": sparse_ids, "synth_s": round(synth_s, 2), **figures,
            "peak_rss_gib": round(peak_rss_gib(), 3)}  # fmt: skip


def child_companion(sizes: list[int], threads: int, sparse_ids: bool, stop: Path) -> list[dict]:
    """The smaller sizes, side by side with the largest (--paired): their epochs in turn, again and again, until
    ``stop`` exists (the largest finished); each size's median epoch, measured under the same load."""
    with tempfile.TemporaryDirectory(prefix="suite_") as tmp_name:
        built = {}
        for n in sizes:
            config, synth_s = synthetic_config(n, Path(tmp_name) / str(n), threads, sparse_ids)
            figures, trainer = build_trainer(config)
            built[n] = ({"interactions": n, "sparse_ids": sparse_ids, "synth_s": round(synth_s, 2), **figures},
                        trainer, [])  # fmt: skip
        epoch = 0
        while epoch == 0 or not stop.exists():
            epoch += 1
            for _, trainer, runs in built.values():
                t0 = time.perf_counter()
                trainer._epoch(epoch)
                runs.append((time.perf_counter() - t0, trainer.rows_seen))
    # the peak memory of this process holds all the smaller worlds at once: not a figure of any one of them
    return [{**epoch_figures(figures, statistics.median(s for s, _ in runs), runs[0][1]), "epochs_timed": len(runs),
             "peak_rss_gib": None} for figures, _, runs in built.values()]  # fmt: skip


def scaling(sizes: list[int], threads: int, sparse_ids: bool = True, paired: bool = False) -> list[dict]:
    """Part 1: each size in its own process, one after the other; ``paired``: the largest in one process while
    another times the smaller ones again and again, so all of them see the same load (a noisy machine's
    slow minutes fall on both sides of the ratio)."""
    flags = ["--threads", str(threads)] + ([] if sparse_ids else ["--dense-ids"])
    if not paired or len(sizes) < 2:
        out = []
        for n in sizes:
            print(f"training cost at {n:,} interactions ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--child-scaling", str(n), *flags],
                                  capture_output=True, text=True)  # fmt: skip
            out.append(_child_row(n, proc.returncode, proc.stdout, proc.stderr))
        return out
    big, small = max(sizes), sorted(n for n in sizes if n != max(sizes))
    print(f"training cost at {big:,} interactions, side by side with {', '.join(f'{n:,}' for n in small)} ...",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="suite_pair_") as tmp_name:
        stop = Path(tmp_name) / "stop"
        companion = subprocess.Popen([sys.executable, __file__, "--child-companion", *map(str, small), "--stop",
                                      str(stop), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        large = subprocess.run([sys.executable, __file__, "--child-scaling", str(big), *flags], capture_output=True,
                               text=True)  # fmt: skip
        stop.touch()
        out_small, err_small = companion.communicate()
    rows = json.loads(out_small.strip().splitlines()[-1]) if companion.returncode == 0 else [
        {"interactions": n, "error": f"exit code {companion.returncode}: {err_small.strip()[-300:]}"} for n in small]
    rows.append(_child_row(big, large.returncode, large.stdout, large.stderr))
    for row in rows:
        if "epoch_s" in row:
            print(f"  {row['interactions']:,}: epoch {row['epoch_s']} s", flush=True)
    return rows


def _child_row(n: int, code: int, stdout: str, stderr: str) -> dict:
    if code != 0:
        last = stderr.strip().splitlines()[-1:]
        print(f"  failed: {stderr[-2000:]}", flush=True)
        return {"interactions": n, "error": f"exit code {code}" + (f": {last[0]}" if last else "")}
    row = json.loads(stdout.strip().splitlines()[-1])
    print(f"  epoch {row['epoch_s']} s, {row['rows_per_s']:,} rows/s, peak {row['peak_rss_gib']} GiB", flush=True)
    return row


def ml100k(threads: int) -> dict:
    """Parts 2-5 on MovieLens-100K."""
    import numpy as np
    import torch

    from mtlrec.config import load_config
    from mtlrec.eval.evaluator import evaluate, model_score_fn, rank_users
    from mtlrec.recommend import Query, Recommender
    from mtlrec.train.pipeline import prepare
    from mtlrec.train.run import train_run

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="suite_ml_") as tmp_name:
        tmp = Path(tmp_name)
        config = load_config(overrides={"text.cache_dir": str(tmp / "cache"), "train.threads": threads})
        t0 = time.perf_counter()
        prepare(config, progress=False, log=lambda _: None)  # warms the embedding cache
        out["cold_prepare_s"] = round(time.perf_counter() - t0, 2)
        figures, trainer = train_one_epoch(config, tmp)
        out["train"] = figures
        print(f"ML-100K epoch: {figures['rows_per_s']:,} rows/s ({figures['interactions_per_s']:,} interactions/s)",
              flush=True)  # fmt: skip

        model, data = trainer.model.eval(), trainer.data
        blend = dict(config.eval.blend)
        ranking, whole = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            rank_users(model_score_fn(model, trainer.tasks, blend, data.split), data.split, "test", config.eval.ks,
                       config.eval.batch_users)  # fmt: skip
            ranking.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            metrics = evaluate(model, trainer.tasks, data, blend, stages=("test",), ks=config.eval.ks,
                               batch_users=config.eval.batch_users)["test"]  # fmt: skip
            whole.append(time.perf_counter() - t0)
        out["eval"] = {"users": int(len(data.split.eval_users)), "items": data.split.n_items,
                       "seconds_best": round(min(ranking), 3), "seconds_all": [round(t, 3) for t in ranking],
                       "with_task_metrics_s": round(min(whole), 3),
                       "ndcg@10_after_one_epoch": round(metrics["ndcg@10"], 4)}  # fmt: skip
        print(f"full-ranking evaluation of {out['eval']['users']} users: {min(ranking):.3f} s", flush=True)

        out["encode"] = encode_side_by_side(prepare_texts(config), config.text.batch_size)
        print(f"encoding: mtlrec {out['encode']['mtlrec_texts_per_s']} texts/s, sentence-transformers "
              f"{out['encode']['plain_texts_per_s']} texts/s, ratio {out['encode']['ratio']}", flush=True)

        run = tmp / "run"
        train_run(load_config(overrides={"text.cache_dir": str(tmp / "cache"), "train.threads": threads,
                                         "train.epochs": 1}), run, progress=False, log=lambda _: None)  # fmt: skip
        rec = Recommender.load(run)
        users = list(np.random.default_rng(0).choice(rec.user_ids, 300, replace=False))
        for user in users[:20]:
            rec.recommend(user)
        lat = []
        for user in users:
            t0 = time.perf_counter()
            rec.recommend(user, k=10)
            lat.append(time.perf_counter() - t0)
        lat.sort()
        t0 = time.perf_counter()
        for start in range(0, 296, 8):
            rec.recommend_many([Query(u) for u in users[start : start + 8]])
        many = (time.perf_counter() - t0) / 296
        out["recommend"] = {"p50_ms": round(1000 * statistics.median(lat), 2),
                            "p99_ms": round(1000 * lat[int(0.99 * len(lat))], 2),
                            "per_user_in_batches_of_8_ms": round(1000 * many, 2),
                            "torch_threads": torch.get_num_threads()}  # fmt: skip
        print(f"recommend: p50 {out['recommend']['p50_ms']} ms, in batches of 8 "
              f"{out['recommend']['per_user_in_batches_of_8_ms']} ms/user", flush=True)  # fmt: skip
    return out


def prepare_texts(config) -> list[str]:  # type: ignore[no-untyped-def]
    from mtlrec.train.pipeline import split_data

    return split_data(config, log=lambda _: None).texts


def encode_side_by_side(texts: list[str], batch_size: int, rounds: int = 3) -> dict:
    """Texts/s of mtlrec's encoder (empty cache each time) and of plain sentence-transformers, alternated."""
    from sentence_transformers import SentenceTransformer

    from mtlrec.text import EmbeddingCache, build_encoder, encode_cached
    from mtlrec.text.encoder import _packaged_model_dir

    ours = build_encoder("sentence-transformers", None)
    plain = SentenceTransformer(str(_packaged_model_dir() or "sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    ours.encode(texts[:64])
    plain.encode(texts[:64], batch_size=batch_size)  # both warmed up
    best = {"mtlrec": 0.0, "plain": 0.0}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as cache_dir:
            t0 = time.perf_counter()
            encode_cached(ours, texts, EmbeddingCache(Path(cache_dir)), batch_size=batch_size, progress=False)
            best["mtlrec"] = max(best["mtlrec"], len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        plain.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        best["plain"] = max(best["plain"], len(texts) / (time.perf_counter() - t0))
    return {"texts": len(texts), "batch_size": batch_size, "mtlrec_texts_per_s": round(best["mtlrec"], 1),
            "plain_texts_per_s": round(best["plain"], 1),
            "ratio": round(best["mtlrec"] / best["plain"], 3)}  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "epoch_s" in r]
    if not ok:
        return
    n = [r["interactions"] for r in ok]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.loglog(n, [r["epoch_s"] for r in ok], "o-", label="measured")
    a.loglog(n, [ok[0]["epoch_s"] * x / n[0] for x in n], "--", color="grey", label="linear from the smallest")
    a.set(xlabel="interactions", ylabel="seconds per epoch", title="Training time per epoch")
    a.legend()
    peak = [(x, r["peak_rss_gib"]) for x, r in zip(n, ok, strict=True) if r["peak_rss_gib"] is not None]
    b.semilogx([x for x, _ in peak], [p for _, p in peak], "o-")
    b.axhline(6, color="red", linestyle=":", label="6 GiB target at 10^7")
    b.set_xlim(min(n) / 2, max(n) * 2)
    b.set_ylim(0, 7)
    b.set(xlabel="interactions", ylabel="peak resident memory, GiB", title="Peak memory (whole process)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(r: dict) -> str:
    lines = [f"# Benchmark suite ({r['date']})", "", f"Machine: {r['machine']}; torch threads: {r['threads']}.", "",
             "## Training cost vs size (synthetic worlds, one epoch, interest task, shared-bottom)", "",
             "| interactions | users | items | epoch s | rows/s | interactions/s | peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in r["scaling"]:
        if "epoch_s" not in row:
            lines.append(f"| {row['interactions']:,} | failed: {row.get('error')} | | | | | |")
            continue
        peak = "(shared process)" if row["peak_rss_gib"] is None else row["peak_rss_gib"]
        lines.append(f"| {row['interactions']:,} | {row['users']:,} | {row['items']:,} | {row['epoch_s']} | "
                     f"{row['rows_per_s']:,} | {row['interactions_per_s']:,} | {peak} |")  # fmt: skip
    if r.get("paired"):
        lines += ["", "Paired (`--paired`): the largest world's epoch ran in one process while another ran the "
                  "smaller worlds' epochs in turn until it finished; their epoch time is the median of those (the "
                  "same load on both sides of the ratio), their peak memory that of the shared process."]  # fmt: skip
    ml = r.get("ml100k")
    if ml:
        t, e, enc, rec = ml["train"], ml["eval"], ml["encode"], ml["recommend"]
        lines += ["", "## MovieLens-100K", "",
                  f"- Training, default config, cached language-model vectors: **{t['rows_per_s']:,} rows/s** "
                  f"({t['rows']:,} rows = train interactions and their sampled negatives, {t['epoch_s']} s an epoch; "
                  f"{t['interactions_per_s']:,} train interactions/s).",
                  f"- Full-ranking evaluation of all {e['users']} test users against {e['items']:,} items: "
                  f"**{e['seconds_best']} s** (best of 3: {e['seconds_all']}); with every task's metrics (interest "
                  f"AUC, rating, categories) {e['with_task_metrics_s']} s.",
                  f"- Encoding {enc['texts']:,} item texts, batch {enc['batch_size']}: mtlrec (cache empty) "
                  f"{enc['mtlrec_texts_per_s']} texts/s, plain sentence-transformers {enc['plain_texts_per_s']} "
                  f"texts/s: **{enc['ratio']:.0%}** (best of 3, alternated).",
                  f"- `Recommender.recommend` k=10, no cache: p50 {rec['p50_ms']} ms, p99 {rec['p99_ms']} ms; "
                  f"`recommend_many` in batches of 8: {rec['per_user_in_batches_of_8_ms']} ms a user."]  # fmt: skip
    lines += ["", "## Targets", "", "| target | measured | |", "| --- | --- | --- |"]
    yes = {True: "**met**", False: "**not met**", None: "not measured"}
    lines += [f"| {name} | {t['value']} | {yes[t['met']]} |" for name, t in r["targets"].items()]
    lines += ["", "Rerun: `MTLREC_DATA_DIR=../shared/datasets python benchmarks/suite.py`."]
    return "\n".join(lines) + "\n"


def targets(r: dict) -> dict:
    out: dict = {}
    ml = r.get("ml100k")
    if ml:
        out["ML-100K training >= 50,000 rows/s"] = {"value": ml["train"]["rows_per_s"],
                                                    "met": ml["train"]["rows_per_s"] >= TARGETS["ml100k_rows_per_s"]}
        out["encoding >= 90% of sentence-transformers"] = {"value": ml["encode"]["ratio"],
                                                           "met": ml["encode"]["ratio"] >= TARGETS["encode_ratio"]}
        out["full-ranking evaluation <= 1 s"] = {"value": ml["eval"]["seconds_best"],
                                                 "met": ml["eval"]["seconds_best"] <= TARGETS["eval_seconds"]}
    by_n = {row["interactions"]: row for row in r["scaling"] if "epoch_s" in row}
    ratio = by_n[10**7]["epoch_s"] / by_n[10**6]["epoch_s"] if 10**6 in by_n and 10**7 in by_n else None
    out["epoch at 10^7 <= 12x epoch at 10^6"] = {"value": None if ratio is None else round(ratio, 2),
                                                 "met": None if ratio is None else ratio <= 12}
    peak = by_n[10**7]["peak_rss_gib"] if 10**7 in by_n else None
    out["peak memory at 10^7 <= 6 GiB"] = {"value": peak, "met": None if peak is None else peak <= 6}
    return out  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6, 1e7], help="Interactions per world.")
    parser.add_argument("--threads", type=int, default=0, help="Torch threads (0: every core).")
    parser.add_argument("--skip-ml100k", action="store_true", help="Only the synthetic scaling part.")
    parser.add_argument("--dense-ids", action="store_true",
                        help="Scaling part with dense id-table updates (train.sparse_ids=false), for comparison.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--paired", action="store_true",
                        help="Time the largest world side by side with the smaller ones (same load on both sides).")
    parser.add_argument("--child-scaling", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-companion", type=int, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_scaling is not None:
        print(json.dumps(child_scaling(args.child_scaling, args.threads, not args.dense_ids)))
        return
    if args.child_companion is not None:
        print(json.dumps(child_companion(args.child_companion, args.threads, not args.dense_ids, args.stop)))
        return
    import torch

    from mtlrec import __version__
    from mtlrec.train.pipeline import set_threads

    result = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "mtlrec": __version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                         f"Python {platform.python_version()}, torch {torch.__version__}",
              "threads": set_threads(args.threads)}  # fmt: skip
    result["scaling"] = scaling([int(n) for n in args.sizes], args.threads, not args.dense_ids, args.paired)
    result["paired"] = args.paired
    if not args.skip_ml100k:
        result["ml100k"] = ml100k(args.threads)
    result["targets"] = targets(result)
    args.output.mkdir(parents=True, exist_ok=True)
    stamp = result["date"][:10]
    (args.output / f"suite-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "suite.md").write_text(markdown(result))
    plot(result["scaling"], args.output / "suite.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
