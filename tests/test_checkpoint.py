"""Crash-safe training: checkpoints are atomic and checked, a run killed anywhere resumes to the same bytes of
metrics.json as a run never stopped, and two runs with one seed write identical metrics.json."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import crash_at, make_world, run_cli, tiny_overrides
from mtlrec.config import load_config
from mtlrec.errors import ArtifactError, ConfigError
from mtlrec.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from mtlrec.train.run import train_run


def quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- the file


def test_a_checkpoint_keeps_every_kind_of_state(tmp_path: Path) -> None:
    state = {"ints": {3: torch.arange(4), 7: {"step": torch.tensor(2.0)}}, "big": 2**100 + 1, "nan": math.nan,
             "none": None, "flags": [True, "x", 1.5], "nested": [{"a": torch.ones(2, 3, dtype=torch.bfloat16)}],
             "empty": torch.zeros(0, 4)}  # fmt: skip
    save_checkpoint(tmp_path / CHECKPOINT, state)
    back = load_checkpoint(tmp_path / CHECKPOINT)
    assert list(back["ints"]) == [3, 7] and torch.equal(back["ints"][3], torch.arange(4))  # int keys stay ints
    assert back["ints"][7]["step"].item() == 2.0 and back["big"] == 2**100 + 1 and math.isnan(back["nan"])
    assert back["none"] is None and back["flags"] == [True, "x", 1.5]
    assert back["nested"][0]["a"].dtype == torch.bfloat16 and back["empty"].shape == (0, 4)
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()


def test_a_damaged_checkpoint_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"w": torch.arange(1000, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit inside the tensor bytes: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{CHECKPOINT}: the checkpoint is corrupt"):
        load_checkpoint(path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # cut short
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path))  # a safetensors file, but not ours
    with pytest.raises(ArtifactError, match="not an mtlrec training checkpoint"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- kill and resume


def overrides(world: Path, **extra: object) -> dict[str, object]:
    return tiny_overrides(world, **{"train.checkpoint_every": 3, "train.epochs": 5, "train.patience": 2, **extra})


@pytest.mark.parametrize("extra", [
    {"train.weighting": "dwa"},
    {"train.weighting": "pcgrad", "model.user_tower": "transformer"},
    {"train.weighting": "gradnorm", "train.sparse_ids": True},
    {"train.weighting": "uncertainty", "tasks": {"interest": {}, "next_item": {"weight": 0.3}, "genre": {}}},
], ids=["dwa", "pcgrad-transformer", "gradnorm-sparse", "uncertainty-next-item"])  # fmt: skip
def test_a_run_killed_anywhere_resumes_to_the_same_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             extra: dict) -> None:  # fmt: skip
    world = make_world(tmp_path / "w")
    config = load_config(overrides=overrides(world, **extra))
    train_run(config, tmp_path / "whole", progress=False, log=quiet)
    whole = (tmp_path / "whole" / "metrics.json").read_bytes()
    for step in (2, 5, 11, 24):  # before the first checkpoint, inside epochs, at an epoch's first step
        out = tmp_path / f"killed-{step}"
        with monkeypatch.context() as m:
            crash_at(step, m)
            with pytest.raises(SystemExit):
                train_run(config, out, progress=False, log=quiet)
        if not (out / CHECKPOINT).exists():  # killed before the first checkpoint: nothing to resume
            with pytest.raises(ArtifactError, match="before its first checkpoint"):
                train_run(config, out, progress=False, log=quiet, resume=True)
            continue
        metrics = train_run(config, out, progress=False, log=quiet, resume=True)
        assert (out / "metrics.json").read_bytes() == whole, step
        assert metrics["resumed"] and not (out / CHECKPOINT).exists()  # a whole run keeps no checkpoint


def test_two_runs_with_one_seed_write_identical_metrics(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w")
    config = load_config(overrides=overrides(world, **{"train.checkpoint_every": 0}))
    for name in ("a", "b"):
        train_run(config, tmp_path / name, progress=False, log=quiet)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    other = load_config(overrides=overrides(world, **{"train.seed": 1}))
    train_run(other, tmp_path / "c", progress=False, log=quiet)
    assert (tmp_path / "a" / "metrics.json").read_bytes() != (tmp_path / "c" / "metrics.json").read_bytes()


def test_sigkill_then_resume_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = make_world(tmp_path / "w", n_users=200, per_user=20)
    flags = ["--dataset", "generic", "--data-path", str(world / "interactions.csv"), "--items-path",
             str(world / "items.csv"), "--encoder", "hashing", "--set", "text.dim=32", "--set", "model.dim=16",
             "--epochs", "6", "--batch-size", "64", "--set", "train.checkpoint_every=5", "--set",
             "train.patience=6", "--threads", "1", "--no-progress"]  # fmt: skip
    code, _, err = run_cli(["train", *flags, "--output", str(tmp_path / "whole")], capsys)
    assert code == 0, err
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "mtlrec", "train", *flags, "--output", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere further on: inside a step, or writing the next checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / CHECKPOINT).exists() and not (out / "metrics.json").exists()
    code, _, err = run_cli(["train", "--output", str(out), *flags], capsys)  # afresh over it: refused
    assert code == 2 and f"--resume {out}" in err
    code, _, err = run_cli(["train", "--resume", str(out), "--epochs", "3"], capsys)  # its own config only
    assert code == 2 and "drop the other settings (train.epochs)" in err
    code, _, err = run_cli(["train", "--resume", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert (out / "metrics.json").read_bytes() == (tmp_path / "whole" / "metrics.json").read_bytes()
    code, _, err = run_cli(["train", "--resume", str(out)], capsys)
    assert code == 2 and "the run finished" in err


def test_a_checkpoint_resumes_only_its_own_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(tmp_path / "w")
    config = load_config(overrides=overrides(world))
    with monkeypatch.context() as m:
        crash_at(8, m)
        with pytest.raises(SystemExit):
            train_run(config, tmp_path / "run", progress=False, log=quiet)
    changed = load_config(overrides=overrides(world, **{"train.lr": 0.01}))
    with pytest.raises(ConfigError, match=r"another config \(train.lr differs\)"):
        train_run(changed, tmp_path / "run", progress=False, log=quiet, resume=True)
    other_world = make_world(tmp_path / "w2", seed=5)
    with pytest.raises(ArtifactError, match="trained on other data"):
        train_run(load_config(overrides=overrides(other_world)), tmp_path / "run", progress=False, log=quiet,
                  resume=True)  # fmt: skip
    (tmp_path / "run" / (CHECKPOINT + ".tmp")).write_bytes(b"half a file")  # a kill while writing the next one
    metrics = train_run(config, tmp_path / "run", progress=False, log=quiet, resume=True)
    assert metrics["resumed"]
