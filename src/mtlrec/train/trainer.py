"""The single training loop: mini-batches of observed pairs plus sampled negatives, every task's loss on the
same rows (masked where a row has no label), one combined loss, early stopping on validation NDCG@10."""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtlrec.config import Config
from mtlrec.errors import ConfigError
from mtlrec.eval.evaluator import LOWER_IS_BETTER, evaluate
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import Task
from mtlrec.train.checkpoint import save_checkpoint
from mtlrec.train.data import (
    NegativeSampler,
    PairRows,
    TrainingData,
    heldout_positive_rows,
    row_logits,
    train_positive_rows,
)
from mtlrec.train.distributed import Dist, average_gradients
from mtlrec.weighting.base import WeightingContext, WeightingStrategy

VALID_LOSS_SEED = 7
SELECT_SEED = 11


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch
    best_epoch: int = 0
    best_valid: float = float("-inf")  # the selection score (negated for lower-is-better metrics)
    seconds: float = 0.0


OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")


def build_optimizers(config: Config, model: MultiTaskModel, weighting: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """The model's parameters with the configured weight decay; learned task weights without (decay would pull
    them back towards their start). With ``train.sparse_ids`` the id tables get sparse gradients and their own lazy
    Adam (same learning rate and betas as AdamW): a second optimizer whose step touches only the rows read. A
    fine-tuned language model's adapters have their own learning rate (``text.lora.lr``); frozen parameters (the
    language model's base weights) are left out."""
    tc = config.train
    model.use_sparse_ids(tc.sparse_ids)
    sparse = [table.weight for table in model.id_tables()] if tc.sparse_ids else []
    tuned = model.language_model_parameters()
    dense = [p for p in model.parameters() if p.requires_grad and all(p is not s for s in [*sparse, *tuned])]
    groups = [{"params": dense}, {"params": list(weighting.parameters()), "weight_decay": 0.0}]
    if tuned:
        groups.append({"params": tuned, "lr": config.text.lora.lr})
    if tc.optimizer == "adamw":
        optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)]
    elif tc.optimizer == "sgd":
        optimizers = [torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)]
    else:
        raise ConfigError(f"train.optimizer: unknown optimizer '{tc.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=tc.lr))
    return optimizers


class Trainer:
    def __init__(
        self,
        config: Config,
        model: MultiTaskModel,
        tasks: dict[str, Task],
        weighting: WeightingStrategy,
        data: TrainingData,
        progress: bool = True,
        log: Callable[[str], None] = print,
        group: Dist | None = None,
        checkpoint: Path | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        """``group``: this process's place in data-parallel training (train/distributed.py); None: one process.
        ``checkpoint``: the file rank 0 keeps the training state in (train/checkpoint.py) at the end of every epoch
        and every ``train.checkpoint_every`` steps; None: no checkpoints. ``identity``: stored in each checkpoint
        (the config and the data's fingerprint), so a resume can check it goes on with the same run."""
        self.config, self.model, self.tasks, self.weighting, self.data = config, model, tasks, weighting, data
        self.checkpoint, self.identity = checkpoint, identity or {}
        self.result, self.best_state = TrainResult(), None  # the run so far; the best epoch's weights
        self.stopped = False  # early stopping has ended training
        self.group = group or Dist()
        self.progress, self.log = progress and self.group.main, log if self.group.main else (lambda _: None)
        if config.train.batch_size % self.group.world:
            raise ConfigError(f"train.batch_size ({config.train.batch_size}) must divide evenly among the "
                              f"{self.group.world} processes: each takes an equal share of every batch")  # fmt: skip
        self.optimizers = build_optimizers(config, model, weighting)
        self.sparse_parameters = [table.weight for table in model.id_tables()] if config.train.sparse_ids else []
        self.weighting_context = WeightingContext(model.shared_parameters(), model.last_shared_parameters())
        self.rng = np.random.default_rng(config.train.seed)  # the shuffle, and with one process the extra rows
        self.rows_seen = 0  # (user, item) rows the losses of the last epoch saw: positives, negatives, extra rows
        rank = self.group.rank
        # Several processes: the same shuffle everywhere, each its own negatives and extra rows.
        self.own_rng = np.random.default_rng([config.train.seed, rank]) if self.group.enabled else self.rng
        # cold items (data.cold_items) are held out of training entirely: not even drawn as negatives
        self.sampler = NegativeSampler(data.split, seed=config.train.seed + 1 + 7919 * rank, exclude=data.cold_items)
        valid_sampler = NegativeSampler(data.split, seed=VALID_LOSS_SEED, exclude=data.cold_items)
        self.valid_rows = valid_sampler.rows(heldout_positive_rows(data, "valid"), config.train.negatives)
        n_eval, n_select = len(data.split.eval_users), config.eval.select_users
        self.select_sample = None  # positions of split.eval_users ranked for early stopping (None = all)
        if 0 < n_select < n_eval:
            self.select_sample = np.sort(np.random.default_rng(SELECT_SEED).choice(n_eval, n_select, replace=False))

    def _row_losses(self, rows: PairRows) -> dict[str, torch.Tensor]:
        """Every task's loss on the same rows; a task masks the rows it has no label for. Logits come from the
        forward pass under the configured precision; the losses are computed in float32."""
        here = self.model.here
        bf16 = self.config.train.precision == "bf16"
        with torch.autocast(self.model.device.type, torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = row_logits(self.model, self.data.split, rows)
        losses = {}
        for name, task in self.tasks.items():
            targets, mask = task.labels(rows)
            mask = here(mask & torch.from_numpy(rows.for_task(name)))
            losses[name] = task.loss(logits[name].float(), here(targets), mask)
        return losses

    def _validate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Validation metrics (full ranking, PROTOCOL.md) and losses; with several processes rank 0 computes them
        for all users and broadcasts them, so every rank takes the same early-stopping decisions."""
        valid = evaluate(self.model, self.tasks, self.data, dict(self.config.eval.blend), stages=("valid",),
                         ks=self.config.eval.ks, batch_users=self.config.eval.batch_users,
                         sample=self.select_sample)["valid"]  # fmt: skip
        return valid, self._valid_losses()

    @torch.no_grad()
    def _valid_losses(self) -> dict[str, float]:
        self.model.eval()
        losses = self._row_losses(self.valid_rows)
        self.model.train()
        return {name: float(loss) for name, loss in losses.items()}

    def _epoch(self, epoch: int, resume: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """One pass over the train interactions: mean task losses, and the mean task weights actually used.
        ``resume``: a checkpoint taken inside this epoch; its steps are skipped and its sums carried on."""
        if resume is not None:  # the epoch's shuffle comes from the generator as it was when the epoch began
            self.rng.bit_generator.state = resume["position"]["shuffle"]
        shuffle = self.rng.bit_generator.state
        positions = self.data.split.train_positions()
        positions = positions[self.rng.permutation(len(positions))]
        size = self.config.train.batch_size
        if self.group.enabled:  # this rank's share of every global batch; equal shares, so equal step counts
            world = self.group.world
            positions = positions[: len(positions) - len(positions) % world][self.group.rank :: world]
            size //= world
        sums: dict[str, float] = defaultdict(float)
        weights: dict[str, float] = defaultdict(float)
        steps = self.rows_seen = 0
        if resume is not None:
            at = resume["position"]
            sums.update(at["sums"]), weights.update(at["weights"])
            steps, self.rows_seen = at["step"], at["rows_seen"]
            self._set_process_state(resume["rngs"][self.group.rank])
        every = self.config.train.checkpoint_every
        starts = range(steps * size, len(positions), size)
        bar = tqdm(starts, desc=f"epoch {epoch}", leave=False, disable=not self.progress)
        for start in bar:
            positives = train_positive_rows(self.data, positions[start : start + size])
            rows = self.sampler.rows(positives, self.config.train.negatives)
            for name, task in self.tasks.items():
                if (extra := task.extra_rows(rows, self.own_rng)) is not None:
                    rows = rows.extend(extra, name)
            losses = self._row_losses(rows)
            self.rows_seen += len(rows.items)
            for name, w in self.weighting.weights().items():
                weights[name] += w
            total = self.step(losses)
            steps += 1
            for name, loss in losses.items():
                sums[name] += loss.item()
            sums["total"] += total.item()
            if steps % 20 == 0:
                bar.set_postfix({k: f"{v / steps:.4f}" for k, v in sums.items()})
            if every > 0 and steps % every == 0 and start + size < len(positions):
                position = {"epoch": epoch, "step": steps, "shuffle": shuffle, "sums": dict(sums),
                            "weights": dict(weights), "rows_seen": self.rows_seen}  # fmt: skip
                self._save(position)
        n = max(steps, 1)
        means = self.group.mean({k: v / n for k, v in sums.items()})
        return means, self.group.mean({k: v / n for k, v in weights.items()})

    def step(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step on this batch's task losses (averaged over the processes); the combined loss."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        total = self.weighting.backward(losses, self.weighting_context)
        average_gradients(self.parameters, self.group, sparse=self.sparse_parameters)
        for optimizer in self.optimizers:
            optimizer.step()
        self.weighting.after_step()
        return total

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in [*self.model.parameters(), *self.weighting.parameters()] if p.requires_grad]

    def fit(self, resume: dict[str, Any] | None = None) -> TrainResult:
        """Train until ``train.epochs`` or early stopping; the best epoch's weights end in the model. ``resume``: a
        checkpoint of this same run (train/checkpoint.py) to go on from, exactly where it was taken."""
        tc = self.config.train
        select = tc.select
        self.result, self.best_state, self.stopped, first, inside = TrainResult(), None, False, 1, None
        if resume is not None:
            first, inside = self._restore(resume)
        start = time.perf_counter() - self.result.seconds
        self.model.train()
        for epoch in range(first, tc.epochs + 1):
            if self.stopped:
                break
            t0 = time.perf_counter()
            train_losses, weights = self._epoch(epoch, inside)
            inside = None
            train_seconds = time.perf_counter() - t0
            self.weighting.end_epoch(train_losses)
            valid, valid_losses = self.group.broadcast(self._validate() if self.group.main else None)
            entry = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 3),
                     "train_seconds": round(train_seconds, 3), "train_rows": self.rows_seen, "weights": weights,
                     "train_loss": train_losses, "valid_loss": valid_losses, "valid": valid}  # fmt: skip
            result = self.result
            result.history.append(entry)
            if select not in valid:
                raise ConfigError(f"train.select: validation has no metric '{select}'; it has {', '.join(valid)}")
            score = -valid[select] if select in LOWER_IS_BETTER else valid[select]
            improved = score > result.best_valid
            if improved:
                result.best_valid, result.best_epoch = score, epoch
                self.best_state = copy.deepcopy(self.model.state_dict())
            losses = " ".join(f"{k}={v:.4f}" for k, v in train_losses.items())
            self.log(f"epoch {epoch:3d}  loss {losses}  valid {select}={valid[select]:.4f}{' *' if improved else ''}"
                     f"  ({entry['seconds']:.1f}s)")  # fmt: skip
            if epoch - result.best_epoch >= tc.patience:
                self.log(f"early stop: no better valid {select} for {tc.patience} epochs")
                self.stopped = True
            result.seconds = time.perf_counter() - start
            self._save({"epoch": epoch + 1, "step": 0})
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.result.seconds = time.perf_counter() - start
        return self.result

    # -- checkpoints (train/checkpoint.py) ---------------------------------------------------------------------------
    def _process_state(self) -> dict[str, Any]:
        """What this process holds that differs between ranks: every random generator its training draws from, and
        the model's training state outside its weights (a fine-tuned language model's memory bank), as they are."""
        states: dict[str, Any] = {"shuffle": self.rng.bit_generator.state, "torch": torch.get_rng_state(),
                                  "sampler": self.sampler.rng.bit_generator.state}  # fmt: skip
        if self.own_rng is not self.rng:
            states["own"] = self.own_rng.bit_generator.state
        if self.model.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.model.device)
        model = self.model.training_state()
        if model:
            states["model"] = model
        return states

    def _set_process_state(self, states: dict[str, Any]) -> None:
        self.rng.bit_generator.state = states["shuffle"]
        self.sampler.rng.bit_generator.state = states["sampler"]
        if "own" in states:
            self.own_rng.bit_generator.state = states["own"]
        torch.set_rng_state(states["torch"])
        if "cuda" in states:
            torch.cuda.set_rng_state(states["cuda"], self.model.device)
        self.model.load_training_state(states.get("model", {}))

    def _save(self, position: dict[str, Any]) -> None:
        """A checkpoint at ``position`` (epoch to run next or running, steps of it done), written by rank 0 with every
        rank's random generators."""
        if self.checkpoint is None:
            return
        rngs = self.group.gather(self._process_state())
        if not self.group.main:
            return
        result = self.result
        save_checkpoint(self.checkpoint, {
            "identity": self.identity, "position": position, "stopped": self.stopped, "world": self.group.world,
            "rngs": rngs,
            "model": self.model.state_dict(), "weighting": self.weighting.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers], "best": self.best_state,
            "result": {"history": result.history, "best_epoch": result.best_epoch, "best_valid": result.best_valid,
                       "seconds": result.seconds},
        })  # fmt: skip

    def _restore(self, state: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """Load a checkpoint's state; the epoch to go on with and, when taken inside it, the checkpoint."""
        if state["world"] != self.group.world:
            raise ConfigError(f"the checkpoint was taken with {state['world']} processes; resume it with as many "
                              f"(--nproc {state['world']}), not {self.group.world}")  # fmt: skip
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        self.best_state, self.stopped = state["best"], state["stopped"]
        saved = state["result"]
        self.result = TrainResult(saved["history"], saved["best_epoch"], saved["best_valid"], saved["seconds"])
        position = state["position"]
        if position["step"] > 0:
            return position["epoch"], state
        self._set_process_state(state["rngs"][self.group.rank])
        return position["epoch"], None
