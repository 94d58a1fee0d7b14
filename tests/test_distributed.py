"""Data-parallel training on CPU (gloo): gradients averaged exactly, replicas identical, `mtlrec train --nproc 2`
reaching the metrics of one process with the same global batch, and a SIGKILLed 2-process run resuming to the same
bytes of metrics.json."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtlrec.data.synth import synth_world
from mtlrec.train.distributed import Dist, average_gradients

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch has no torch.distributed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _average_on_rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        both, one, none = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
        both.grad = torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)  # rank 0: 1,2,3; rank 1: 2,4,6
        if rank == 1:
            one.grad = torch.tensor([4.0, 4.0, 4.0])  # only rank 1 has it: rank 0 counts zeros
        table, lone = torch.nn.Parameter(torch.zeros(4, 2)), torch.nn.Parameter(torch.zeros(4, 2))  # sparse grads
        table.grad = torch.sparse_coo_tensor([[rank, 3]], [[2.0, 2.0], [1.0, 1.0]], (4, 2))  # row 3 on both
        if rank == 1:
            lone.grad = torch.sparse_coo_tensor([[1]], [[4.0, 6.0]], (4, 2))  # rank 0 has none: counts as zero
        average_gradients([both, one, none, table, lone], Dist(rank, 2), sparse=[table, lone])
        assert table.grad.is_sparse and lone.grad.is_sparse  # the lazy optimizer needs them sparse
        grads = [None if p.grad is None else p.grad.tolist() for p in (both, one, none)]
        grads += [p.grad.to_dense().tolist() for p in (table, lone)]
        grads.append(Dist(rank, 2).gather({"rank": rank}))  # each rank's random generators, for checkpoints
        Path(out, f"{rank}.json").write_text(json.dumps(grads))
    finally:
        dist.destroy_process_group()


def test_gradients_are_averaged_over_the_processes(tmp_path: Path) -> None:
    mp.spawn(_average_on_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        both, one, none, table, lone, gathered = json.loads((tmp_path / f"{rank}.json").read_text())
        assert gathered == [{"rank": 0}, {"rank": 1}]
        assert both == [1.5, 3.0, 4.5] and one == [2.0, 2.0, 2.0] and none is None
        assert table == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
        assert lone == [[0.0, 0.0], [2.0, 3.0], [0.0, 0.0], [0.0, 0.0]]


def test_one_process_is_unchanged() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([1.0, 2.0])
    average_gradients([p], Dist())
    assert p.grad.tolist() == [1.0, 2.0]
    group = Dist()
    assert group.broadcast({"a": 1}) == {"a": 1} and group.mean({"x": 2.0}) == {"x": 2.0}


def train_command(world: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mtlrec", "train", "--dataset", "generic", "--data-path",
            str(world / "interactions.parquet"), "--items-path", str(world / "items.parquet"), "--encoder", "hashing",
            "--set", "text.dim=32", "--set", "model.dim=16", "--set", "model.hidden=[32]", "--epochs", "4",
            "--batch-size", "128", "--tasks", "interest:1,rating:0.2", "--set", f"text.cache_dir={out}-cache",
            "--threads", "1", "--seed", "0", "--no-progress", "--nproc", str(nproc), "--output", str(out),
            *extra]  # fmt: skip


def train(world: Path, out: Path, nproc: int, *extra: str) -> dict:
    proc = subprocess.run(train_command(world, out, nproc, *extra), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_reach_the_metrics_of_one(tmp_path: Path) -> None:
    world = tmp_path / "world"
    synth_world(1500, 300, 40_000, categories=8, friends=0, seed=5).write(world)
    one = train(world, tmp_path / "one", 1)
    two = train(world, tmp_path / "two", 2)
    assert (one["processes"], two["processes"]) == (1, 2)
    for stage in ("valid", "test"):
        for metric, tolerance in (("ndcg@10", 0.10), ("auc", 0.02), ("rmse", 0.03)):
            a, b = one[stage][metric], two[stage][metric]
            assert abs(a - b) <= tolerance * abs(a), (stage, metric, a, b)
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(history) == 4 and history[0]["train_rows"] > 0  # rank 0's share of each epoch
    from mtlrec import Recommender

    assert len(Recommender.load(tmp_path / "two").recommend("u3", k=5)) == 5  # rank 0 wrote a whole run


def processes_writing(out: Path) -> list[int]:
    """The pids whose command line names the run folder ``out`` (the launcher, torchrun, the ranks)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes().split(b"\0"):
                pids.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return pids


def start_and_kill(command: list[str], out: Path, whole_group: bool) -> None:
    """Start a training, SIGKILL it (the launcher alone, or with torchrun) once it has a checkpoint, and wait until
    no process is left writing ``out``."""
    from mtlrec.train.checkpoint import CHECKPOINT

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # further on: inside a step, or writing the next checkpoint
    finally:
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()
    deadline = time.monotonic() + 60
    while processes_writing(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_writing(out), "ranks outlived their launcher"
    assert (out / CHECKPOINT).exists() and not (out / "metrics.json").exists()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the ranks through /proc")
def test_a_sigkilled_two_process_run_stops_and_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    """torchrun starts each rank in its own session, so a SIGKILLed launcher left both ranks training on alone:
    they finished the run (and would have written it under a --resume). Now they stop: torchrun dies with the
    launcher (PR_SET_PDEATHSIG) and each rank with torchrun (it watches its parent). Every rank's generators are
    gathered into rank 0's checkpoint, so `--resume --nproc 2` ends with the uninterrupted run's metrics.json bytes."""
    world = tmp_path / "world"
    synth_world(600, 200, 15_000, categories=6, friends=0, seed=3).write(world)
    every = ("--set", "train.checkpoint_every=20")  # ~59 steps an epoch: checkpoints inside epochs too
    whole = tmp_path / "whole"
    train(world, whole, 2, *every)
    for whole_group in (True, False):  # the ranks see torchrun die; torchrun sees the launcher die
        out = tmp_path / f"killed-{whole_group}"
        start_and_kill(train_command(world, out, 2, *every), out, whole_group)
    out = tmp_path / "killed-True"
    cmd = [sys.executable, "-m", "mtlrec", "train", "--resume", str(out), "--no-progress", "--nproc"]
    alone = subprocess.run([*cmd, "1"], capture_output=True, text=True, timeout=600)
    assert alone.returncode == 2 and "taken with 2 processes; resume it with as many (--nproc 2)" in alone.stderr
    resumed = subprocess.run([*cmd, "2"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (out / "metrics.json").read_bytes() == (whole / "metrics.json").read_bytes()


def test_batch_must_divide_among_processes(tmp_path: Path) -> None:
    from conftest import make_world, tiny_overrides
    from mtlrec.config import load_config
    from mtlrec.errors import ConfigError
    from mtlrec.models.model import MultiTaskModel
    from mtlrec.train.pipeline import prepare
    from mtlrec.train.run import check_config
    from mtlrec.train.trainer import Trainer
    from mtlrec.weighting import WEIGHTINGS

    config = load_config(overrides=tiny_overrides(make_world(tmp_path / "w"), **{"train.batch_size": 63}))
    tasks = check_config(config)
    data = prepare(config, progress=False, log=lambda _: None).data
    for task in tasks.values():
        task.prepare(data)
    model = MultiTaskModel(config.model, tasks, data.split.n_users, torch.from_numpy(data.text_vectors),
                           data.categories.shape[1])  # fmt: skip
    with pytest.raises(ConfigError, match=r"batch_size \(63\) must divide evenly among the 2 processes"):
        Trainer(config, model, tasks, WEIGHTINGS.get("fixed")(tasks), data, group=Dist(0, 2))
