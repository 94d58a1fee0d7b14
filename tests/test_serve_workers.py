"""`mtlrec serve --workers 2` as real processes: connections spread over both workers, a worker that dies is
replaced, SIGHUP reloads every worker, SIGTERM stops them all, and workers never outlive a SIGKILLed supervisor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mtlrec.serve.workers import listening_socket, reuse_port_supported, serving_server  # noqa: E402

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT workers are for Linux/BSD")
START_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready_pids(port: int, connections: int) -> set[int]:
    """The pid that answers GET /ready on each of ``connections`` fresh connections."""
    pids = set()
    for _ in range(connections):
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/ready")
        pids.add(json.loads(conn.getresponse().read())["pid"])
        conn.close()
    return pids


def wait_for(check, seconds: float, what: str, log: Path | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.2)
    tail = f"; the server's log ends:\n{log.read_text()[-4000:]}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}{tail}")


def alive(pid: int) -> bool:
    """Running (an exited process that nobody has reaped yet, a zombie, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return not stat.parent.parent.joinpath("self").exists()  # no /proc at all: trust kill(0)


@pytest.fixture
def supervisor(tiny_run: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    port, log = free_port(), tmp_path / "serve.log"
    cmd = [sys.executable, "-c", "from mtlrec.cli import main; main()", "serve", str(tiny_run), "--workers", "2",
           "--port", str(port), "--threads", "1", "--api-key", "k" * 16, "--log-level", "info"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: len(ready_pids(port, 8)) == 2, START_S, "two workers answering", log)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_workers_share_the_load_are_replaced_reload_and_stop(supervisor: tuple) -> None:
    proc, port, log = supervisor
    pids = ready_pids(port, 16)
    assert len(pids) == 2 and proc.pid not in pids  # 16 connections reach both workers
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommend?user=u1&k=3", timeout=10) as response:
        assert len(json.loads(response.read())["items"]) == 3

    dead = min(pids)
    os.kill(dead, signal.SIGKILL)  # a worker dies: the supervisor starts another
    wait_for(lambda: (now := ready_pids(port, 16)) and len(now) == 2 and dead not in now, START_S, "a new worker", log)
    assert "exited with code -9; starting another" in log.read_text()

    os.kill(proc.pid, signal.SIGHUP)  # forwarded: every worker reloads the served directory
    wait_for(lambda: log.read_text().count("reloaded: now serving") == 2, 60, "both workers to reload", log)

    workers = ready_pids(port, 16)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in workers)


def test_workers_exit_when_the_supervisor_is_killed(supervisor: tuple) -> None:
    proc, port, _ = supervisor
    workers = ready_pids(port, 16)
    proc.kill()  # SIGKILL the supervisor alone: its workers notice and stop, freeing the port
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), 30, "the orphaned workers to exit")


def test_a_worker_is_ready_before_it_answers_its_first_request() -> None:
    """The supervisor tells a restart from a failed start by the worker's "ready" flag: it must be set before the
    first answer, or a worker killed just after answering makes the supervisor give up (it did, once, in CI)."""
    import threading

    import uvicorn

    ready = threading.Event()
    seen: list[bool] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        seen.append(ready.is_set())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    sock = listening_socket("127.0.0.1", port)
    server = serving_server(uvicorn.Config(app, lifespan="off", log_level="warning"), ready)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_S
        while True:  # connect the moment it listens: no pause that would let a late flag catch up
            try:
                conn = HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the server never listened"
        assert conn.getresponse().read() == b"ok"
        assert seen == [True]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
