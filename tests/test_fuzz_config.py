"""Hostile configs (hypothesis): dicts, YAML files and dotted overrides with unknown keys at every depth and values of
every wrong type. Each is accepted exactly when an independent type check says it is valid, and otherwise rejected
with a ConfigError naming the key's dotted path; nothing else is ever raised.

Examples in the slow run: dicts 1,000 + YAML files 500 + YAML text 300 + overrides 300 + tasks 200 = 2,300 (see
tests/test_fuzz_loaders.py for the total).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlrec.cli import _settings
from mtlrec.config import Config, from_dict, load_config
from mtlrec.errors import ConfigError, one_line
from mtlrec.tasks import build_tasks

FUZZ = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
INT64 = 2**63
# checked in __post_init__: numbers in [lo, hi) (a tuple's elements each); text.lora's lists of names non-empty
RANGES = {"data.cold_items": (0.0, 1.0), "data.cold_users": (0.0, 1.0), "text.lora.dropout": (0.0, 1.0),
          "text.lora.alpha": (math.ulp(0.0), math.inf), "text.lora.lr": (math.ulp(0.0), math.inf)}  # fmt: skip
INT_RANGES = {f"text.lora.{key}": (0, INT64) for key in ("rank", "layers", "max_length", "items_per_step")}
NAMES = "text.lora.target_modules"


def runs(fast: int, slow: int) -> list:
    return [pytest.param(fast, id=f"fast{fast}"), pytest.param(slow, id=f"slow{slow}", marks=pytest.mark.slow)]


def ran(examples: int, calls: list[int]) -> None:
    """Each property counts the examples it ran: the totals in the module docstring are what runs (`-rP` shows)."""
    print(f"{len(calls)} examples")
    assert len(calls) >= examples, f"hypothesis ran {len(calls)} of {examples} examples"


# -- an independent statement of what each field accepts ------------------------------------------------------------
def fields_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def leaves(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> type of every field, sections included."""
    out: dict[str, Any] = {}
    for name, tp in fields_of(cls).items():
        path = f"{prefix}{name}"
        out[path] = tp
        if dataclasses.is_dataclass(tp):
            out.update(leaves(tp, path + "."))
    return out


LEAVES = leaves()
SECTIONS = [""] + [p for p, tp in LEAVES.items() if dataclasses.is_dataclass(tp)]


def accepts(tp: Any, value: Any, path: str) -> bool:
    """Whether ``value`` is a valid ``tp`` at ``path``, written without looking at config.py's checks."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = fields_of(tp)
        return isinstance(value, dict) and all(
            k in hints and accepts(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()
        )
    if origin in (Union, types.UnionType):
        return (value is None and type(None) in args) or accepts([a for a in args if a is not type(None)][0], value,
                                                                 path)  # fmt: skip
    if tp is Any:
        return True
    if origin is tuple:
        every = isinstance(value, (list, tuple)) and all(accepts(args[0], v, path) for v in value)
        return every and (path != NAMES or (len(value) > 0 and all(value)))
    if origin is dict:
        return isinstance(value, dict) and all(accepts(args[1], v, path) for v in value.values())
    if isinstance(value, bool):
        return tp is bool or tp is Any
    if tp is bool:  # only true or false: no 0/1, no "yes"
        return False
    if tp is int:
        lo, hi = INT_RANGES.get(path, (-INT64, INT64))
        return isinstance(value, int) and lo <= value < hi
    if tp is float:
        if not isinstance(value, (int, float)):
            return False
        try:
            number = float(value)
        except OverflowError:
            return False
        lo, hi = RANGES.get(path, (-math.inf, math.inf))
        return math.isfinite(number) and lo <= number < hi
    if tp is str:
        return isinstance(value, str)
    raise AssertionError(f"no rule for {tp} at {path}")


# -- values --------------------------------------------------------------------------------------------------------
KEYS = st.one_of(st.sampled_from(["epoch", "lr ", "Model", "", "0", "data.dataset", "é", "null"]),
                 st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=6))  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([INT64 - 1, INT64, -INT64, -INT64 - 1, 10**400, -1, 0]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1.0, 1e308]),
    st.text(max_size=8),
    st.sampled_from(["true", "yes", "1", "1.5", "nan", "", "[1, 2]"]),
)
HOSTILE = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(KEYS, SCALARS, max_size=2),
    st.just({"nested": {"deeper": [1, {"x": None}]}}),
    st.lists(st.lists(st.integers(), max_size=2), max_size=2),
)


def valid_value(tp: Any, path: str) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if path in RANGES:
        return st.floats(*RANGES[path], exclude_max=True, allow_infinity=False)
    if path == NAMES:
        return st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4)
    if tp is bool:
        return st.booleans()
    if origin in (Union, types.UnionType):
        return st.one_of(st.none(), valid_value([a for a in args if a is not type(None)][0], path))
    if origin is tuple:
        return st.lists(valid_value(args[0], path), max_size=4)
    if origin is dict:
        return st.dictionaries(KEYS, valid_value(args[1], path), max_size=3)
    if tp is int:
        lo, hi = INT_RANGES.get(path, (-INT64, INT64))
        return st.integers(lo, hi - 1)
    if tp is float:
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70))
    if tp is str:
        return st.text(max_size=10)
    raise AssertionError(f"no strategy for {tp} at {path}")


VALUE_PATHS = sorted(p for p, tp in LEAVES.items() if not dataclasses.is_dataclass(tp) and p != "tasks")


@st.composite
def valid_config(draw) -> dict[str, Any]:
    """The defaults with some fields set to other valid values."""
    data = Config().to_dict()
    for path in draw(st.lists(st.sampled_from(VALUE_PATHS), max_size=4, unique=True)):
        set_path(data, path, draw(valid_value(LEAVES[path], path)))
    return data


def set_path(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".") if path else [""]
    for part in parents:
        data = data[part]
    data[leaf] = value


def get_path(data: dict, path: str) -> Any:
    for part in path.split(".") if path else []:
        data = data[part]
    return data


MUTATIONS = st.one_of(
    st.tuples(st.just("unknown"), st.sampled_from(SECTIONS), KEYS, HOSTILE),
    st.tuples(st.just("value"), st.sampled_from(sorted(LEAVES)), HOSTILE),
    st.tuples(st.just("value"), st.sampled_from(VALUE_PATHS), HOSTILE),
)


def mutated(data: dict, mutation: tuple) -> tuple[dict, str]:
    """(the mutated copy, the dotted path an error must name)."""
    data = copy.deepcopy(data)
    if mutation[0] == "unknown":
        _, section, key, value = mutation
        get_path(data, section)[key] = value
        return data, f"{section}.{key}" if section else key
    _, path, value = mutation
    set_path(data, path, value)
    return data, path


def expect(call, valid: bool, path: str) -> Config | None:
    """Accepted exactly when ``valid``; otherwise a ConfigError that names ``path`` (escaped as messages are)."""
    try:
        config = call()
    except ConfigError as e:
        message = str(e)
        assert not valid, f"a valid value was rejected: {message}"
        assert one_line(path) in message, f"{path!r} not named in: {message}"
        assert "\n" not in message and len(message) <= 1300
        return None
    assert valid, f"accepted although invalid at {path!r}"
    return config


# -- properties ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("examples", runs(50, 1000))
def test_hostile_config_dicts(examples: int) -> None:
    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(base=valid_config(), mutation=MUTATIONS)
    def check(base: dict, mutation: tuple) -> None:
        calls.append(1)
        assert isinstance(from_dict(Config, base), Config)  # the unmutated config is valid
        data, path = mutated(base, mutation)
        config = expect(lambda: from_dict(Config, data), accepts(Config, data, ""), path)
        if config is not None:  # accepted: it round-trips through its plain form
            assert from_dict(Config, config.to_dict()) == config

    check()
    ran(examples, calls)


@pytest.mark.parametrize("examples", runs(30, 500))
def test_hostile_config_files(examples: int) -> None:
    """The same configs written as YAML and read by load_config (YAML adds .nan, .inf, huge ints, dates...)."""

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(base=valid_config(), mutation=MUTATIONS)
    def check(base: dict, mutation: tuple) -> None:
        calls.append(1)
        data, path = mutated(base, mutation)
        try:
            text = yaml.safe_dump(data)
        except (yaml.YAMLError, ValueError):  # not representable (e.g. a 4,300-digit int): not a file anyone has
            return
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "config.yaml"
            file.write_text(text)
            config = expect(lambda: load_config(file), accepts(Config, yaml.safe_load(text), ""), path)
            if config is not None:
                from mtlrec.config import save_config

                save_config(config, file)
                assert load_config(file) == config

    check()
    ran(examples, calls)


YAML_TEXT = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [b"train:\n  epochs: 3\n  epochs: 4\n", b"train:\n\tepochs: 3\n", b"[" * 3000, b"{a: " * 3000,
         b"train: &a [*a]\n", b"!!python/object:os.system {}\n", b"\xef\xbb\xbftrain: {epochs: 2}\n",
         b"\xff\xfetrain", b"train:\n  epochs: !!binary aGVsbG8=\n", b"? [1, 2]\n: 3\n",
         b"train: {epochs: 1" + b"0" * 5000 + b"}\n", b"model: {hidden: !!set {1, 2}}\n",
         b"text: {model: 2020-01-01}\n", b"---\n---\n", b"%YAML 9.9\n---\n", b"~: 1\n1: 2\ntrain: {}\n"]
    ),
)  # fmt: skip


@pytest.mark.parametrize("examples", runs(30, 300))
def test_hostile_yaml_text(examples: int) -> None:
    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(text=YAML_TEXT, cut=st.integers(0, 10**6))
    def check(text: bytes, cut: int) -> None:
        calls.append(1)
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "config.yaml"
            file.write_bytes(text[: cut % (len(text) + 1)] if cut % 3 == 0 else text)
            try:
                load_config(file)
            except ConfigError as e:
                assert str(e).startswith(str(file)) and "\n" not in str(e)

    check()
    ran(examples, calls)


# `--set` splits KEY=VALUE at the first '=', so keys hold none
OVERRIDE_KEYS = st.one_of(st.sampled_from(sorted(LEAVES)), st.sampled_from(VALUE_PATHS),
                          st.tuples(st.sampled_from(sorted(LEAVES)), KEYS).map(".".join),
                          KEYS).filter(lambda k: "=" not in k)  # fmt: skip
SET_VALUES = st.one_of(st.sampled_from(["[1", "{", "'", "1" + "0" * 5000, "[" * 2000, ".nan", "-.inf", "!!binary x",
                                        "2020-01-01", "~", "", ": :", "&a [*a]"]),
                       st.text(max_size=10))  # fmt: skip


@pytest.mark.parametrize("examples", runs(30, 300))
def test_hostile_overrides(examples: int) -> None:
    """`--set KEY=VALUE` as the CLI parses it, then the dotted override applied to the defaults."""

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(key=OVERRIDE_KEYS, value=SET_VALUES)
    def check(key: str, value: str) -> None:
        calls.append(1)
        try:
            overrides = _settings([f"{key}={value}"])
            config = load_config(overrides=overrides)
        except ConfigError as e:
            message = str(e)
            assert "\n" not in message and len(message) <= 1300
            assert one_line(key.strip().split(".")[0]) in message or "--set" in message, message
            return
        assert isinstance(config, Config)

    check()
    ran(examples, calls)


TASK_NAMES = st.sampled_from(["interest", "rating", "genre", "next_item", "social", "profile", "ratings", "x"])
TASK_OPTIONS = st.dictionaries(st.one_of(st.sampled_from(["weight", "kind", "dropout", "attributes", "age_buckets",
                                                          "test", "valid", "seed", "negatives"]), KEYS),
                               st.one_of(HOSTILE, TASK_NAMES), max_size=3)  # fmt: skip


@pytest.mark.parametrize("examples", runs(25, 200))
def test_hostile_task_options(examples: int) -> None:
    """`tasks` is free-form in the config; build_tasks checks each task's options with the same rules."""

    calls: list[int] = []

    @settings(max_examples=examples, **FUZZ)
    @given(tasks=st.dictionaries(TASK_NAMES, TASK_OPTIONS, max_size=3))
    def check(tasks: dict) -> None:
        calls.append(1)
        try:
            config = load_config(overrides={"tasks": tasks})
            build_tasks(config.tasks)
        except ConfigError as e:
            assert "task" in str(e) and "\n" not in str(e), str(e)

    check()
    ran(examples, calls)
