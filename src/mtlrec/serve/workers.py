"""``mtlrec serve --workers N``: N server processes, each with its own listening socket on the same port
(SO_REUSEPORT), so the kernel spreads connections over them evenly.

Why not uvicorn's ``--workers``: its processes share one socket and whichever is idle when clients connect takes
the connections; keep-alive clients then stay there. Measured with 32 keep-alive clients and 2 workers: all 32 on one
worker in one start of three (half the throughput, twice the latency). With a socket each, connections are spread
by a hash of their addresses.

The supervisor (this process) restarts a worker that dies, forwards SIGHUP (hot reload) to every worker, and on
SIGINT/SIGTERM stops them gracefully (in-flight requests finish). A worker exits by itself when the supervisor is
gone (e.g. SIGKILLed), so no orphan keeps the port. Each worker builds its app with ``app_from_env``.
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import Any

from mtlrec.errors import MtlrecError
from mtlrec.processes import stop_when_orphaned

log = logging.getLogger("mtlrec.serve")
STOP_TIMEOUT_S = 30.0


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and os.name == "posix"


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT (and SO_REUSEADDR); not yet listening."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = info[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise MtlrecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serving_server(config: Any, ready: Any) -> Any:
    """A uvicorn server that sets ``ready`` (an Event) once it listens, before the event loop runs again and so
    before it answers any request: a worker that has answered one is always a worker that started, and its death
    is a restart, never a failed start. (Polled from a thread, the flag could lag behind the first answers, and a
    worker killed in that gap made the supervisor give up.)"""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready.set()

    return Server(config)


def _worker(host: str, port: int, log_level: str, log_config: dict[str, Any], supervisor: int, ready: Any) -> None:
    import uvicorn

    sock = listening_socket(host, port)
    stop_when_orphaned(supervisor, signal.SIGTERM)  # a graceful stop once the supervisor is gone
    config = uvicorn.Config("mtlrec.serve.app:app_from_env", factory=True, log_level=log_level,
                            log_config=log_config)  # fmt: skip
    serving_server(config, ready).run(sockets=[sock])


def run_workers(workers: int, host: str, port: int, log_level: str, log_config: dict[str, Any]) -> None:
    """Run ``workers`` server processes on (host, port) until SIGINT or SIGTERM. The settings reach the workers
    through the environment (see ``app_from_env``). Raises MtlrecError when a worker fails to start."""
    logging.config.dictConfig(log_config)  # the supervisor's own lines, formatted like the workers'
    holder = listening_socket(host, port)  # holds the port (port 0: picks one) and never listens
    port = holder.getsockname()[1]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state copied by fork
    stop = threading.Event()
    failure: list[str] = []

    def start(n: int) -> tuple[Any, Any]:
        ready = context.Event()
        process = context.Process(target=_worker, args=(host, port, log_level, log_config, os.getpid(), ready),
                                  name=f"mtlrec-worker-{n}")  # fmt: skip
        process.start()
        log.info("started worker %d (pid %d) on %s:%d", n, process.pid, host, port)
        return process, ready

    def forward(signum: int, frame: Any) -> None:
        for process, _ in processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward)
    processes: list[tuple[Any, Any]] = []  # (process, its "started" event)
    try:
        processes = [start(n) for n in range(workers)]
        while not stop.wait(0.5):
            for n, (process, ready) in enumerate(processes):
                if process.is_alive():
                    continue
                if not ready.is_set():
                    failure.append(f"worker {n} (pid {process.pid}) exited with code {process.exitcode} before "
                                   "it started serving; see the log above")  # fmt: skip
                    stop.set()
                    break
                log.warning("worker %d (pid %d) exited with code %s; starting another", n, process.pid,
                            process.exitcode)  # fmt: skip
                processes[n] = start(n)
    finally:
        for process, _ in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes what is in flight
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process, _ in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise MtlrecError(failure[0])
