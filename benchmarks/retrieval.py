"""Candidate retrieval against full ranking: how much of the exact top-K the FAISS candidate path returns.

    python benchmarks/retrieval.py --run RUN_DIR [--candidates 100 200 400 800] [--k 100 10]

For every user of the run, the exact path ranks the whole catalogue with the multi-task model (as evaluation does);
the candidate path takes the best C items by the model's two towers from a FAISS index (flat: exact inner product;
hnsw: approximate) and ranks those. Recall@K = |exact top-K ∩ candidate top-K| / K, averaged over users (seen items
excluded on both paths), and the time per user of each path (batches of 64 users, one torch thread).
Writes benchmarks/results/retrieval.json and retrieval.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mtlrec.recommend import Query, Recommender

RESULTS = Path(__file__).parent / "results"
BATCH = 64


def top_ids(rec: Recommender, users: list[str], k: int) -> tuple[list[set[str]], float]:
    """Each user's top-k ids and the seconds per user."""
    out: list[set[str]] = []
    t0 = time.perf_counter()
    for start in range(0, len(users), BATCH):
        lists = rec.recommend_many([Query(u, k=k) for u in users[start : start + BATCH]])
        out += [{item["item_id"] for item in items} for items in lists]
    return out, (time.perf_counter() - t0) / len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--k", type=int, nargs="+", default=[100, 10])
    parser.add_argument("--name", default="retrieval", help="Results file stem.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    exact = Recommender.load(args.run)
    users = exact.user_ids
    towers = "next_item" if "next_item" in exact.model.heads else "interest <user, item>"
    rows = []
    for k in args.k:
        truth, exact_s = top_ids(exact, users, k)
        for kind in ("flat", "hnsw"):
            for c in args.candidates:
                found, cand_s = top_ids(Recommender.load(args.run, candidates=c, index=kind), users, k)
                recall = float(np.mean([len(a & b) / len(a) for a, b in zip(truth, found, strict=True) if a]))
                rows.append({"k": k, "index": kind, "candidates": c, "recall": round(recall, 4),
                             "ms_per_user": round(1000 * cand_s, 3), "exact_ms_per_user": round(1000 * exact_s, 3)})
                print(f"K={k} {kind} C={c}: recall {recall:.4f}, {1000 * cand_s:.2f} ms/user "
                      f"(exact {1000 * exact_s:.2f})", flush=True)  # fmt: skip
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "run": str(args.run), "users": len(users),
              "items": len(exact.item_ids), "towers": towers, "rows": rows}  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Candidate retrieval vs full ranking ({result['date']})", "",
             f"Run `{args.run}`: {len(users)} users, {len(exact.item_ids):,} items; two towers: {towers}. "
             "Recall of the exact top-K (full ranking by the multi-task model) by the candidate path.", "",
             "| K | index | candidates | recall | ms/user | exact ms/user |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['k']} | {r['index']} | {r['candidates']} | {r['recall']} | {r['ms_per_user']} | "
              f"{r['exact_ms_per_user']} |" for r in rows]  # fmt: skip
    lines += ["", f"Rerun: `python benchmarks/retrieval.py --run {args.run}`."]
    (args.output / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
