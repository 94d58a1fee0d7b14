"""User profiling: each user's attributes (age bucket, gender, occupation) from their behaviour alone.

The user-level mirror of ``genre``: users get seeded roles (``options.test`` / ``options.valid`` shares held out,
the rest TRAIN, as ``train.data.category_roles`` does for items); only TRAIN users' attributes are ever trained
on, and ``evaluate`` classifies the held-out users from their user representation (id embedding and history, never
their attributes: the user tower does not read user features).

Classes: ``age`` is bucketed by ``options.age_buckets`` (the lower bounds of every bucket but the first; the
default is MovieLens-1M's <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+, which maps ML-1M's own age codes to
their bucket); every other attribute is categorical over its sorted distinct values. A user whose value is
missing (empty) is masked for that attribute only.

Roles are seeded by ``options.seed`` (default 0). ``TrainingData`` carries no split seed, so this is a fixed
seed of the task, as documented here, rather than ``data.split_seed``.

Loss: one softmax cross-entropy per attribute over its slice of the concatenated logits, each a masked mean over
the labelled rows of the batch, then the mean over attributes. A row is labelled when it is an observed
interaction (``rows.positive``; never a sampled negative) of a TRAIN user, so a user counts once per
interaction.

The head stores the class names it was trained with (a uint8 JSON buffer) and resizes its output layer to a
loaded state dict, so a run directory reloads (``Recommender.load``) without the training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mtlrec.data.splits import TEST, TRAIN, VALID
from mtlrec.errors import ConfigError, DataError
from mtlrec.tasks.base import TASKS, Features, HeadDims, Task, TaskOptions, masked_mean
from mtlrec.train.data import category_roles

if TYPE_CHECKING:
    from mtlrec.data.dataset import Dataset
    from mtlrec.eval.evaluator import EvalContext
    from mtlrec.train.data import PairRows, TrainingData

MISSING = -1  # class index of a user whose attribute is unknown (or hidden: not a labelled row)


@dataclass(frozen=True)
class ProfileOptions(TaskOptions):
    attributes: tuple[str, ...] = ("age", "gender", "occupation")  # columns of the dataset's users table
    age_buckets: tuple[int, ...] = (18, 25, 35, 45, 50, 56)  # lower bounds of the age buckets after the first
    test: float = 0.2  # share of users whose attributes are held out for test
    valid: float = 0.1  # further share held out for validation (model selection)
    seed: int = 0  # seeds which users are held out


def age_labels(bounds: tuple[int, ...]) -> list[str]:
    """Bucket names in age order: (18, 25, 35) -> ['<18', '18-24', '25-34', '35+']."""
    inner = [f"{lo}-{hi - 1}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return [f"<{bounds[0]}", *inner, f"{bounds[-1]}+"]


def macro_f1(pred: np.ndarray, true: np.ndarray) -> float:
    """Single-label macro-F1: the mean of per-class F1 = 2 TP / (2 TP + FP + FN) over the classes that occur in
    ``true`` or ``pred`` (= sklearn ``f1_score(true, pred, average="macro")``)."""
    classes = np.union1d(pred, true)
    tp = np.array([np.sum((pred == c) & (true == c)) for c in classes], dtype=np.float64)
    fp = np.array([np.sum((pred == c) & (true != c)) for c in classes], dtype=np.float64)
    fn = np.array([np.sum((pred != c) & (true == c)) for c in classes], dtype=np.float64)
    return float(np.mean(2 * tp / (2 * tp + fp + fn))) if len(classes) else 0.0


class ProfileHead(nn.Module):
    """Reads the user representation only: [..., dim] -> [..., sum of class counts] (attributes concatenated).

    ``classes`` (attribute -> class names) is stored in a buffer; a head built before the data is known (a run
    being loaded) takes the output size and the names from the state dict it loads."""

    def __init__(self, dim: int, classes: dict[str, list[str]] | None) -> None:
        super().__init__()
        width = sum(len(names) for names in classes.values()) if classes else 1
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.out = nn.Linear(dim, width)
        encoded = json.dumps(classes or {}).encode()
        self.register_buffer("classes_json", torch.tensor(list(encoded), dtype=torch.uint8))

    def forward(self, f: Features) -> torch.Tensor:
        assert f.user is not None, "a user-level head needs the user representation"
        return self.out(self.mlp(f.user))  # [..., sum of class counts]

    def classes(self) -> dict[str, list[str]]:
        return json.loads(bytes(self.classes_json.tolist()).decode()) if self.classes_json.numel() else {}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Take the shapes of a saved head (its classes) before the values are copied; children load after."""
        weight, names = state_dict.get(prefix + "out.weight"), state_dict.get(prefix + "classes_json")
        if weight is not None and weight.shape != self.out.weight.shape:
            device = self.out.weight.device
            self.out = nn.Linear(weight.shape[1], weight.shape[0], device=device)
        if names is not None and names.shape != self.classes_json.shape:
            self.classes_json = torch.zeros(names.shape, dtype=torch.uint8, device=self.classes_json.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


@TASKS.register("profile")
class ProfileTask(Task):
    options_cls = ProfileOptions
    options: ProfileOptions
    select_metric = "profile_acc"

    def __init__(self, name: str, options: TaskOptions) -> None:
        super().__init__(name, options)
        o, where = self.options, f"tasks.{name}"
        if not o.attributes or len(set(o.attributes)) != len(o.attributes):
            raise ConfigError(f"{where}.attributes: give one or more distinct user columns, got {list(o.attributes)}")
        increasing = bool(o.age_buckets) and all(b < c for b, c in pairwise(o.age_buckets))
        if "age" in o.attributes and not increasing:
            raise ConfigError(f"{where}.age_buckets: give increasing bucket lower bounds such as [18, 25, 35, 45, 50, "
                              f"56], got {list(o.age_buckets)}")  # fmt: skip
        if not (o.test >= 0.0 and o.valid >= 0.0 and o.test + o.valid < 1.0):
            raise ConfigError(f"{where}: test ({o.test}) and valid ({o.valid}) are shares of users held out; each "
                              "must be at least 0 and together under 1")  # fmt: skip
        self.head: ProfileHead | None = None
        self.vocab: dict[str, list[str]] = {}

    # -- data -----------------------------------------------------------------------------------------------------
    def prepare(self, data: TrainingData) -> None:
        """Per user, a class index per attribute (MISSING where unknown), the class names, and the user roles."""
        dataset = data.dataset
        users = dataset.users
        absent = [a for a in self.options.attributes if a not in users.columns]
        if absent:
            raise ConfigError(f"task '{self.name}' needs user attributes {'/'.join(self.options.attributes)}; "
                              f"{dataset.name} has columns [{', '.join(map(str, users.columns))}]; drop the task "
                              f"(or set tasks.{self.name}.attributes to columns it has)")  # fmt: skip
        vocab: dict[str, list[str]] = {}
        columns = []
        for attr in self.options.attributes:
            vocab[attr], index = self._encode(dataset, attr)
            columns.append(index)
        self.vocab = vocab
        self.targets = torch.from_numpy(np.stack(columns, axis=1))  # long [n_users, n_attributes]
        self.roles = category_roles(dataset.n_users, self.options.test, self.options.valid, self.options.seed)
        self.trainable = torch.from_numpy(self.roles == TRAIN)  # bool [n_users]
        if self.head is not None and self.head.classes() and self.head.classes() != vocab:
            raise ConfigError(f"task '{self.name}': the model was trained on the classes {self.head.classes()}, but "
                              f"{dataset.name} has {vocab}; evaluate it on the data it was trained on")  # fmt: skip

    def _encode(self, dataset: Dataset, attr: str) -> tuple[list[str], np.ndarray]:
        """Class names and int64 [n_users] class indexes (MISSING where the value is empty) of one attribute."""
        column = dataset.users[attr]
        missing = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
        if attr == "age":
            age = pd.to_numeric(column.where(~missing), errors="coerce").to_numpy(dtype=np.float64)
            bad = np.flatnonzero(np.isnan(age) & ~missing)
            if len(bad):
                row = int(bad[0])
                first = dataset.first_line.get("users")
                raise DataError(f"age '{column.iloc[row]}' of user '{dataset.users['user_id'].iloc[row]}' is not a "
                                "number", path=dataset.sources.get("users"), field="age",
                                line=None if first is None else first + row,
                                hint="give ages as numbers, or leave the field empty when unknown")  # fmt: skip
            bucket = np.searchsorted(np.asarray(self.options.age_buckets), np.nan_to_num(age), side="right")
            return age_labels(self.options.age_buckets), np.where(missing, MISSING, bucket).astype(np.int64)
        values = [None if gone else str(v).strip() for v, gone in zip(column.tolist(), missing, strict=True)]
        names = sorted({v for v in values if v is not None})
        if not names:
            raise ConfigError(f"task '{self.name}': user attribute '{attr}' of {dataset.name} has no values; drop it "
                              f"from tasks.{self.name}.attributes")  # fmt: skip
        index = {name: k for k, name in enumerate(names)}
        return names, np.array([MISSING if v is None else index[v] for v in values], dtype=np.int64)

    def classes(self) -> dict[str, list[str]]:
        """Attribute -> class names: the prepared data's, else (a loaded run) the head's."""
        if self.vocab:
            return self.vocab
        return self.head.classes() if self.head is not None else {}

    def sizes(self) -> list[int]:
        return [len(names) for names in self.classes().values()]

    # -- model ----------------------------------------------------------------------------------------------------
    def build_head(self, dims: HeadDims) -> nn.Module:
        self.head = ProfileHead(dims.dim, self.vocab or None)
        return self.head

    def labels(self, rows: PairRows) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets long [R, n_attributes] (MISSING where unknown or the row is unlabelled) and the bool [R] mask of
        labelled rows: observed interactions of TRAIN users."""
        users = torch.from_numpy(rows.users)
        mask = torch.from_numpy(rows.positive & rows.for_task(self.name)) & self.trainable[users]
        return torch.where(mask[:, None], self.targets[users], MISSING), mask

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_attribute = []
        for k, part in enumerate(logits.split(self.sizes(), dim=-1)):
            target = targets[:, k]
            ce = F.cross_entropy(part, target.clamp_min(0), reduction="none")  # [R]
            per_attribute.append(masked_mean(ce, mask & (target != MISSING)))
        return torch.stack(per_attribute).mean()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-attribute class probabilities, concatenated like the logits."""
        return torch.cat([torch.softmax(part, dim=-1) for part in logits.split(self.sizes(), dim=-1)], dim=-1)

    # -- metrics --------------------------------------------------------------------------------------------------
    def evaluate(self, ctx: EvalContext, stage: str) -> dict[str, float]:
        """Per attribute, accuracy and macro-F1 on the users held out for ``stage`` (their attributes were never
        trained on), each represented with the history visible at ``stage``; ``profile_acc`` is the mean
        accuracy over attributes. Users held out by ``data.cold_users`` are left out (no history, untrained id)."""
        users = np.flatnonzero(self.roles == (VALID if stage == "valid" else TEST))
        users = np.setdiff1d(users, ctx.data.cold_users)
        if len(users) == 0:
            return {}
        logits = ctx.user_outputs(self.name, users, stage)  # [U, sum of class counts]
        out: dict[str, float] = {}
        accuracies = []
        for k, (attr, part) in enumerate(zip(self.classes(), logits.split(self.sizes(), dim=-1), strict=True)):
            true = self.targets[users, k].numpy()
            known = true != MISSING
            if not known.any():
                continue
            pred, true = part.argmax(-1).numpy()[known], true[known]
            accuracies.append(float(np.mean(pred == true)))
            out[f"{attr}_acc"], out[f"{attr}_macro_f1"] = accuracies[-1], macro_f1(pred, true)
        if accuracies:
            out["profile_acc"] = float(np.mean(accuracies))
        return out

    def describe(self, prediction: np.ndarray, categories: list[str]) -> Any:
        """The most probable class of each attribute: {'gender=M': 0.83, ...}."""
        out = {}
        parts = np.split(prediction, np.cumsum(self.sizes())[:-1])
        for (attr, names), part in zip(self.classes().items(), parts, strict=True):
            top = int(np.argmax(part))
            out[f"{attr}={names[top]}"] = round(float(part[top]), 3)
        return out
