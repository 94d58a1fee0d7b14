"""What a task is: how its labels come from the data, its head, its loss on logits, and its metrics.

The trainer and the evaluator only talk to this interface; a new task kind is one new file and a
``TASKS.register`` line, with no change anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from mtlrec.config import from_dict
from mtlrec.registry import Registry

if TYPE_CHECKING:
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows, TrainingData


@dataclass(frozen=True)
class TaskOptions:
    weight: float = 1.0  # w_t in L = sum_t w_t * L_t (fixed weighting)


@dataclass(frozen=True)
class Features:
    """What a head may read: the shared layers' output and, directly, the input representations (the design
    brief's sketch lets task layers read the input besides the shared layers). Shapes share leading dims."""

    item: torch.Tensor  # [..., dim]
    user: torch.Tensor | None = None  # [..., dim]; None for item-level predictions
    shared: torch.Tensor | None = None  # [..., shared_dim]; None for item-level predictions


@dataclass(frozen=True)
class HeadDims:
    dim: int  # user / item representation width
    shared: int  # width of the shared layers' output
    n_categories: int


class Task:
    """Base class; subclasses set ``options_cls`` and implement the methods below."""

    options_cls: ClassVar[type[TaskOptions]] = TaskOptions
    rankable: ClassVar[bool] = False  # has a per-(user, item) score that can rank items
    select_metric: ClassVar[str] = "ndcg@10"  # validation metric that selects a model trained on this task alone

    def __init__(self, name: str, options: TaskOptions) -> None:
        self.name = name
        self.options = options

    @property
    def weight(self) -> float:
        return self.options.weight

    def prepare(self, data: TrainingData) -> None:
        """Read what the task needs from the training data (train only), before the model is built."""

    def build_head(self, dims: HeadDims) -> nn.Module:
        raise NotImplementedError

    def extra_rows(self, rows: PairRows, rng: np.random.Generator) -> PairRows | None:
        """Rows this task adds to a training batch (labelled for it alone; every other task masks them), with
        ``owner`` pointing at the row of ``rows`` whose user and history they share. None: no extra rows."""
        return None

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets for a batch of (user, item) rows, and a bool mask of rows that have a label."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits to the task's natural scale (probability, rating); only at prediction time."""
        return logits

    def rank_score(self, logits: torch.Tensor) -> torch.Tensor:
        """Score that ranks items (only for rankable tasks)."""
        raise NotImplementedError(f"task '{self.name}' has no per-item ranking score")

    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """Task metrics at ``stage`` ('valid' or 'test')."""
        return {}

    def describe(self, prediction: np.ndarray, categories: list[str]) -> Any:
        """A JSON-friendly view of one row's prediction (a row of ``predict``'s output as numpy), shown in
        recommendations."""
        return round(float(prediction), 4)


TASKS: Registry[type[Task]] = Registry("task")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over labelled rows; 0 (with a gradient path) when the batch has none, so partial labels never NaN."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def build_tasks(spec: dict[str, dict[str, Any]]) -> dict[str, Task]:
    """Tasks from the config's ``tasks`` mapping; a task's type is its name unless it sets ``kind``."""
    tasks: dict[str, Task] = {}
    for name, raw in spec.items():
        raw = dict(raw)
        kind = raw.pop("kind", name)
        cls = TASKS.get(kind)
        tasks[name] = cls(name, from_dict(cls.options_cls, raw, f"tasks.{name}"))
    if not tasks:
        from mtlrec.errors import ConfigError

        raise ConfigError(f"tasks: at least one task is needed; available: {', '.join(TASKS.names())}")
    return tasks
