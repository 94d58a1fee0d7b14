"""The single training loop: mini-batches of observed pairs plus sampled negatives, every task's loss on the
same rows (masked where a row has no label), one combined loss, early stopping on validation NDCG@10."""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtlrec.config import Config
from mtlrec.errors import ConfigError
from mtlrec.eval.evaluator import LOWER_IS_BETTER, evaluate
from mtlrec.models.model import MultiTaskModel
from mtlrec.tasks.base import Task
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


def build_optimizer(config: Config, model: MultiTaskModel, weighting: torch.nn.Module) -> torch.optim.Optimizer:
    """The model's parameters with the configured weight decay; learned task weights without (decay would pull
    them back towards their start); a fine-tuned language model's adapters with their own learning rate
    (``text.lora.lr``). Frozen parameters (the language model's base weights) are left out."""
    tc = config.train
    tuned = model.language_model_parameters()
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in tuned)]
    groups = [{"params": rest}, {"params": list(weighting.parameters()), "weight_decay": 0.0}]
    if tuned:
        groups.append({"params": tuned, "lr": config.text.lora.lr})
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer '{tc.optimizer}'; valid: {', '.join(OPTIMIZERS)}")


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
    ) -> None:
        """``group``: this process's place in data-parallel training (train/distributed.py); None: one process."""
        self.config, self.model, self.tasks, self.weighting, self.data = config, model, tasks, weighting, data
        self.group = group or Dist()
        self.progress, self.log = progress and self.group.main, log if self.group.main else (lambda _: None)
        if config.train.batch_size % self.group.world:
            raise ConfigError(f"train.batch_size ({config.train.batch_size}) must divide evenly among the "
                              f"{self.group.world} processes: each takes an equal share of every batch")  # fmt: skip
        self.optimizer = build_optimizer(config, model, weighting)
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
        """Every task's loss on the same rows; a task masks the rows it has no label for."""
        logits = row_logits(self.model, self.data.split, rows)
        losses = {}
        for name, task in self.tasks.items():
            targets, mask = task.labels(rows)
            losses[name] = task.loss(logits[name], targets, mask & torch.from_numpy(rows.for_task(name)))
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

    def _epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float]]:
        """One pass over the train interactions: mean task losses, and the mean task weights actually used."""
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
        bar = tqdm(range(0, len(positions), size), desc=f"epoch {epoch}", leave=False, disable=not self.progress)
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
            self.optimizer.zero_grad(set_to_none=True)
            total = self.weighting.backward(losses, self.weighting_context)
            average_gradients(self.parameters, self.group)
            self.optimizer.step()
            self.weighting.after_step()
            steps += 1
            for name, loss in losses.items():
                sums[name] += loss.item()
            sums["total"] += total.item()
            if steps % 20 == 0:
                bar.set_postfix({k: f"{v / steps:.4f}" for k, v in sums.items()})
        n = max(steps, 1)
        means = self.group.mean({k: v / n for k, v in sums.items()})
        return means, self.group.mean({k: v / n for k, v in weights.items()})

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in [*self.model.parameters(), *self.weighting.parameters()] if p.requires_grad]

    def fit(self) -> TrainResult:
        tc = self.config.train
        select = tc.select
        result = TrainResult()
        best_state: dict[str, torch.Tensor] | None = None
        start = time.perf_counter()
        self.model.train()
        for epoch in range(1, tc.epochs + 1):
            t0 = time.perf_counter()
            train_losses, weights = self._epoch(epoch)
            train_seconds = time.perf_counter() - t0
            self.weighting.end_epoch(train_losses)
            valid, valid_losses = self.group.broadcast(self._validate() if self.group.main else None)
            entry = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 3),
                     "train_seconds": round(train_seconds, 3), "train_rows": self.rows_seen, "weights": weights,
                     "train_loss": train_losses, "valid_loss": valid_losses, "valid": valid}  # fmt: skip
            result.history.append(entry)
            if select not in valid:
                raise ConfigError(f"train.select: validation has no metric '{select}'; it has {', '.join(valid)}")
            score = -valid[select] if select in LOWER_IS_BETTER else valid[select]
            improved = score > result.best_valid
            if improved:
                result.best_valid, result.best_epoch = score, epoch
                best_state = copy.deepcopy(self.model.state_dict())
            losses = " ".join(f"{k}={v:.4f}" for k, v in train_losses.items())
            self.log(f"epoch {epoch:3d}  loss {losses}  valid {select}={valid[select]:.4f}{' *' if improved else ''}"
                     f"  ({entry['seconds']:.1f}s)")  # fmt: skip
            if epoch - result.best_epoch >= tc.patience:
                self.log(f"early stop: no better valid {select} for {tc.patience} epochs")
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        result.seconds = time.perf_counter() - start
        return result
