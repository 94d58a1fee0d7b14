"""Load on `mtlrec serve`: start-up, GET /recommend throughput and latency, POST /feedback, and no acknowledged
feedback lost when the server is SIGKILLed.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/serve_load.py --run RUN_DIR [--seconds 60]

Without --run, a default MovieLens-100K run is trained first (`mtlrec train`) into a temporary folder. The server is
the real one, a subprocess: `mtlrec serve RUN --port FREE --feedback-db TMP/feedback.sqlite --threads 1` on
127.0.0.1. This process drives it over loopback with an async httpx client (asyncio, N concurrent workers):

1. start-up: process start until the first `GET /ready` answers 200, then the first `POST /recommend {"text"}`
   (the language model loads on the first text query);
2. `GET /recommend?user=U&k=10` (U drawn from the run's users), 32 workers, --seconds long;
3. `POST /feedback`, 16 workers, 10,000 events, one per request, each with its own Idempotency-Key; then the rows in
   the SQLite file are counted;
4. `POST /feedback` again (16 workers, 5,000 events); the server is SIGKILLed once ~2,000 have had a 201, then
   restarted on the same file, and every acknowledged event's key must be in the store.

Client and server share this machine's cores: the client's own CPU time is reported beside the figures.
Writes benchmarks/results/serve_load.json and serve_load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mtlrec import __version__

RESULTS = Path(__file__).parent / "results"
TARGETS = {"recommend_rps": 400.0, "recommend_p99_ms": 50.0, "startup_s": 10.0}


def mtlrec_command() -> list[str]:
    exe = Path(sys.executable).parent / "mtlrec"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("mtlrec")
    return [found] if found else [sys.executable, "-c", "from mtlrec.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs (shared by server and client), Python {platform.python_version()}"


class Server:
    """`mtlrec serve` as a subprocess; its output goes to a log file (a pipe nobody reads would fill and block)."""

    def __init__(self, run: Path, db: Path, port: int, api_key: str, log: Path, threads: int, log_level: str):
        self.cmd = mtlrec_command() + ["serve", str(run), "--port", str(port), "--feedback-db", str(db),
                                       "--threads", str(threads), "--log-level", log_level]  # fmt: skip
        self.env = {**os.environ, "MTLREC_API_KEY": api_key}
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> float:
        """Start the process; seconds until `GET /ready` first answers 200."""
        out = self.log.open("ab")
        start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        with httpx.Client(base_url=self.base, timeout=2.0) as client:
            while time.perf_counter() - start < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}:\n{self.tail()}")
                try:
                    if client.get("/ready").status_code == 200:
                        return time.perf_counter() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout:.0f}s; see {self.log}:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def problems(self, n: int = 20) -> list[str]:
        """The log's first ``n`` warning, error and traceback lines."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        keys = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")
        return [line for line in lines if any(key in line for key in keys)][:n]

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary(latencies: list[float], elapsed: float, errors: int, client_cpu: float, **extra) -> dict:
    lat = sorted(latencies)
    ms = {f"p{q}_ms": round(percentile(lat, q) * 1000, 2) for q in (50, 95, 99)}
    return {"ok": len(lat), "errors": errors, "seconds": round(elapsed, 2),
            "throughput_rps": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0, **ms,
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "client_cpu_share": round(client_cpu / elapsed, 2) if elapsed > 0 else None, **extra}  # fmt: skip


def client(base: str, workers: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    return httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(30.0))


async def recommend_load(base: str, users: list[str], workers: int, seconds: float, max_requests: int) -> dict:
    rng = random.Random(0)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    async with client(base, workers) as http:
        for user in rng.sample(users, min(len(users), 2 * workers)):  # warm-up: connections, first-call paths
            await http.get("/recommend", params={"user": user, "k": 10})
        cpu0, start = time.process_time(), time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                user = rng.choice(users)
                t0 = time.perf_counter()
                try:
                    response = await http.get("/recommend", params={"user": user, "k": 10})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if response.status_code == 200 and len(response.json()["items"]) == 10:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return summary(latencies, elapsed, sum(errors.values()), cpu, clients=workers, error_kinds=errors)


def event(users: list[str], items: list[str], tag: str, n: int) -> dict:
    """A rating event; its value text is unique, like its Idempotency-Key, so each can be matched in the store."""
    rng = random.Random(f"{tag}{n}")
    return {"user": rng.choice(users), "item": rng.choice(items), "type": "rating", "value": float(rng.randint(1, 5))}


async def feedback_load(
    base: str,
    api_key: str,
    users: list[str],
    items: list[str],
    *,
    tag: str,
    events: int,
    workers: int,
    kill_after: int | None = None,
    kill=None,
) -> dict:
    """POST `events` single-event requests; keys `{tag}-{n}`. With kill_after, `kill()` is called once that many
    201s have come back; workers then stop sending (requests in flight get connection errors: not acknowledged)."""
    acked: list[str] = []
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connection_errors = 0
    next_n = 0
    killed_at: float | None = None
    headers = {"X-API-Key": api_key}
    async with client(base, workers) as http:
        cpu0, start = time.process_time(), time.perf_counter()

        async def worker() -> None:
            nonlocal next_n, connection_errors, killed_at
            while next_n < events and killed_at is None:
                n = next_n
                next_n += 1
                key = f"{tag}-{n}"
                t0 = time.perf_counter()
                try:
                    response = await http.post(
                        "/feedback", json=event(users, items, tag, n), headers={**headers, "Idempotency-Key": key}
                    )
                except httpx.TransportError:  # connection refused/reset, read error: the server is gone
                    connection_errors += 1
                    continue
                if response.status_code == 201 and response.json().get("stored") == 1:
                    latencies.append(time.perf_counter() - t0)
                    acked.append(key)
                    if kill_after is not None and killed_at is None and len(acked) >= kill_after:
                        killed_at = time.perf_counter() - start
                        kill()
                else:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    result = summary(latencies, elapsed, sum(errors.values()) + connection_errors, cpu, clients=workers,
                     sent=next_n, error_kinds=errors, connection_errors=connection_errors)  # fmt: skip
    if kill_after is not None:
        result["killed_after_s"] = None if killed_at is None else round(killed_at, 2)
    result["acked_keys"] = acked
    return result


def stored_keys(db: Path, prefix: str) -> set[str]:
    """Idempotency keys of the events in the SQLite store that start with ``prefix`` (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT idempotency_key FROM events WHERE idempotency_key LIKE ?", (prefix + "%",))
        return {r[0] for r in rows}


def count_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def train_default(tmp: Path) -> Path:
    run = tmp / "run"
    print(f"no --run: training a default MovieLens-100K run into {run} ...", flush=True)
    subprocess.run(mtlrec_command() + ["train", "--output", str(run)], check=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="A run directory (default: train a default ml-100k run first).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the GET /recommend phase.")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="Cap on GET /recommend requests.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent GET /recommend workers.")
    parser.add_argument("--feedback-clients", type=int, default=16)
    parser.add_argument("--feedback-events", type=int, default=10_000)
    parser.add_argument("--kill-events", type=int, default=5_000)
    parser.add_argument("--kill-after", type=int, default=2_000, help="SIGKILL the server after this many 201s.")
    parser.add_argument("--threads", type=int, default=1, help="--threads of `mtlrec serve`.")
    parser.add_argument("--log-level", default="info", help="--log-level of `mtlrec serve` (info logs each request).")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp_name:
        tmp = Path(tmp_name)
        run = args.run if args.run is not None else train_default(tmp)
        ids = json.loads((run / "ids.json").read_text())
        users, items = [str(u) for u in ids["users"]], [str(i) for i in ids["items"]]
        db, api_key = tmp / "feedback.sqlite", secrets.token_urlsafe(32)
        server = Server(run, db, free_port(), api_key, tmp / "server.log", args.threads, args.log_level)
        shown = " ".join(["mtlrec"] + server.cmd[server.cmd.index("serve") :])
        result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "mtlrec": __version__, "machine": machine(),
                        "run": str(run.resolve()), "server": shown, "users": len(users),
                        "items": len(items)}  # fmt: skip
        try:
            # 1. start-up
            ready_s = server.start(args.start_timeout)
            t0 = time.perf_counter()
            first = httpx.post(server.base + "/recommend", json={"text": "90s science fiction", "k": 10}, timeout=300)
            first_text_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            second = httpx.post(server.base + "/recommend", json={"text": "romantic comedy", "k": 10}, timeout=60)
            second_text_s = time.perf_counter() - t0
            result["startup"] = {"ready_s": round(ready_s, 2), "first_text_recommend_s": round(first_text_s, 2),
                                 "first_text_status": first.status_code, "second_text_recommend_s":
                                 round(second_text_s, 3), "second_text_status": second.status_code}  # fmt: skip
            print(f"start-up: ready {ready_s:.2f}s, first text query {first_text_s:.2f}s", flush=True)

            # 2. GET /recommend
            rec = asyncio.run(recommend_load(server.base, users, args.clients, args.seconds, args.max_requests))
            result["recommend"] = rec
            print(f"GET /recommend: {rec['throughput_rps']} req/s, p50 {rec['p50_ms']} p95 {rec['p95_ms']} "
                  f"p99 {rec['p99_ms']} ms, errors {rec['errors']}", flush=True)  # fmt: skip

            # 3. POST /feedback, 10,000 events
            fb = asyncio.run(feedback_load(server.base, api_key, users, items, tag="load",
                                           events=args.feedback_events, workers=args.feedback_clients))  # fmt: skip
            fb["acknowledged"] = len(fb.pop("acked_keys"))
            fb["rows_stored"] = count_rows(db)
            fb["rows_with_load_keys"] = len(stored_keys(db, "load-"))
            fb["ready_feedback_events"] = httpx.get(server.base + "/ready").json()["feedback"]["events"]
            result["feedback"] = fb
            print(f"POST /feedback: {fb['throughput_rps']} req/s, p50 {fb['p50_ms']} p99 {fb['p99_ms']} ms, "
                  f"{fb['acknowledged']} acknowledged, {fb['rows_stored']} rows, errors {fb['errors']}",
                  flush=True)  # fmt: skip

            # 4. SIGKILL mid-run, restart on the same file, every 201 must be there
            kill = asyncio.run(feedback_load(server.base, api_key, users, items, tag="kill",
                                             events=args.kill_events, workers=args.feedback_clients,
                                             kill_after=args.kill_after, kill=server.kill))  # fmt: skip
            acked = set(kill.pop("acked_keys"))
            restart_s = server.start(args.start_timeout)
            stored = stored_keys(db, "kill-")
            kill.update(acknowledged=len(acked), stored=len(stored), acknowledged_missing=len(acked - stored),
                        stored_not_acknowledged=len(stored - acked), not_sent=args.kill_events - kill["sent"],
                        restart_ready_s=round(restart_s, 2), rows_after_restart=count_rows(db),
                        ready_feedback_events=httpx.get(server.base + "/ready").json()["feedback"]["events"],
                        )  # fmt: skip
            result["sigkill"] = kill
            print(f"SIGKILL after {kill['killed_after_s']}s: {kill['acknowledged']} acknowledged, {kill['stored']} "
                  f"stored, {kill['acknowledged_missing']} acknowledged missing, {kill['connection_errors']} "
                  f"connection errors; restart ready in {restart_s:.2f}s", flush=True)  # fmt: skip
        finally:
            server.stop()
            result["server_log_problems"] = server.problems()

    rec, fb, kill, start = result["recommend"], result["feedback"], result["sigkill"], result["startup"]
    result["targets"] = {
        "recommend_rps >= 400": {"value": rec["throughput_rps"], "met": rec["throughput_rps"] >= 400},
        "recommend_p99_ms <= 50": {"value": rec["p99_ms"], "met": rec["p99_ms"] <= 50},
        f"feedback rows == {args.feedback_events}": {
            "value": fb["rows_stored"],
            "met": fb["rows_stored"] == fb["rows_with_load_keys"] == args.feedback_events,
        },
        "acknowledged lost == 0": {"value": kill["acknowledged_missing"], "met": kill["acknowledged_missing"] == 0},
        "startup_s <= 10": {"value": start["ready_s"], "met": start["ready_s"] <= 10},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, args)
    (args.output / "serve_load.md").write_text(md)
    print(md)


def markdown(r: dict, args: argparse.Namespace) -> str:
    rec, fb, kill, start = r["recommend"], r["feedback"], r["sigkill"], r["startup"]
    yes = {True: "**met**", False: "**not met**"}
    lines = [f"# `mtlrec serve` under load ({r['date']})", "",
             f"Machine: {r['machine']}. Run: `{r['run']}` ({r['users']} users, {r['items']} items). "
             f"Server: `{r['server']}` on 127.0.0.1; client: this script, asyncio + httpx, another process.", "",
             "| phase | requests ok | errors | req/s | p50 ms | p95 ms | p99 ms | client CPU (cores) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, p in [
        (f"GET /recommend k=10, {rec['clients']} clients, {args.seconds:g} s", rec),
        (f"POST /feedback, {fb['clients']} clients, {args.feedback_events} events", fb),
        (f"POST /feedback, {kill['clients']} clients, SIGKILL after {args.kill_after} 201s", kill),
    ]:
        lines.append(f"| {name} | {p['ok']} | {p['errors']} | {p['throughput_rps']} | {p['p50_ms']} | "
                     f"{p['p95_ms']} | {p['p99_ms']} | {p['client_cpu_share']} |")  # fmt: skip
    lines += ["",
              f"- Start-up: `GET /ready` 200 after {start['ready_s']} s from process start; the first "
              f"`POST /recommend {{\"text\"}}` (loads the language model) took {start['first_text_recommend_s']} s, "
              f"the second {start['second_text_recommend_s']} s.",
              f"- Feedback: {fb['acknowledged']} events acknowledged (201), {fb['rows_stored']} rows in the SQLite "
              f"file ({fb['rows_with_load_keys']} with this phase's keys).",
              f"- SIGKILL: killed {kill['killed_after_s']} s in; {kill['acknowledged']} events acknowledged, "
              f"{kill['stored']} stored after restart ({kill['stored_not_acknowledged']} stored but never "
              f"acknowledged: in flight at the kill), **{kill['acknowledged_missing']} acknowledged events missing**; "
              f"{kill['connection_errors']} connection errors (not acknowledged), {kill['not_sent']} not sent; "
              f"restart ready in {kill['restart_ready_s']} s.", "",
              "| target | measured | |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {name} | {t['value']} | {yes[t['met']]} |" for name, t in r["targets"].items()]
    if r.get("server_log_problems"):
        lines += ["", "Server log warnings and errors:", ""] + [f"    {line}" for line in r["server_log_problems"]]
    lines += ["", "Client and server share the machine's cores; the client's CPU is in the table. Rerun: "
              "`MTLREC_DATA_DIR=../shared/datasets python benchmarks/serve_load.py --run RUN_DIR`."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
