"""Load on `mtlrec serve`: start-up, GET /recommend throughput and latency, POST /feedback, and no acknowledged
feedback lost when the server is SIGKILLed.

    MTLREC_DATA_DIR=../shared/datasets python benchmarks/serve_load.py --run RUN_DIR [--seconds 60]

Without --run, a default MovieLens-100K run is trained first (`mtlrec train`) into a temporary folder. The server is
the real one, a subprocess: `mtlrec serve RUN --port FREE --feedback-db TMP/feedback.sqlite --workers 2 --threads 1`
on 127.0.0.1. This process drives it over loopback with benchmarks/loadgen.py (asyncio streams, keep-alive):

1. start-up: process start until the first `GET /ready` answers 200, then the first `POST /recommend {"text"}`
   (the language model loads on the first text query);
2. `GET /recommend?user=U&k=10` (U drawn from the run's users), 32 connections back to back for --seconds: the
   most the server does (closed loop);
3. the same at a fixed --rate (400 requests/s by default) over 32 connections for --seconds (open loop, latency
   from when each request was due): the latency a client sees at that rate;
4. `POST /feedback`, 16 connections, 10,000 events, one per request, each with its own Idempotency-Key; then the rows
   in the SQLite file are counted;
5. `POST /feedback` again (16 connections, 5,000 events); the server (its whole process group: supervisor and
   workers) is SIGKILLed once ~2,000 have had a 201, then restarted on the same file, and every acknowledged
   event's key must be in the store.

Client and server share this machine's cores: the client's own CPU time is reported beside the figures.
Writes benchmarks/results/serve_load.json and serve_load.md (--name: another stem, e.g. for --score-cache-mb 0).
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
from urllib.parse import quote

import httpx
from loadgen import closed_loop, open_loop, summary

from mtlrec import __version__

RESULTS = Path(__file__).parent / "results"


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

    def __init__(self, run: Path, db: Path, port: int, api_key: str, log: Path, workers: int, threads: int,
                 score_cache_mb: float, log_level: str):  # fmt: skip
        self.cmd = mtlrec_command() + ["serve", str(run), "--port", str(port), "--feedback-db", str(db),
                                       "--workers", str(workers), "--threads", str(threads), "--score-cache-mb",
                                       f"{score_cache_mb:g}", "--log-level", log_level]  # fmt: skip
        self.port = port
        self.env = {**os.environ, "MTLREC_API_KEY": api_key}
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> float:
        """Start the process; seconds until `GET /ready` first answers 200."""
        out = self.log.open("ab")
        start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own process group: kill() takes the workers too
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
        """SIGKILL the supervisor and its workers at once (a crashed machine or container)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
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


def recommend_request(users: list[str], seed: int):  # noqa: ANN201 - a loadgen.Maker
    rng = random.Random(seed)
    paths = [f"/recommend?user={quote(u)}&k=10".encode("ascii") for u in users]

    def make(n: int, j: int) -> tuple[str, str, bytes, dict[str, str]]:
        return "GET", rng.choice(paths).decode("ascii"), b"", {}

    return make


def ten_items(status: int, body: bytes, j: int) -> str | None:
    if status != 200:
        return str(status)
    return None if len(json.loads(body)["items"]) == 10 else "not 10 items"


def recommend_phases(base_port: int, users: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    """The closed-loop (saturation) and open-loop (at --rate) GET /recommend phases."""
    host = "127.0.0.1"
    warm = asyncio.run(closed_loop(host, base_port, args.clients, recommend_request(users, 1), ten_items,
                                   seconds=60, max_requests=4 * args.clients))  # connections, first-call paths
    if warm.errors:
        raise RuntimeError(f"GET /recommend fails during warm-up: {warm.errors}")
    saturation = asyncio.run(closed_loop(host, base_port, args.clients, recommend_request(users, 2), ten_items,
                                         seconds=args.seconds, max_requests=args.max_requests))  # fmt: skip
    at_rate = asyncio.run(open_loop(host, base_port, args.clients, recommend_request(users, 3), ten_items,
                                    rate=args.rate, seconds=args.seconds))  # fmt: skip
    return (summary(saturation, clients=args.clients, mode="closed loop"),
            summary(at_rate, clients=args.clients, mode="open loop", offered_rps=args.rate))  # fmt: skip


def event(users: list[str], items: list[str], tag: str, n: int) -> dict:
    """A rating event; its value text is unique, like its Idempotency-Key, so each can be matched in the store."""
    rng = random.Random(f"{tag}{n}")
    return {"user": rng.choice(users), "item": rng.choice(items), "type": "rating", "value": float(rng.randint(1, 5))}


def feedback_phase(port: int, api_key: str, users: list[str], items: list[str], *, tag: str, events: int,
                   clients: int, kill_after: int | None = None, kill=None) -> dict:  # fmt: skip
    """POST `events` single-event requests; keys `{tag}-{j}`. With kill_after, `kill()` is called once that many
    201s have come back; connections then stop sending (requests in flight get connection errors: not
    acknowledged)."""
    acked: list[str] = []
    killed_at: list[float] = []
    start = time.perf_counter()

    def make(n: int, j: int) -> tuple[str, str, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json", "X-API-Key": api_key, "Idempotency-Key": f"{tag}-{j}"}
        return "POST", "/feedback", json.dumps(event(users, items, tag, j)).encode(), headers

    def stored(status: int, body: bytes, j: int) -> str | None:
        if status != 201 or json.loads(body).get("stored") != 1:
            return str(status)
        acked.append(f"{tag}-{j}")
        if kill_after is not None and not killed_at and len(acked) >= kill_after:
            killed_at.append(time.perf_counter() - start)
            kill()
        return None

    result = asyncio.run(closed_loop("127.0.0.1", port, clients, make, stored, seconds=3600, max_requests=events,
                                     stop=lambda: bool(killed_at)))  # fmt: skip
    connection_errors = sum(v for k, v in result.errors.items() if not k.isdigit())
    out = summary(result, clients=clients, connection_errors=connection_errors)
    if kill_after is not None:
        out["killed_after_s"] = round(killed_at[0], 2) if killed_at else None
    out["acked_keys"] = acked
    return out


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
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of each GET /recommend phase.")
    parser.add_argument("--rate", type=float, default=400.0, help="Requests/s of the open-loop GET /recommend phase.")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="Cap on closed-loop GET /recommend.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent GET /recommend connections.")
    parser.add_argument("--feedback-clients", type=int, default=16)
    parser.add_argument("--feedback-events", type=int, default=10_000)
    parser.add_argument("--kill-events", type=int, default=5_000)
    parser.add_argument("--kill-after", type=int, default=2_000, help="SIGKILL the server after this many 201s.")
    parser.add_argument("--workers", type=int, default=2, help="--workers of `mtlrec serve` (one per core).")
    parser.add_argument("--threads", type=int, default=1, help="--threads of `mtlrec serve`.")
    parser.add_argument("--score-cache-mb", type=float, default=256.0, help="--score-cache-mb of `mtlrec serve`.")
    parser.add_argument("--name", default="serve_load", help="Results file stem (NAME.json, NAME.md).")
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
        server = Server(run, db, free_port(), api_key, tmp / "server.log", args.workers, args.threads,
                        args.score_cache_mb, args.log_level)  # fmt: skip
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

            # 2-3. GET /recommend: as fast as it goes, then at --rate
            most, at_rate = recommend_phases(server.port, users, args)
            result["recommend_saturation"], result["recommend_at_rate"] = most, at_rate
            for name, r in (("closed loop", most), (f"at {args.rate:g} req/s", at_rate)):
                print(f"GET /recommend, {name}: {r['throughput_rps']} req/s, p50 {r['p50_ms']} p95 {r['p95_ms']} "
                      f"p99 {r['p99_ms']} ms, errors {r['errors']}", flush=True)  # fmt: skip

            # 4. POST /feedback, 10,000 events
            fb = feedback_phase(server.port, api_key, users, items, tag="load", events=args.feedback_events,
                                clients=args.feedback_clients)  # fmt: skip
            fb["acknowledged"] = len(fb.pop("acked_keys"))
            fb["rows_stored"] = count_rows(db)
            fb["rows_with_load_keys"] = len(stored_keys(db, "load-"))
            fb["ready_feedback_events"] = httpx.get(server.base + "/ready").json()["feedback"]["events"]
            result["feedback"] = fb
            print(f"POST /feedback: {fb['throughput_rps']} req/s, p50 {fb['p50_ms']} p99 {fb['p99_ms']} ms, "
                  f"{fb['acknowledged']} acknowledged, {fb['rows_stored']} rows, errors {fb['errors']}",
                  flush=True)  # fmt: skip

            # 5. SIGKILL mid-run, restart on the same file, every 201 must be there
            kill = feedback_phase(server.port, api_key, users, items, tag="kill", events=args.kill_events,
                                  clients=args.feedback_clients, kill_after=args.kill_after,
                                  kill=server.kill)  # fmt: skip
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

    most, at_rate = result["recommend_saturation"], result["recommend_at_rate"]
    fb, kill, start = result["feedback"], result["sigkill"], result["startup"]
    result["targets"] = {
        "recommend_rps >= 400 (closed loop)": {"value": most["throughput_rps"],
                                               "met": most["throughput_rps"] >= 400},
        f"recommend at {args.rate:g} req/s: p99_ms <= 50": {"value": at_rate["p99_ms"],
                                                             "met": at_rate["p99_ms"] <= 50},
        "recommend errors == 0": {"value": most["errors"] + at_rate["errors"],
                                  "met": most["errors"] + at_rate["errors"] == 0},
        f"feedback rows == {args.feedback_events}": {
            "value": fb["rows_stored"],
            "met": fb["rows_stored"] == fb["rows_with_load_keys"] == args.feedback_events,
        },
        "acknowledged lost == 0": {"value": kill["acknowledged_missing"], "met": kill["acknowledged_missing"] == 0},
        "startup_s <= 10": {"value": start["ready_s"], "met": start["ready_s"] <= 10},
    }  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result, args)
    (args.output / f"{args.name}.md").write_text(md)
    print(md)


def markdown(r: dict, args: argparse.Namespace) -> str:
    most, at_rate = r["recommend_saturation"], r["recommend_at_rate"]
    fb, kill, start = r["feedback"], r["sigkill"], r["startup"]
    yes = {True: "**met**", False: "**not met**"}
    lines = [f"# `mtlrec serve` under load ({r['date']})", "",
             f"Machine: {r['machine']}. Run: `{r['run']}` ({r['users']} users, {r['items']} items). "
             f"Server: `{r['server']}` on 127.0.0.1; client: benchmarks/loadgen.py (asyncio, keep-alive), another "
             "process.", "",
             "| phase | requests ok | errors | req/s | p50 ms | p95 ms | p99 ms | client CPU (cores) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, p in [
        (f"GET /recommend k=10, {most['clients']} connections back to back, {args.seconds:g} s", most),
        (f"GET /recommend k=10, {at_rate['clients']} connections, {args.rate:g} req/s offered, {args.seconds:g} s",
         at_rate),
        (f"POST /feedback, {fb['clients']} connections, {args.feedback_events} events", fb),
        (f"POST /feedback, {kill['clients']} connections, SIGKILL after {args.kill_after} 201s", kill),
    ]:
        lines.append(f"| {name} | {p['ok']} | {p['errors']} | {p['throughput_rps']} | {p['p50_ms']} | "
                     f"{p['p95_ms']} | {p['p99_ms']} | {p['client_cpu_share']} |")  # fmt: skip
    lines += ["",
              "- Back to back (closed loop) shows the most the server does; its latency is queueing (32 connections / "
              "throughput). At a fixed rate (open loop) latency counts from when each request was due, so requests a "
              "stalled server delayed are charged to it.",
              f"- Start-up: `GET /ready` 200 after {start['ready_s']} s from process start; the first "
              f"`POST /recommend {{\"text\"}}` (loads the language model) took {start['first_text_recommend_s']} s, "
              f"the second {start['second_text_recommend_s']} s.",
              f"- Feedback: {fb['acknowledged']} events acknowledged (201), {fb['rows_stored']} rows in the SQLite "
              f"file ({fb['rows_with_load_keys']} with this phase's keys).",
              f"- SIGKILL (supervisor and workers): killed {kill['killed_after_s']} s in; {kill['acknowledged']} "
              f"events acknowledged, {kill['stored']} stored after restart ({kill['stored_not_acknowledged']} stored "
              f"but never acknowledged: in flight at the kill), **{kill['acknowledged_missing']} acknowledged events "
              "missing**; "
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
