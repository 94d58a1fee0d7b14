"""One call per job: train a run directory, or evaluate one. The CLI and benchmarks call these."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mtlrec.config import Config
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
from mtlrec.train.data import TrainingData
from mtlrec.train.distributed import Dist, join, leave, threads_per_process
from mtlrec.train.pipeline import prepare, set_threads, split_data
from mtlrec.train.plots import plot_history
from mtlrec.train.trainer import OPTIMIZERS, Trainer
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
    if not 0.0 <= config.model.id_dropout < 1.0:
        raise ConfigError(f"model.id_dropout: a probability in [0, 1), got {config.model.id_dropout}")
    tasks = build_tasks(config.tasks)
    if config.eval.blend:
        check_blend(dict(config.eval.blend), tasks)
    elif config.train.select.startswith(("hr@", "ndcg@", "mrr@")):
        raise ConfigError(f"train.select is '{config.train.select}' but eval.blend is empty (no ranking); "
                          "select a task metric such as rmse or map, or blend a rankable task")  # fmt: skip
    return tasks


def train_run(config: Config, output: str | Path, progress: bool = True, log: Callable[[str], None] = print
              ) -> dict[str, Any]:  # fmt: skip
    """Train on the configured dataset, evaluate on validation and test, and write a run directory; the metrics.
    Launched as several processes (``mtlrec train --nproc N``, torchrun), they train together and rank 0 evaluates
    and writes the run: the other ranks return ``{}``."""
    group = join(config.train.device)  # data-parallel when launched by torchrun / --nproc (train/distributed.py)
    try:
        return _train_run(config, Path(output), progress, log, group)
    finally:
        leave(group)


def _train_run(config: Config, output: Path, progress: bool, log: Callable[[str], None], group: Dist
               ) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    tasks = check_config(config)
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
    trainer = Trainer(config, model, tasks, weighting, data, progress=progress, log=log, group=group)
    result = trainer.fit()
    if not group.main:  # every replica holds the same model: rank 0 evaluates and writes the run
        return {}
    if group.enabled:
        log(f"data-parallel: {group.world} processes, {threads} torch threads each")

    per_user: dict[str, np.ndarray] = {}
    final = evaluate(model, tasks, data, dict(config.eval.blend), ks=config.eval.ks,
                     batch_users=config.eval.batch_users, per_user=per_user)  # fmt: skip
    metrics = {**final, "seed": config.train.seed, "best_epoch": result.best_epoch,
               "train_seconds": round(result.seconds, 2), "total_seconds": round(time.perf_counter() - started, 2),
               "texts_encoded": prepared.encoded, "threads": threads, "processes": group.world,
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
                  "encoder": tuning.language_model.name if tuning else prepared.encoder_name,
                  "n_users": dataset.n_users, "n_items": dataset.n_items,
                  "torch": torch.__version__, "python": platform.python_version()})  # fmt: skip
    if per_user:  # each evaluated user's ranking metrics, for paired significance tests between runs
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in per_user.items()}
        save_file({**arrays, "users": torch.from_numpy(data.split.eval_users)}, str(output / "per_user.safetensors"))
    write_json(output / "history.json", result.history)
    write_json(output / "metrics.json", metrics)
    plot_history(result.history, output / "plots", result.best_epoch)
    return metrics


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
    for task in artifact.tasks.values():
        task.prepare(data)
    return evaluate(artifact.model, artifact.tasks, data, dict(config.eval.blend), ks=config.eval.ks,
                    batch_users=config.eval.batch_users)  # fmt: skip
