"""A run directory: everything needed to load a trained model without the training data, and no pickle.

config.yaml            resolved config (defaults < file < flags)
model.safetensors      weights
item_vectors.safetensors  the language-model vectors of the item texts (frozen input; with text.lora, those of
                       the fine-tuned language model)
text_adapter.safetensors  the language model's LoRA adapter weights (only with text.lora.rank > 0)
social.safetensors     the friend graph and friends' taste items (only with model.friends > 0)
interactions.safetensors  known interactions per user, time-ordered (history and seen items when serving)
items.parquet          item id, title, categories, year, the text the language model read
ids.json               user ids, item ids (row order of every matrix), category names
meta.json              version, creation time, dataset fingerprint, encoder, sizes
metrics.json           test and validation metrics: the same bytes for the same config, seed and machine
run.json               how the run went: training seconds, threads, texts encoded, resumed or not
history.json, plots/*.png  per-epoch losses, weights and validation metrics
checkpoint.safetensors only while training (train/checkpoint.py): gone once the run is whole
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from mtlrec import __version__
from mtlrec.config import Config, load_config, save_config
from mtlrec.data.splits import Split
from mtlrec.errors import ArtifactError
from mtlrec.models.model import MultiTaskModel
from mtlrec.models.social import SocialInputs
from mtlrec.models.tuned_text import TunedItemEncoder, text_tuning
from mtlrec.tasks.base import Task, build_tasks

ADAPTER = "item_encoder.language_model."  # model state keys of a fine-tuned language model's adapters
SOCIAL_KEYS = ("friends", "mask", "taste_items", "taste_weights")
REQUIRED = ["config.yaml", "model.safetensors", "item_vectors.safetensors", "interactions.safetensors",
            "items.parquet", "ids.json", "meta.json"]  # fmt: skip


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def save_artifact(
    run_dir: Path,
    config: Config,
    model: MultiTaskModel,
    split: Split,
    items: pd.DataFrame,
    texts: list[str],
    user_ids: list[str],
    categories: list[str],
    meta: dict[str, Any],
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    if isinstance(model.item_encoder, TunedItemEncoder):  # the item vectors of the adapters being saved
        model.item_encoder.refresh_text()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith(ADAPTER)}
    save_file(state, str(run_dir / "model.safetensors"))
    save_file({"text": model.item_encoder.text.contiguous()}, str(run_dir / "item_vectors.safetensors"))
    adapter = {k[len(ADAPTER) :]: v.contiguous() for k, v in model.state_dict().items() if k.startswith(ADAPTER)}
    if adapter:
        save_file(adapter, str(run_dir / "text_adapter.safetensors"))
    if model.social is not None:
        save_file(model.social.inputs().tensors(), str(run_dir / "social.safetensors"))
    save_file(
        {"items": torch.from_numpy(split.items), "offsets": torch.from_numpy(split.offsets),
         "role": torch.from_numpy(split.role), "ratings": torch.from_numpy(split.ratings)},
        str(run_dir / "interactions.safetensors"),
    )  # fmt: skip
    table = items[["item_id", "title", "categories", "year"]].copy()
    table["text"] = texts
    table.to_parquet(run_dir / "items.parquet", index=False)
    write_json(run_dir / "ids.json", {"users": user_ids, "items": items["item_id"].tolist(), "categories": categories})
    write_json(run_dir / "meta.json", {"mtlrec_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                       **meta})  # fmt: skip


@dataclass
class Artifact:
    run_dir: Path
    config: Config
    model: MultiTaskModel
    tasks: dict[str, Task]
    split: Split
    items: pd.DataFrame
    user_ids: list[str]
    item_ids: list[str]
    categories: list[str]
    meta: dict[str, Any]


def load_artifact(run_dir: str | Path) -> Artifact:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir} is not a run directory (train one with `mtlrec train --output {run_dir}`)")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{run_dir} is missing {', '.join(missing)}; it is not a complete mtlrec run")
    config = load_config(run_dir / "config.yaml")
    ids = _read(run_dir / "ids.json", lambda p: json.loads(p.read_text()), ("users", "items", "categories"))
    meta = _read(run_dir / "meta.json", lambda p: json.loads(p.read_text()))
    vectors = _read(run_dir / "item_vectors.safetensors", _tensors, ("text",))["text"]
    inter = {k: v.numpy() for k, v in _read(run_dir / "interactions.safetensors", _tensors,
                                            ("items", "offsets", "role", "ratings")).items()}  # fmt: skip
    n_users, n_items = len(ids["users"]), len(ids["items"])
    if vectors.shape[0] != n_items:
        raise ArtifactError(f"{run_dir}/item_vectors.safetensors has {vectors.shape[0]} rows for {n_items} items")
    if len(inter["offsets"]) != n_users + 1 or inter["offsets"][-1] != len(inter["items"]):
        raise ArtifactError(f"{run_dir}/interactions.safetensors does not fit ids.json's {n_users} users")
    tasks = build_tasks(config.tasks)
    social = None
    if config.model.friends > 0:
        if not (run_dir / "social.safetensors").is_file():
            raise ArtifactError(f"{run_dir} is missing social.safetensors, which config.yaml's model.friends needs")
        social = SocialInputs(**_read(run_dir / "social.safetensors", _tensors, SOCIAL_KEYS))
    items = _read(run_dir / "items.parquet", pd.read_parquet, ("item_id", "title"))
    if len(items) != n_items:
        raise ArtifactError(f"{run_dir}/items.parquet has {len(items)} rows for ids.json's {n_items} items")
    tuning = None
    state = _read(run_dir / "model.safetensors", _tensors)
    if config.text.lora.rank > 0:  # the language model with the run's adapters encodes new users' texts
        if not (run_dir / "text_adapter.safetensors").is_file():
            raise ArtifactError(f"{run_dir} is missing text_adapter.safetensors, which config.yaml's text.lora needs")
        if "text" not in items:
            raise ArtifactError(f"{run_dir}/items.parquet lacks text, which the run's fine-tuned language model reads")
        tuning = text_tuning(config, items["text"].astype(str).tolist())
        state.update({ADAPTER + k: v for k, v in _read(run_dir / "text_adapter.safetensors", _tensors).items()})
    model = MultiTaskModel(config.model, tasks, n_users, vectors, len(ids["categories"]), social=social,
                           tuning=tuning)  # fmt: skip
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise ArtifactError(f"{run_dir}/model.safetensors does not fit config.yaml: {first[0].strip()}") from None
    if isinstance(model.item_encoder, TunedItemEncoder):
        model.item_encoder.mark_text_current()  # item_vectors.safetensors: the catalogue under these adapters
        found, trained = model.item_encoder.language_model.name, meta.get("encoder")
        if found != trained:
            warnings.warn(f"{run_dir}: the language model with this run's adapters is '{found}', but the run was "
                          f"trained with '{trained}': new users' texts will not be encoded as in training (the "
                          "stored item vectors are used as they are)", stacklevel=2)  # fmt: skip
    model.eval()
    offsets = inter["offsets"]
    split = Split(n_users, n_items, inter["items"], inter["ratings"], np.arange(len(inter["items"])), offsets,
                  inter["role"])  # fmt: skip
    return Artifact(run_dir, config, model, tasks, split, items, ids["users"], ids["items"], ids["categories"], meta)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _read(path: Path, reader: Callable[[Path], Any], keys: Sequence[str] = ()) -> Any:
    """``reader(path)``, or an ArtifactError naming the file when it cannot be read or lacks one of ``keys``."""
    try:
        value = reader(path)
    except Exception as exc:  # safetensors, JSON and Parquet readers each raise their own types
        raise ArtifactError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:200]}); the run directory is "
                            "damaged: train it again or restore it from a copy") from None  # fmt: skip
    missing = [k for k in keys if k not in value]
    if missing:
        raise ArtifactError(f"{path}: lacks {', '.join(missing)}; the run directory is damaged or from another tool")
    return value
