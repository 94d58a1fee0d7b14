"""Config precedence, validation by dotted path, and the brief's weighted loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtlrec.config import Config, load_config
from mtlrec.errors import ConfigError
from mtlrec.tasks import build_tasks
from mtlrec.weighting import WEIGHTINGS


def test_precedence_defaults_then_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 0.01\nmodel:\n  hidden: [32, 16]\n")
    config = load_config(path, {"train.epochs": 3})
    assert config.train.epochs == 3  # flag wins
    assert config.train.lr == 0.01  # file beats default
    assert config.model.hidden == (32, 16)
    assert config.train.batch_size == Config().train.batch_size  # default kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epoch: 3\n", "unknown config key 'train.epoch'"),
        ("train:\n  epochs: many\n", "train.epochs: expected an integer"),
        ("model:\n  hidden: [8, x]\n", "model.hidden[1]: expected an integer"),
        ("train: [1, 2]\n", "train: expected a mapping"),
        ("train:\n  epochs: [\n", "line"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_unknown_task_option_is_rejected_with_its_path() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'tasks.rating.wieght'"):
        build_tasks({"rating": {"wieght": 1.0}})
    with pytest.raises(ConfigError, match="unknown task 'ratings'; valid names: genre, interest, "):
        build_tasks({"ratings": {}})


def test_task_kind_that_is_not_a_name() -> None:
    """Found by fuzzing: `kind: [1]` in a task's options raised TypeError (unhashable) in the registry lookup."""
    with pytest.raises(ConfigError, match=r"unknown task '\[1\]'; valid names: genre, interest"):
        build_tasks({"interest": {"kind": [1]}})


def test_brief_example_weights_give_the_brief_loss() -> None:
    """w = (0.6, 0.4), L_user = 0.2, L_content = 0.3  ->  L = 0.24 (the design brief's worked example)."""
    config = load_config(overrides={"tasks": {"interest": {"weight": 0.6}, "genre": {"weight": 0.4}}})
    tasks = build_tasks(config.tasks)
    strategy = WEIGHTINGS.get("fixed")(tasks)
    total = strategy.combine({"interest": torch.tensor(0.2), "genre": torch.tensor(0.3)})
    assert float(total) == pytest.approx(0.24)
    assert strategy.weights() == {"interest": 0.6, "genre": 0.4}


def test_saved_config_round_trips(tmp_path: Path) -> None:
    from mtlrec.config import save_config

    config = load_config(overrides={"model.hidden": [10, 5], "eval.blend": {"interest": 1.0, "rating": 0.3}})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


# -- found by fuzzing (tests/test_fuzz_config.py) --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({1: 2, "zzz": 3}, "unknown config key '1'"),  # mixed key types: sorting them raised TypeError
        ({None: 1, "train": {}}, "unknown config key 'None'"),
        ({"train": {"lr": float("nan")}}, "train.lr: expected a finite number, got nan"),  # NaN was accepted
        ({"train": {"lr": float("inf")}}, "train.lr: expected a finite number, got inf"),
        ({"data": {"category_test": 10**400}}, "data.category_test: expected a finite number"),
        ({"train": {"epochs": 2**63}}, "train.epochs: 9223372036854775808 is too large"),  # huge ints were accepted
        ({"model": {"hidden": [8, -(2**70)]}}, "model.hidden[1]: -1180591620717411303424 is too large"),
    ],
)
def test_hostile_values_are_rejected_with_their_path(data: dict, message: str) -> None:
    from mtlrec.config import from_dict

    with pytest.raises(ConfigError) as info:
        from_dict(Config, data)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("train:\n  lr: 0.1  # café\n".encode("latin-1"), "line 2: not UTF-8 text (byte 0xe9)"),  # UnicodeDecodeError
        ("train:\n  epochs: 3\n".encode("utf-16"), "line 1: not UTF-8 text"),
        (b"train:\n  epochs: 3\n  epochs: 5\n", "line 3: not valid YAML (key 'epochs' appears twice (first on line 2"),
        (b"[" * 5000 + b"]" * 5000, "not valid YAML (nested too deeply)"),  # RecursionError
        (b"train:\n  epochs: 1" + b"0" * 5000 + b"\n", "not valid YAML (Exceeds the limit"),  # ValueError
        # a loop: walking the config recursed until RecursionError, a traceback from the CLI
        (b"tasks:\n  interest: &x {weight: *x}\n", "line 2: not valid YAML (an alias refers to a value that contains"),
        # a "billion laughs": 9 aliases a level; e (line 5) holds 66,430 values and passes, f (line 6) 597,871
        (b"a: &a [0,0,0,0,0,0,0,0,0]\n" + b"".join(f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n".encode()
                                                 for p, n in zip("abcdef", "bcdefg", strict=True)),
         "line 6: not valid YAML (its aliases expand to over 100,000 values"),
    ],
)
def test_hostile_config_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_config_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path)


def test_bad_compare_spec_files(tmp_path: Path) -> None:
    """The compare spec went through yaml.safe_load unguarded: YAML errors, a missing file and a list escaped."""
    from mtlrec.eval.compare import load_spec

    for content, message in [(b"seeds: [1\n", "line 2: not valid YAML"), (b"- 1\n", "expected a mapping"),
                             (b"seeds: [1]\nseeds: [2]\n", "appears twice")]:  # fmt: skip
        (tmp_path / "spec.yaml").write_bytes(content)
        with pytest.raises(ConfigError, match=message):
            load_spec(tmp_path / "spec.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
