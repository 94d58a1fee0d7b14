"""A lean HTTP/1.1 load generator over asyncio streams, for benchmarks that share the machine with the server.

Why not httpx: measured against `mtlrec serve` on 2 cores, httpx's async client spent ~4 ms of CPU per request,
which took a third of the machine from the server it was measuring; this client spends ~0.1 ms. It speaks just what
the benchmarks need: keep-alive connections, one request in flight per connection, responses with Content-Length.

Two ways to load a server:

- ``closed_loop``: every connection sends its next request as soon as the previous answer arrives. It measures the
  most the server can do (saturation throughput); latency then is mostly queueing (Little's law: connections /
  throughput), not what a client sees at a given rate.
- ``open_loop``: requests are due at a fixed total rate, spread evenly over the connections (as wrk2 does). Latency
  is measured from when a request was due, not when it could be sent, so a stalled server is charged for the
  requests it delayed (no "coordinated omission").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                      ) -> tuple[int, bytes]:  # fmt: skip
        """(status, body). Connects (again) when needed; raises OSError / asyncio.IncompleteReadError when the
        server is gone."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            payload = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, server closes) from a response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" not in fields:
        raise ValueError(f"response without Content-Length (unsupported here): {lines[0]}")
    return status, int(fields["content-length"]), fields.get("connection", "").lower() == "close"


# A request maker: (connection number, request number) -> (method, path, body, headers)
Maker = Callable[[int, int], tuple[str, str, bytes, dict[str, str]]]
# A response check: (status, body, request number) -> None when it is a success, else the kind of error it is
Check = Callable[[int, bytes, int], str | None]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, of the successful requests
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process spent

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _run(connections: int, body: Callable[[Connection, int, Result], Awaitable[None]], host: str, port: int
               ) -> Result:  # fmt: skip
    result = Result()
    conns = [Connection(host, port) for _ in range(connections)]
    cpu0, start = time.process_time(), time.perf_counter()
    try:
        await asyncio.gather(*(body(conn, n, result) for n, conn in enumerate(conns)))
    finally:
        for conn in conns:
            conn.close()
    result.elapsed, result.client_cpu = time.perf_counter() - start, time.process_time() - cpu0
    return result


async def _send(conn: Connection, make: Maker, check: Check, n: int, j: int, result: Result, due: float) -> bool:
    """One request; latency counted from ``due``. False when the connection failed (the server is gone)."""
    method, path, payload, headers = make(n, j)
    result.sent += 1
    try:
        status, body = await conn.request(method, path, payload, headers)
    except (OSError, asyncio.IncompleteReadError) as exc:
        result.error(type(exc).__name__)
        return False
    problem = check(status, body, j)
    if problem is None:
        result.latencies.append(time.perf_counter() - due)
    else:
        result.error(problem)
    return True


async def closed_loop(host: str, port: int, connections: int, make: Maker, check: Check, *, seconds: float,
                      max_requests: int | None = None, stop: Callable[[], bool] | None = None
                      ) -> Result:  # fmt: skip
    """Each connection sends back to back until ``seconds`` pass, ``max_requests`` are sent, or ``stop()``."""
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_requests if max_requests is not None else 1 << 62))

    async def body(conn: Connection, n: int, result: Result) -> None:
        while time.perf_counter() < deadline and not (stop is not None and stop()):
            j = next(counter, None)
            if j is None:
                return
            if not await _send(conn, make, check, n, j, result, time.perf_counter()):
                await asyncio.sleep(0.01)  # the server is gone or restarting: do not spin

    return await _run(connections, body, host, port)


async def open_loop(host: str, port: int, connections: int, make: Maker, check: Check, *, rate: float,
                    seconds: float, seed: int = 0) -> Result:  # fmt: skip
    """``rate`` requests/s in all, due at even intervals on each connection (a random phase each) for ``seconds``.
    A connection whose previous answer is late sends its next request at once, and its latency counts from when it
    was due."""
    interval = connections / rate
    phases = random.Random(seed).random
    start = time.perf_counter() + 0.05

    async def body(conn: Connection, n: int, result: Result) -> None:
        due, j = start + phases() * interval, 0
        while due < start + seconds:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await _send(conn, make, check, n, j, result, due)
            due, j = due + interval, j + 1

    return await _run(connections, body, host, port)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary(result: Result, **extra: object) -> dict:
    lat = sorted(result.latencies)
    ms = {f"p{q}_ms": round(percentile(lat, q) * 1000, 2) for q in (50, 95, 99)}
    elapsed = result.elapsed
    return {"ok": len(lat), "errors": sum(result.errors.values()), "error_kinds": result.errors, "sent": result.sent,
            "seconds": round(elapsed, 2), "throughput_rps": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
            **ms, "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "client_cpu_share": round(result.client_cpu / elapsed, 2) if elapsed > 0 else None, **extra}  # fmt: skip
