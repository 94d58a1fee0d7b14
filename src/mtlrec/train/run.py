"""One call per job: train a run directory, or evaluate one. The CLI and benchmarks call these."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mtlrec.config import Config, save_config
from mtlrec.data.splits import SPLIT_DESCRIPTIONS
from mtlrec.errors import ArtifactError, ConfigError
from mtlrec.eval.cold_start import cold_item_report, log_cold_items
from mtlrec.eval.cold_users import cold_user_report, log_cold_users
from mtlrec.eval.evaluator import evaluate
from mtlrec.models.architectures import ARCHITECTURES
from mtlrec.models.model import MultiTaskModel
from mtlrec.models.social import SocialInputs, social_inputs
from mtlrec.models.towers import USER_TOWERS
from mtlrec.models.tuned_text import check_tuning, text_tuning
from mtlrec.recommend.artifact import load_artifact, save_artifact, write_json
from mtlrec.recommend.scoring import check_blend
from mtlrec.tasks.base import Task, build_tasks
from mtlrec.text import ENCODERS
from mtlrec.train.checkpoint import CHECKPOINT, load_checkpoint
from mtlrec.train.data import TrainingData
from mtlrec.train.distributed import Dist, join, leave, threads_per_process
from mtlrec.train.pipeline import prepare, set_threads, split_data
from mtlrec.train.plots import plot_history
from mtlrec.train.trainer import OPTIMIZERS, PRECISIONS, Trainer
from mtlrec.weighting.base import WEIGHTINGS


def protocol(split_kind: str) -> str:
    """How the run's figures were measured, stored with them (Last.fm's split is not PROTOCOL.md's temporal one)."""
    return f"PROTOCOL.md: {SPLIT_DESCRIPTIONS[split_kind]}, full ranking over all items, ties at expectation"


def build_social(config: Config, data: TrainingData) -> SocialInputs | None:
    """The friend graph the model attends over (``model.friends`` > 0), from the dataset's social edges."""
    if config.model.friends <= 0:
        return None
    graph = data.dataset.friend_graph()
    if graph is None:
        raise ConfigError(f"model.friends is {config.model.friends} but dataset '{data.dataset.name}' has no social "
                          "graph; set model.friends=0 or use a dataset with friends (lastfm-2k)")  # fmt: skip
    return social_inputs(data.split, *graph, config.model.friends, config.model.history_len)


def check_config(config: Config) -> dict[str, Task]:
    """Fail on every unknown name before any data is read; returns the tasks."""
    ARCHITECTURES.get(config.model.arch)
    USER_TOWERS.get(config.model.user_tower)
    WEIGHTINGS.get(config.train.weighting)
    ENCODERS.get(config.text.encoder)
    check_tuning(config)
    if config.train.optimizer not in OPTIMIZERS:
        valid = ", ".join(OPTIMIZERS)
        raise ConfigError(f"train.optimizer: unknown optimizer '{config.train.optimizer}'; valid: {valid}")
    if config.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: '{config.train.precision}' is not one of {', '.join(PRECISIONS)}")
    try:
        device = torch.device(config.train.device)
    except RuntimeError:
        raise ConfigError(f"train.device: '{config.train.device}' is not a torch device (e.g. cpu, cuda, cuda:1)"
                          ) from None  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is '{config.train.device}' but torch {torch.__version__} sees no CUDA GPU "
                          "(a CPU build, or no driver): install a CUDA build of torch or use cpu")  # fmt: skip
    if config.train.sparse_ids and config.train.optimizer != "adamw":
        raise ConfigError(f"train.sparse_ids needs train.optimizer=adamw (the id tables use its lazy, sparse form), "
                          f"not '{config.train.optimizer}'")  # fmt: skip
    if config.train.sparse_ids and config.train.weighting == "pcgrad":
        raise ConfigError("train.sparse_ids does not work with train.weighting=pcgrad: PCGrad projects whole "
                          "gradient vectors; use dense id updates (train.sparse_ids=false) or another weighting")
    tc, mc = config.train, config.model
    for key, value, ok, expected in (  # the numbers training divides by, loops over or sizes tensors with
        ("train.batch_size", tc.batch_size, tc.batch_size >= 1, "a whole number >= 1"),
        ("train.negatives", tc.negatives, tc.negatives >= 0, "a whole number >= 0"),
        ("train.epochs", tc.epochs, tc.epochs >= 1, "a whole number >= 1"),
        ("train.patience", tc.patience, tc.patience >= 1, "a whole number >= 1"),
        ("train.lr", tc.lr, tc.lr > 0, "a learning rate > 0"),
        ("train.weight_decay", tc.weight_decay, tc.weight_decay >= 0, "a number >= 0"),
        ("train.threads", tc.threads, tc.threads >= 0, "a whole number >= 0 (0 = every core)"),
        ("train.checkpoint_every", tc.checkpoint_every, tc.checkpoint_every >= 0,
         "steps between checkpoints, >= 0 (0 = each epoch's end only)"),
        ("model.dim", mc.dim, mc.dim >= 1, "a whole number >= 1"),
        ("model.hidden", list(mc.hidden), len(mc.hidden) >= 1 and min(mc.hidden) >= 1,
         "a non-empty list of layer widths >= 1"),
        ("model.history_len", mc.history_len, mc.history_len >= 1, "a whole number >= 1"),
        ("model.dropout", mc.dropout, 0.0 <= mc.dropout < 1.0, "a probability in [0, 1)"),
    ):  # fmt: skip
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value}")
    if not 0.0 <= config.model.id_dropout < 1.0:
        raise ConfigError(f"model.id_dropout: a probability in [0, 1), got {config.model.id_dropout}")
    tasks = build_tasks(config.tasks)
    if config.eval.blend:
        check_blend(dict(config.eval.blend), tasks)
    elif config.train.select.startswith(("hr@", "ndcg@", "mrr@")):
        raise ConfigError(f"train.select is '{config.train.select}' but eval.blend is empty (no ranking); "
                          "select a task metric such as rmse or map, or blend a rankable task")  # fmt: skip
    return tasks


def train_run(config: Config, output: str | Path, progress: bool = True, log: Callable[[str], None] = print,
              resume: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train on the configured dataset, evaluate on validation and test, and write a run directory; returns the
    metrics (``metrics.json``: the same for the same config, seed and machine) and how the run went (``run.json``:
    times, threads). Launched as several processes (``mtlrec train --nproc N``, torchrun), they train together and
    rank 0 evaluates and writes the run: the other ranks return ``{}``. ``resume``: go on from the checkpoint an
    interrupted run of this config left in ``output`` (``train/checkpoint.py``)."""
    # Same config and seed, same bytes of metrics.json: PyTorch's deterministic kernels wherever it has them (on the
    # CPU they all are; on CUDA, cuBLAS needs a fixed workspace, read when CUDA starts), a warning where it has none.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    group = join(config.train.device)  # data-parallel when launched by torchrun / --nproc (train/distributed.py)
    try:
        return _train_run(config, Path(output), progress, log, group, resume)
    finally:
        leave(group)
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def read_checkpoint(output: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a fresh run); refuses to start afresh over an unfinished run."""
    checkpoint = output / CHECKPOINT
    if not resume:
        if checkpoint.is_file():
            raise ConfigError(f"{output} holds the checkpoint of an unfinished run: continue it with `mtlrec train "
                              f"--resume {output}`, or write this run elsewhere (--output), or delete {checkpoint}")
        return None
    if not checkpoint.is_file():
        done = (output / "metrics.json").is_file()
        raise ArtifactError(f"{output}: no checkpoint to resume from; " + (
            "the run finished (its metrics.json is there)" if done else
            "training stopped before its first checkpoint (the end of epoch 1, or train.checkpoint_every steps): "
            "start it again without --resume"))  # fmt: skip
    return load_checkpoint(checkpoint)


def _check_same_run(state: dict[str, Any], identity: dict[str, Any], output: Path) -> None:
    if state.get("identity", {}).get("fingerprint") != identity["fingerprint"]:
        raise ArtifactError(f"{output}: the checkpoint was trained on other data (dataset fingerprint differs); "
                            "resume it on the data it started with, or start a new run")  # fmt: skip
    saved, now = _flat(state.get("identity", {}).get("config", {})), _flat(identity["config"])
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{output}: the checkpoint was taken with another config ({', '.join(changed[:5])} "
                          f"differ{'s' if len(changed) == 1 else ''}); resume with the run's own config.yaml")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def _train_run(config: Config, output: Path, progress: bool, log: Callable[[str], None], group: Dist,
               resume: bool) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    tasks = check_config(config)
    state = read_checkpoint(output, resume)  # every rank reads it (its own random generators are in it)
    if not group.main:
        log, progress = (lambda _: None), False
    threads = set_threads(threads_per_process(config.train.threads) if group.enabled else config.train.threads)
    if not group.main:
        group.barrier()  # rank 0 fills the embedding cache first; the others then read it
    prepared = prepare(config, progress=progress, log=log)
    if group.main:
        group.barrier()
    data = prepared.data
    for task in tasks.values():
        task.prepare(data)
    torch.manual_seed(config.train.seed)
    social = build_social(config, data)
    tuning = text_tuning(config, prepared.texts, config.train.device) if config.text.lora.rank > 0 else None
    model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                           data.categories.shape[1], social=social, tuning=tuning).to(config.train.device)  # fmt: skip
    model.item_encoder.set_warm(data.split.trained_items())  # items without a train interaction: default id
    model.set_warm_users(data.split.lengths > 0)  # users held out (data.cold_users): not in a new user's mean id
    weighting = WEIGHTINGS.get(config.train.weighting)(tasks).to(config.train.device)
    identity = {"config": config.to_dict(), "fingerprint": prepared.fingerprint}
    if state is not None:
        _check_same_run(state, identity, output)
        log(f"resuming {output}: epoch {state['position']['epoch']}, step {state['position']['step']}")
    elif group.main:
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")  # what `--resume` reads back
    trainer = Trainer(config, model, tasks, weighting, data, progress=progress, log=log, group=group,
                      checkpoint=output / CHECKPOINT, identity=identity)  # fmt: skip
    result = trainer.fit(resume=state)
    model.cpu()  # the final evaluation, its reports and the saved run read CPU tensors (validation ran on the device)
    if not group.main:  # every replica holds the same model: rank 0 evaluates and writes the run
        return {}
    if group.enabled:
        log(f"data-parallel: {group.world} processes, {threads} torch threads each")

    per_user: dict[str, np.ndarray] = {}
    final = evaluate(model, tasks, data, dict(config.eval.blend), ks=config.eval.ks,
                     batch_users=config.eval.batch_users, per_user=per_user)  # fmt: skip
    metrics = {**final, "seed": config.train.seed, "best_epoch": result.best_epoch, "processes": group.world,
               "evaluated_users": int(len(data.split.eval_users)),
               "protocol": protocol(data.dataset.split)}  # fmt: skip
    if len(data.cold_items) and config.eval.blend:  # the cold-start protocol (eval/cold_start.py)
        blend = dict(config.eval.blend)
        metrics["cold_items"] = cold_item_report(model, tasks, data, blend, config.eval.ks, config.train.seed,
                                                 config.eval.batch_users, config.data.cold_items)  # fmt: skip
        log_cold_items(metrics["cold_items"], log)
    if len(data.cold_users) and config.eval.blend:  # the cold-start users protocol (eval/cold_users.py)
        metrics["cold_users"] = cold_user_report(model, tasks, data, dict(config.eval.blend), config.eval.ks,
                                                 config.eval.batch_users, config.data.cold_users)  # fmt: skip
        log_cold_users(metrics["cold_users"], log)
    dataset = data.dataset
    save_artifact(output, config, model, data.split, dataset.items, prepared.texts, dataset.user_ids,
                  dataset.categories, {"dataset": dataset.name, "fingerprint": prepared.fingerprint,
                  "split_fingerprint": data.split_fingerprint(),
                  "encoder": tuning.language_model.name if tuning else prepared.encoder_name,
                  "n_users": dataset.n_users, "n_items": dataset.n_items,
                  "torch": torch.__version__, "python": platform.python_version()})  # fmt: skip
    if per_user:  # each evaluated user's ranking metrics, for paired significance tests between runs
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in per_user.items()}
        save_file({**arrays, "users": torch.from_numpy(data.split.eval_users)}, str(output / "per_user.safetensors"))
    write_json(output / "history.json", result.history)
    write_json(output / "metrics.json", metrics)
    # how this run went: differs between two runs of the same config (times, the embedding cache's state)
    run = {"train_seconds": round(result.seconds, 2), "total_seconds": round(time.perf_counter() - started, 2),
           "texts_encoded": prepared.encoded, "threads": threads, "resumed": resume}  # fmt: skip
    write_json(output / "run.json", run)
    plot_history(result.history, output / "plots", result.best_epoch)
    (output / CHECKPOINT).unlink(missing_ok=True)  # the run is whole: nothing left to resume
    return {**metrics, **run}


def evaluate_run(run_dir: str | Path, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Re-evaluate a run on the data it names; refuses a dataset that differs from the one trained on."""
    artifact = load_artifact(run_dir)
    config = artifact.config
    set_threads(config.train.threads)
    parts = split_data(config, log)
    dataset = parts.dataset
    if dataset.fingerprint() != artifact.meta.get("fingerprint") and not force:
        raise ArtifactError(f"the data found for '{config.data.dataset}' differs from the data {run_dir} was "
                            "trained on (dataset fingerprint mismatch); pass --force to evaluate anyway")  # fmt: skip
    # The run's stored text vectors are what the model was trained with: no need to load the language model.
    data = parts.training_data(artifact.model.item_encoder.text.numpy())
    trained_on = artifact.meta.get("split_fingerprint")  # absent in runs written before it was stored
    if trained_on is not None and data.split_fingerprint() != trained_on and not force:
        raise ArtifactError(f"the train / validation / test split rebuilt for {run_dir} differs from the one it was "
                            "trained on (split fingerprint mismatch: another split seed, cold-start share or "
                            "splitting code), so some test items may have been training data; pass --force to "
                            "evaluate anyway")  # fmt: skip
    for task in artifact.tasks.values():
        task.prepare(data)
    return evaluate(artifact.model, artifact.tasks, data, dict(config.eval.blend), ks=config.eval.ks,
                    batch_users=config.eval.batch_users)  # fmt: skip
