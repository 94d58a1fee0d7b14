"""Typed, frozen configuration. Precedence: defaults < YAML file < CLI flags. The resolved config is saved with
every run, and unknown keys or wrong types are rejected with the key's dotted path."""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from mtlrec.errors import ConfigError
from mtlrec.text.templates import DEFAULT_ITEM_TEMPLATE


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ml-100k"  # a registered dataset name, or "generic" with data_path
    data_dir: str | None = None  # folder holding dataset folders; else $MTLREC_DATA_DIR, else the cache
    data_path: str | None = None  # interactions file for "generic"
    items_path: str | None = None
    users_path: str | None = None
    social_path: str | None = None  # "generic": user_id,friend_id edges (social task, model.friends)
    columns: dict[str, str] = field(default_factory=dict)  # e.g. {"user_id": "customer"} for other headers
    on_duplicate: str = "error"  # generic data: a repeated (user, item) pair is an error, or keep "first"/"last"
    split_seed: int = 0  # seeds the tie-breaking draw of the temporal split (PROTOCOL.md: 0)
    category_test: float = 0.2  # share of items whose categories are held out to test the category task
    category_valid: float = 0.1  # further share held out for its validation (model selection)
    # cold-start items: a seeded share of items whose train interactions are all removed (eval/cold_start.py);
    # 0 = off. Their validation/test targets stay; cold-item metrics go to metrics.json under 'cold_items'
    cold_items: float = 0.0
    # cold-start users: a seeded share of users with every interaction removed from training (eval/cold_users.py);
    # 0 = off. They are not in the normal evaluation; their metrics go to metrics.json under 'cold_users'
    cold_users: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cold_items < 1.0:
            raise ConfigError(f"data.cold_items: a share of items in [0, 1), got {self.cold_items}")
        if not 0.0 <= self.cold_users < 1.0:
            raise ConfigError(f"data.cold_users: a share of users in [0, 1), got {self.cold_users}")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters (peft) on the language model, trained jointly with the multi-task loss (``text.lora``).

    The base weights stay frozen; each step re-encodes the texts of the items it reads, so the gradient of every
    task's loss reaches the adapters (``models/tuned_text.py``). Needs ``pip install "mtlrec[lora]"``."""

    rank: int = 0  # 0 = off: the language model is frozen and its vectors come from the embedding cache
    alpha: float = 16.0  # the adapters' output is scaled by alpha / rank
    dropout: float = 0.05  # on the adapters' inputs while training (the frozen model's own dropout stays off)
    target_modules: tuple[str, ...] = ("query", "key", "value")  # attention projections of BERT-like models (MiniLM)
    layers: tuple[int, ...] = ()  # transformer layers (0-based) that get adapters; empty = every layer
    lr: float = 5e-4  # the adapters' own learning rate (the rest of the model keeps train.lr)
    max_length: int = 0  # tokens kept per text while fine-tuning and after; 0 = the model's own limit (256)
    # 0: every item a step reads is re-encoded with gradient. N > 0: at most N of them, drawn at random each step;
    # the others read the latest vectors computed for them, without gradient (cheaper, for CPU runs)
    items_per_step: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("rank", self.rank >= 0, "a whole number >= 0 (0 = off)"),
            ("alpha", self.alpha > 0, "a number > 0"),
            ("dropout", 0.0 <= self.dropout < 1.0, "a probability in [0, 1)"),
            ("target_modules", bool(self.target_modules) and all(self.target_modules),
             "a non-empty list of module names (e.g. [query, key, value])"),
            ("layers", all(layer >= 0 for layer in self.layers), "layer indexes >= 0 (empty = every layer)"),
            ("lr", self.lr > 0, "a learning rate > 0"),
            ("max_length", self.max_length >= 0, "a token count >= 0 (0 = the model's own limit)"),
            ("items_per_step", self.items_per_step >= 0, "a whole number >= 0 (0 = every item a step reads)"),
        ]  # fmt: skip
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"text.lora.{key}: expected {expected}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class TextConfig:
    encoder: str = "sentence-transformers"  # or "hashing" (fast, for tests only)
    model: str | None = None  # language model name or local path; None = the encoder's default (all-MiniLM-L6-v2)
    template: str = DEFAULT_ITEM_TEMPLATE
    batch_size: int = 128
    cache_dir: str | None = None  # default: $MTLREC_CACHE_DIR/embeddings or ~/.cache/mtlrec/embeddings
    dim: int | None = None  # only for encoders that take a dimension (hashing)
    lora: LoraConfig = field(default_factory=LoraConfig)  # fine-tuning the language model (off by default)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "shared-bottom"
    dim: int = 64  # width of user and item representations
    hidden: tuple[int, ...] = (128, 64)  # shared layers over a (user, item) pair
    dropout: float = 0.1
    # training only: chance that an item's id part is replaced by the learned default id (the one items without
    # a train interaction use), so the default and the text projection learn to stand in for ids (cold items)
    id_dropout: float = 0.1
    history_len: int = 50  # most recent history items pooled into the user representation
    experts: int = 4  # mmoe: experts shared by every task; ple: shared experts in each level
    task_experts: int = 1  # ple: experts of each task in each level (mmoe and shared-bottom ignore it)
    levels: int = 1  # ple: stacked extraction levels (1 = CGC); every level's experts have layer sizes `hidden`
    user_tower: str = "pool"  # "pool" (recency-weighted mean of the history) or "transformer" (causal, SASRec)
    tower_layers: int = 2  # transformer tower: self-attention blocks over the last `history_len` items
    tower_heads: int = 2  # transformer tower: attention heads (must divide `dim`)
    friends: int = 0  # > 0: the user representation attends over up to this many friends (needs a social graph)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adamw"  # or "sgd"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    batch_size: int = 512  # positive interactions per step (negatives come on top)
    negatives: int = 8  # uniform negatives sampled per positive, shared by every task's rows
    epochs: int = 30
    patience: int = 3  # epochs without a better validation score before stopping
    select: str = "ndcg@10"  # validation metric for early stopping and the kept weights (rmse/mae: lower wins)
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = all cores this process may use
    device: str = "cpu"  # a torch device: cpu, cuda, cuda:1, mps
    # "bf16": the forward passes of training run under bfloat16 autocast (CUDA's tensor cores; on CPUs without bf16
    # instructions it is slower), the weights and the optimiser stay float32; evaluation is always float32
    precision: str = "fp32"
    weighting: str = "fixed"
    # true: the user and item id tables get sparse gradients (only the rows a step read) and a lazy Adam
    # (torch.optim.SparseAdam) updates only those rows, so a step costs the same whatever the number of users and
    # items; the other parameters keep train.optimizer. Needs adamw; no weight decay on the id tables. For worlds
    # with millions of ids (benchmarks/suite.py); MovieLens-sized runs train as well either way.
    sparse_ids: bool = False
    # a crash-safe checkpoint (run folder/checkpoint.safetensors) after every epoch and, when > 0, every this many
    # steps; `mtlrec train --resume RUN` goes on from it exactly (same metrics as a run never stopped)
    checkpoint_every: int = 0


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (10, 20)
    # task -> weight of its score in the ranking; empty = no ranking (a model without a rankable task)
    blend: dict[str, float] = field(default_factory=lambda: {"interest": 1.0})
    batch_users: int = 128
    # > 0: early stopping ranks a seeded sample of this many validation users each epoch (full ranking of a large
    # catalogue per epoch is the main cost); the reported valid and test figures always rank every user
    select_users: int = 0


def _default_tasks() -> dict[str, dict[str, Any]]:
    # Chosen on validation (MovieLens-100K): a lighter rating loss lets interest and genre learn faster, and the
    # rating head's dropout keeps its validation RMSE flat instead of rising after epoch 5.
    return {"interest": {"weight": 1.0}, "rating": {"weight": 0.2}, "genre": {"weight": 0.2}}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, dict[str, Any]] = field(default_factory=_default_tasks)  # task name -> its options
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Apply dotted-key overrides (``{"train.epochs": 5}``), as the CLI flags do."""
        merged = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = merged
            *parents, leaf = key.split(".")
            for depth, part in enumerate(parents):
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{key}: '{'.'.join(parents[: depth + 1])}' is a value, not a section")
            node[leaf] = value
        return from_dict(Config, merged)


D = TypeVar("D")
INT64 = 2**63  # integers must fit in 64 bits: every count, size and seed reaches numpy or torch
_short = reprlib.Repr()  # values in messages: a long string or list is cut, never quoted whole
_short.maxstring = _short.maxother = 60


def from_dict(cls: type[D], data: Any, path: str = "") -> D:
    """Build dataclass ``cls`` from plain data, rejecting unknown keys and wrong types by dotted path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known, key=str)  # YAML keys may be numbers or null too
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key '{where}{unknown[0]}'; valid keys here: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}" if path else name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_short.repr(value)}")
        return tuple(_coerce(v, args[0], f"{path}[{k}]") for k, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_short.repr(value)}")
        return {str(k): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_short.repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if -INT64 <= value < INT64:
                return value
            raise ConfigError(f"{path}: {_short.repr(value)} is too large (a 64-bit integer at most)")
        raise ConfigError(f"{path}: expected an integer, got {_short.repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond a float's range
                number = math.inf
            if math.isfinite(number):
                return number
            raise ConfigError(f"{path}: expected a finite number, got {_short.repr(value)}")
        raise ConfigError(f"{path}: expected a number, got {_short.repr(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {_short.repr(value)}")
    raise ConfigError(f"{path}: unsupported config type {tp}")  # a programming error, named for the maintainer


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


YAML_MAX_VALUES = 100_000  # values a document may hold once its aliases are expanded; configs hold hundreds


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many values ``node`` holds with every alias expanded (an alias is the node it names, shared). Raises a
    ConstructorError for a node that contains itself or an expansion past YAML_MAX_VALUES (a "billion laughs")."""
    key = id(node)
    if key in sizes:
        size = sizes[key]
        if size is None:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to a value that contains it: a loop", node.start_mark
            )
        return size
    sizes[key] = None  # being expanded
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    if size > YAML_MAX_VALUES:
        raise yaml.constructor.ConstructorError(
            None, None, f"its aliases expand to over {YAML_MAX_VALUES:,} values", node.start_mark
        )
    sizes[key] = size
    return size


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not a silent last-one-wins,
    and aliases may neither loop nor expand past YAML_MAX_VALUES (code that walks a config would expand them)."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the base class says so
                break
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (first on line {first})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """A YAML document read with the strict loader (raises yaml.YAMLError, RecursionError or ValueError)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> Any:
    """The YAML document at ``path`` (None when empty), or a ConfigError naming the file and, where known, the line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                          "save the file as UTF-8") from None  # fmt: skip
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of over 4,300 digits
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (dotted keys, from CLI flags)."""
    config = Config()
    if path is not None:
        raw = read_yaml(path)
        try:
            config = from_dict(Config, {} if raw is None else raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return config.with_overrides(overrides or {})


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
