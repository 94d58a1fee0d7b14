"""The mtlrec command: output on success; one line and exit status 2, never a traceback, on user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, tiny_overrides


def test_recommend_prints_titles_and_json(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["recommend", str(tiny_run), "--user", "u3", "-k", "4", "--json"], capsys)
    assert code == 0
    items = json.loads(out)
    assert len(items) == 4 and all("title" in i and "scores" in i for i in items)
    code, out, _ = run_cli(["recommend", str(tiny_run), "--user", "u3", "-k", "2"], capsys)
    assert code == 0 and items[0]["item_id"] in out


def test_evaluate_prints_the_metrics(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["evaluate", str(tiny_run), "--json"], capsys)
    stored = json.loads((tiny_run / "metrics.json").read_text())
    assert code == 0
    assert json.loads(out)["test"]["ndcg@10"] == pytest.approx(stored["test"]["ndcg@10"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recommend", "{run}", "--user", "ghost"], "unknown user 'ghost'"),
        (["recommend", "{run}", "--user", "u1", "--blend", "interest=1"], "--blend: expected NAME:WEIGHT"),
        (["recommend", "{run}", "--user", "u1", "--blend", "colour:1"], "'colour' is not a rankable task"),
        (["recommend", "{tmp}/nothing", "--user", "u1"], "is not a run directory"),
        (["train", "-o", "{tmp}/r", "--dataset", "ml-100k", "--data-dir", "{tmp}/empty"], "mtlrec data download"),
        (["train", "--output", "{tmp}/r", "--set", "train.epochz=3"], "unknown config key 'train.epochz'"),
        (["train", "--output", "{tmp}/r", "--arch", "tower-of-babel"], "unknown architecture 'tower-of-babel'"),
        (["data", "download", "ml-5k"], "unknown dataset 'ml-5k'"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    args: list[str], message: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli([a.format(run=tiny_run, tmp=tmp_path) for a in args], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_data_file_is_named_with_its_line(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "interactions.csv"
    lines = (world / "interactions.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 2)[0] + ",five,1000"
    bad.write_text("\n".join(lines) + "\n")
    overrides = tiny_overrides(world)
    code, _, err = run_cli(["train", "--output", str(tmp_path / "r"), "--dataset", "generic", "--data-path", str(bad),
                        "--items-path", overrides["data.items_path"], "--encoder", "hashing", "--epochs", "1",
                        "--no-progress"], capsys)  # fmt: skip
    assert code == 2
    assert "interactions.csv" in err and "line 6" in err and "rating" in err and "Traceback" not in err


def test_train_command_writes_a_run(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    o = tiny_overrides(world, **{"train.epochs": 1})
    sets = [f"--set={k}={json.dumps(v)}" for k, v in o.items() if k.startswith(("model.", "train.", "text."))]
    code, out, _ = run_cli(["train", "--output", str(tmp_path / "r"), "--dataset", "generic", "--data-path",
                        o["data.data_path"], "--items-path", o["data.items_path"], "--tasks", "interest:0.6,genre:0.4",
                        "--no-progress", *sets], capsys)  # fmt: skip
    assert code == 0
    assert "ndcg@10" in out
    config = (tmp_path / "r" / "config.yaml").read_text()
    assert "weight: 0.6" in config and "rating" not in config.split("tasks:")[1].split("train:")[0]


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("train", "evaluate", "recommend", "data"):
        assert command in out


def test_error_text_is_not_console_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fuzzing: a path or value holding '[/x]' was read as a rich closing tag and the CLI crashed with a
    MarkupError traceback instead of printing the error."""
    missing = tmp_path / "[/x]" / "events.csv"
    code, _, err = run_cli(["data", "info", "generic", "--data-path", str(missing)], capsys)
    assert code == 2 and "[/x]" in err and "file not found" in err and "Traceback" not in err


def test_set_value_that_is_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by fuzzing: `--set train.epochs=[1` raised a YAML ScannerError with a traceback."""
    code, _, err = run_cli(["train", "--output", str(tmp_path / "r"), "--set", "train.epochs=[1"], capsys)
    assert code == 2 and "--set train.epochs: the value is not valid YAML" in err and "Traceback" not in err


def test_set_value_whose_aliases_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A value that contains itself through an alias crashed the CLI with a RecursionError traceback."""
    code, _, err = run_cli(["train", "--output", str(tmp_path / "r"), "--set", "tasks=&x {interest: *x}"], capsys)
    assert code == 2 and "--set tasks: the value is not valid YAML (an alias refers" in err and "Traceback" not in err
