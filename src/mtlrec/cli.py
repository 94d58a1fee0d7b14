"""The ``mtlrec`` command. Each command calls one library function; errors a user can fix exit with status 2
and one line naming what to fix, never a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mtlrec.errors import ConfigError, MtlrecError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__ and
                  "Multi-task collaborative learning for LLM-based recommendation.")  # fmt: skip
data_app = typer.Typer(no_args_is_help=True, help="Find, download and inspect datasets.")
app.add_typer(data_app, name="data")
feedback_app = typer.Typer(no_args_is_help=True, help="Feedback collected by `mtlrec serve --feedback-db`.")
app.add_typer(feedback_app, name="feedback")
# No console markup: messages and tables quote file paths, ids and titles, and "[/x]" in one is not a style tag.
console = Console(stderr=True, markup=False)
out = Console(markup=False)


def log(message: str) -> None:
    console.print(message, soft_wrap=True, highlight=False)


def _parse_pairs(text: str | None, flag: str) -> dict[str, float] | None:
    """'interest:1,rating:0.3' -> {'interest': 1.0, 'rating': 0.3}."""
    if not text:
        return None
    result = {}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        try:
            result[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"{flag}: expected NAME:WEIGHT[,NAME:WEIGHT...], got '{part}'") from None
        if not sep or not name.strip():
            raise ConfigError(f"{flag}: expected NAME:WEIGHT[,NAME:WEIGHT...], got '{part}'")
    return result


def _metrics_table(metrics: dict[str, dict[str, float]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    stages = [s for s in ("valid", "test") if s in metrics]
    for stage in stages:
        table.add_column(stage, justify="right")
    for name in metrics[stages[0]]:
        table.add_row(name, *(f"{metrics[s].get(name, float('nan')):.4f}" for s in stages))
    return table


@app.command()
def train(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory to write.")] = Path("runs/ml100k"),
    dataset: Annotated[str | None, typer.Option(help="Dataset name (ml-100k, ml-1m, ...) or 'generic'.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; flags override it.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding dataset folders.")] = None,
    data_path: Annotated[
        str | None, typer.Option(help="Data file of --dataset generic (CSV/Parquet) or amazon-reviews (.json.gz).")
    ] = None,
    items_path: Annotated[str | None, typer.Option(help="Items table for --dataset generic.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation, shuffling and sampling.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Positive interactions per step.")] = None,
    negatives: Annotated[int | None, typer.Option(help="Sampled negatives per positive.")] = None,
    dim: Annotated[int | None, typer.Option(help="Width of user/item representations.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw or sgd.")] = None,
    arch: Annotated[str | None, typer.Option(help="Shared architecture: shared-bottom, mmoe or ple.")] = None,
    weighting: Annotated[
        str | None, typer.Option(help="Loss weighting: fixed, uncertainty, gradnorm, dwa or pcgrad.")
    ] = None,
    task_weights: Annotated[
        str | None,
        typer.Option(
            "--tasks", help="Tasks and fixed weights, e.g. 'interest:0.6,genre:0.4' (replaces the task list)."
        ),
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="Text encoder: sentence-transformers or hashing.")] = None,
    text_model: Annotated[str | None, typer.Option("--text-model", help="Language model name or path.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (0 = all cores).")] = None,
    device: Annotated[str | None, typer.Option(help="Torch device, e.g. cpu or cuda.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, or bf16 (autocast; for GPUs).")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any config key, e.g. --set model.dropout=0.2 (value parsed as YAML; repeatable)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    nproc: Annotated[
        int,
        typer.Option(help="Data-parallel processes on this machine (torch.distributed; torchrun for several "
                     "machines, see the README). train.batch_size is the global batch."),
    ] = 1,
    resume: Annotated[
        Path | None,
        typer.Option(help="Go on with an interrupted run from its checkpoint: the run folder, trained with its "
                     "own config.yaml (no other settings)."),
    ] = None,
) -> None:
    """Train the multi-task model, evaluate it on PROTOCOL.md, and write a run directory.

    Settings come from defaults, then --config, then flags (flags win). Example:
    mtlrec train --dataset ml-100k --output runs/ml100k --tasks interest:0.6,genre:0.4
    """
    from mtlrec.config import load_config
    from mtlrec.train.run import train_run

    tasks = _parse_pairs(task_weights, "--tasks")
    overrides: dict[str, Any] = {
        "data.dataset": dataset, "data.data_dir": data_dir, "data.data_path": data_path,
        "data.items_path": items_path, "train.seed": seed, "train.epochs": epochs, "train.lr": lr,
        "train.batch_size": batch_size, "train.negatives": negatives, "model.dim": dim,
        "train.optimizer": optimizer, "model.arch": arch, "train.weighting": weighting, "text.encoder": encoder,
        "text.model": text_model, "train.threads": threads, "train.device": device,
        "train.precision": precision, "tasks": {name: {"weight": w} for name, w in tasks.items()} if tasks else None,
    }  # fmt: skip
    overrides.update(_settings(settings))
    if resume is not None:
        given = [key for key, value in overrides.items() if value is not None] + (["--config"] if config else [])
        if given:
            raise ConfigError(f"--resume goes on with {resume} under its own config.yaml; drop the other settings "
                              f"({', '.join(given)})")  # fmt: skip
        config, output = resume / "config.yaml", resume
        if not config.is_file():
            raise ConfigError(f"--resume {resume}: no config.yaml there; is it a run folder of `mtlrec train`?")
    cfg = load_config(config, overrides)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        metrics = _launch(cfg, output, nproc, progress, resume is not None)
    elif nproc < 1:
        raise ConfigError(f"--nproc must be 1 or more, got {nproc}")
    else:
        metrics = train_run(cfg, output, progress=progress, log=log, resume=resume is not None)
        if not metrics:  # a rank other than 0 of a data-parallel run: rank 0 reports
            return
    out.print(_metrics_table(metrics, f"{cfg.data.dataset} · best epoch {metrics['best_epoch']} · "
                                      f"{metrics['train_seconds']:.0f}s training"))  # fmt: skip
    console.print(f"run written to {output} (metrics.json, plots/)")


def _launch(cfg: Any, output: Path, nproc: int, progress: bool, resume: bool) -> dict[str, Any]:
    """``mtlrec train`` as ``nproc`` processes under torchrun (standalone: this machine), from the resolved
    config; rank 0 writes the run. Returns its metrics."""
    import subprocess
    import tempfile

    from mtlrec.config import save_config
    from mtlrec.processes import dies_with_this_process

    with tempfile.TemporaryDirectory(prefix="mtlrec_nproc_") as tmp:
        config_path = Path(tmp) / "config.yaml"
        save_config(cfg, config_path)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "mtlrec", "train", "--config", str(config_path), "--output", str(output),
               "--progress" if progress else "--no-progress"]  # fmt: skip
        if resume:  # each process reads the run's config.yaml and the checkpoint itself
            cmd[cmd.index("--config") : cmd.index("--config") + 2] = ["--resume", str(output)]
        console.print(f"data-parallel training: {nproc} processes (torchrun --standalone)")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        # torchrun gets SIGTERM (and stops its ranks) when this process dies, even by SIGKILL
        code = subprocess.run(cmd, env=env, preexec_fn=dies_with_this_process()).returncode
    if code != 0:
        raise MtlrecError(f"data-parallel training failed (torchrun exit code {code}); see the messages above")
    return {**json.loads((output / "metrics.json").read_text()), **json.loads((output / "run.json").read_text())}


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mtlrec train`.")],
    force: Annotated[bool, typer.Option(help="Evaluate even if the data differ from the training data.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Re-evaluate a trained run on PROTOCOL.md (full ranking, rating and category metrics)."""
    from mtlrec.train.run import evaluate_run

    metrics = evaluate_run(run_dir, force=force, log=log)
    if as_json:
        out.print_json(json.dumps(metrics))
    else:
        out.print(_metrics_table(metrics, str(run_dir)))


@app.command()
def recommend(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mtlrec train`.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="User id as in the dataset.")] = None,
    text: Annotated[str | None, typer.Option(help="New user: their tastes in words (cold start).")] = None,
    liked: Annotated[str | None, typer.Option(help="New user: liked item ids, e.g. '50,181' (cold start).")] = None,
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    blend: Annotated[str | None, typer.Option(help="Task score weights, e.g. 'interest:1,rating:0.3'.")] = None,
    include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already has.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Top-K items for a known user (--user), or a new one from --text and/or --liked, with the overall score and
    every task's prediction."""
    from mtlrec.recommend import Recommender

    if (user is None) == (text is None and liked is None):
        raise ConfigError("give --user for a known user, or --text and/or --liked for a new one (not both)")
    rec = Recommender.load(run_dir)
    weights = _parse_pairs(blend, "--blend")
    if user is not None:
        items = rec.recommend(user, k=k, exclude_seen=not include_seen, blend=weights)
        title = f"top {len(items)} for user {user}"
    else:
        liked_ids = [i.strip() for i in (liked or "").split(",") if i.strip()]
        items = rec.recommend_new_user(liked=liked_ids, text=text, k=k, blend=weights)
        title = f"top {len(items)} for a new user"
    if as_json:
        out.print_json(json.dumps(items))
        return
    table = Table(title=title)
    for col in ("#", "item", "title", "categories", "score", *rec.tasks):
        table.add_column(col, overflow="fold")
    for n, item in enumerate(items, 1):
        per_task = [", ".join(f"{k} {p:.2f}" for k, p in v.items()) if isinstance(v, dict) else str(v)
                    for v in item["scores"].values()]  # fmt: skip
        table.add_row(str(n), item["item_id"], item["title"], ", ".join(item["categories"]), f"{item['score']:.3f}",
                      *per_task)  # fmt: skip
    out.print(table)


@app.command()
def compare(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the report and every run.")] = Path(
        "runs/compare"
    ),
    spec: Annotated[Path | None, typer.Option("--spec", help="YAML: base, architectures, weightings, seeds.")] = None,
    archs: Annotated[str | None, typer.Option(help="Architectures, e.g. 'shared-bottom,mmoe,ple'.")] = None,
    weightings: Annotated[str | None, typer.Option(help="Weightings, e.g. 'fixed,uncertainty'.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. '0,1,2' (at least 3 for a report).")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", help="Base config key, e.g. train.epochs=10.")] = None,
    jobs: Annotated[int, typer.Option(help="Runs trained at once (each at one torch thread).")] = 1,
) -> None:
    """Single-task baselines vs every architecture x weighting over seeds: Markdown, PNG and JSON report.

    Example: mtlrec compare --archs shared-bottom,mmoe,ple --weightings fixed,uncertainty --seeds 0,1,2
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mtlrec.eval.compare import load_spec, run_compare

    def items(text: str | None) -> list[str] | None:
        return [t.strip() for t in text.split(",") if t.strip()] if text else None

    try:
        seed_list = [int(s) for s in items(seeds) or []] or None
    except ValueError:
        raise ConfigError(f"--seeds: expected integers like 0,1,2, got '{seeds}'") from None
    plan = load_spec(spec, {"architectures": items(archs), "weightings": items(weightings), "seeds": seed_list})
    base = _settings(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("compare", total=None)

        def on_run(done: int, total: int, what: str) -> None:
            if done:
                bar.console.print(f"finished {what}", highlight=False)
            bar.update(task, completed=done, total=total, description=f"compare ({what})")

        report = run_compare(plan, output, base, on_run, jobs=jobs)
    out.print((output / "compare.md").read_text())
    console.print(f"report: {output}/compare.md, compare.png, compare.json ({report['minutes']} min)")


def _settings(settings: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE pairs as dotted config overrides (values parsed as YAML)."""
    from mtlrec.config import parse_yaml

    overrides: dict[str, Any] = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set: expected KEY=VALUE, got '{item}'")
        try:
            overrides[key.strip()] = parse_yaml(value)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise ConfigError(f"--set {key.strip()}: the value is not valid YAML ({getattr(exc, 'problem', exc)})"
                              ) from None  # fmt: skip
    return overrides


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")],
    data_dir: Annotated[Path | None, typer.Option(help="Where to put it (default: the cache dir).")] = None,
    url: Annotated[str | None, typer.Option(help="Mirror URL of the same zip (checked against the sha256).")] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the zip, if it changed upstream.")] = None,
) -> None:
    """Download a dataset from its official source, check its sha256 and unpack it."""
    from mtlrec.data import download

    path = download(name, data_dir, url=url, sha256=sha256)
    console.print(f"{name} is in {path}")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="Dataset name, or 'generic' / 'amazon-reviews' with --data-path.")],
    data_dir: Annotated[str | None, typer.Option(help="Folder holding dataset folders.")] = None,
    data_path: Annotated[str | None, typer.Option(help="The data file of 'generic' or 'amazon-reviews'.")] = None,
) -> None:
    """Load a dataset, validate it, and print its size and split."""
    from mtlrec.data import load_dataset
    from mtlrec.data.splits import SPLIT_DESCRIPTIONS, leave_one_out

    ds = load_dataset(name, data_dir, data_path=data_path)
    split = leave_one_out(ds)
    out.print(ds.summary())
    out.print(f"{SPLIT_DESCRIPTIONS[ds.split]}: {len(split.eval_users):,} evaluated users, "
              f"{len(split.train_positions()):,} train interactions")  # fmt: skip


@data_app.command("synth")
def data_synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for interactions/items/social .parquet.")],
    users: Annotated[int, typer.Option(help="Users.")] = 10_000,
    items: Annotated[int, typer.Option(help="Items.")] = 5_000,
    interactions: Annotated[int, typer.Option(help="Interactions (about).")] = 1_000_000,
    categories: Annotated[int, typer.Option(help="Item categories, each with its own text vocabulary.")] = 20,
    friends: Annotated[int, typer.Option(help="Friendships per user (0: no social graph).")] = 10,
    seed: Annotated[int, typer.Option(help="Same seed, same world.")] = 0,
) -> None:
    """Generate a synthetic world for scaling runs: power-law popularity and activity, latent tastes, item texts
    from category vocabularies, a social graph with homophily. Train on it with `mtlrec train --dataset generic`."""
    import time

    from mtlrec.data.synth import synth_world

    started = time.perf_counter()
    world = synth_world(users, items, interactions, categories=categories, friends=friends, seed=seed)
    paths = world.write(output)
    out.print(f"{len(world.interactions):,} interactions of {users:,} users on {items:,} items, "
              f"{len(world.social):,} friendship rows, in {time.perf_counter() - started:.1f} s -> {output}")
    out.print(f"train: mtlrec train --dataset generic --data-path {paths['interactions']} "
              f"--items-path {paths['items']} --set data.social_path={paths['social']}")  # fmt: skip


@data_app.command("list")
def data_list() -> None:
    """Datasets that can be named with --dataset."""
    from mtlrec.data import DATASETS
    from mtlrec.data.sources import FILE_DATASETS, GENERIC

    for name in DATASETS.names():
        out.print(f"{name}  (mtlrec data download {name})")
    for name, (_, what) in FILE_DATASETS.items():
        out.print(f"{name}  (--data-path: {what})")
    out.print(f"{GENERIC}  (--data-path: an interactions CSV or Parquet file; see the README)")


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `mtlrec train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 (this machine only) by default.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes (each loads the model).")] = 1,
    feedback_db: Annotated[
        str | None,
        typer.Option(
            help="Where POST /feedback writes: a SQLite file (created if missing), or a PostgreSQL URL "
            "postgresql://user:pass@host/db shared by several servers (needs the 'postgres' extra).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="MTLREC_API_KEY",
            show_default=False,
            help="Key that write endpoints require (X-API-Key or Authorization: Bearer). Prefer the "
            "environment variable: a flag is visible in the process list.",
        ),
    ] = None,  # fmt: skip
    threads: Annotated[int, typer.Option(help="Torch CPU threads per process (0 = torch's default).")] = 0,
    score_cache_mb: Annotated[
        float,
        typer.Option(help="MiB per process of known users' catalogue scores kept between requests (exact: the "
                     "model is frozen); 0 = compute every request."),
    ] = 256.0,
    candidates: Annotated[
        int,
        typer.Option(help="Rank this many FAISS candidates per known user (two-tower retrieval; large catalogues, "
                     "'faiss' extra) instead of every item; 0 = every item."),
    ] = 0,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve a trained run over HTTP: recommendations, items, pair scores, feedback, metrics (needs the 'serve'
    extra). OpenAPI docs at /docs.

    Example: MTLREC_API_KEY=secret mtlrec serve runs/ml100k --feedback-db feedback.sqlite
    """
    from mtlrec.serve.server import serve as run_server

    run_server(run_dir, host=host, port=port, workers=workers, feedback_db=feedback_db, api_key=api_key,
               threads=threads, score_cache_mb=score_cache_mb, candidates=candidates,
               log_level=log_level)  # fmt: skip


@feedback_app.command("export")
def feedback_export(
    feedback_db: Annotated[
        str, typer.Option(help="The SQLite file or PostgreSQL URL given to `mtlrec serve --feedback-db`.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Interactions CSV to write.")],
    types: Annotated[
        str | None, typer.Option(help="Only these event types, e.g. 'rating' or 'like,purchase'.")
    ] = None,
) -> None:
    """Write stored feedback as an interactions CSV (user_id,item_id[,rating],timestamp; one row per event) that
    `mtlrec train --dataset generic --data-path FILE --set data.on_duplicate=last` trains on."""
    from mtlrec.serve.feedback import open_feedback_store

    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    with open_feedback_store(feedback_db, create=False) as store:
        rows = store.export(output, types=wanted)
    console.print(f"{rows:,} events written to {output}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user-fixable errors become one line on stderr and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except MtlrecError as exc:
        console.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)


if __name__ == "__main__":
    main()
