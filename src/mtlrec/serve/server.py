"""``mtlrec serve``: check what can be checked up front (one clear line instead of a traceback), then run uvicorn."""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import sys
from pathlib import Path

from mtlrec.errors import ArtifactError, ConfigError, MtlrecError
from mtlrec.recommend.artifact import REQUIRED
from mtlrec.recommend.cache import DEFAULT_MB as DEFAULT_CACHE_MB

log = logging.getLogger("mtlrec.serve")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir} is not a run directory (train one with `mtlrec train --output {run_dir}`)")
    missing = [name for name in REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{run_dir} is missing {', '.join(missing)}; it is not a complete mtlrec run")


def serve(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    feedback_db: str | Path | None = None,
    api_key: str | None = None,
    threads: int = 0,
    score_cache_mb: float = DEFAULT_CACHE_MB,
    candidates: int = 0,
    log_level: str = "info",
) -> None:
    """Serve ``run_dir`` until interrupted. ``workers`` > 1 starts that many processes (each loads the model)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise MtlrecError(
            f"mtlrec serve needs the 'serve' extra ({exc.name} is missing): pip install 'mtlrec[serve]'"
        ) from None
    from mtlrec.serve.app import create_app
    from mtlrec.serve.auth import validate_key
    from mtlrec.serve.feedback import is_postgres_url, open_feedback_store

    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    api_key = validate_key(api_key)
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers must be between 1 and 64, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got '{log_level}'")
    if threads < 0:
        raise ConfigError(f"--threads must be 0 (torch's default) or more, got {threads}")
    if not 0 <= score_cache_mb < float("inf"):
        raise ConfigError(f"--score-cache-mb must be 0 (no cache) or more, got {score_cache_mb}")
    if candidates < 0:
        raise ConfigError(f"--candidates must be 0 (rank every item) or more, got {candidates}")
    if candidates > 0:
        from mtlrec.recommend.retrieval import import_faiss

        import_faiss()  # one clear line now rather than a failing worker
    if feedback_db is not None:
        open_feedback_store(feedback_db).close()  # creates it (or its tables) now, or says why it cannot
    log_config = logging_config(log_level)  # uvicorn applies it (in every worker)
    if not is_loopback(host):
        warning = f"listening on {host}: reachable from other machines"
        if feedback_db is not None and api_key is None:
            warning += "; POST /feedback accepts writes from anyone (set MTLREC_API_KEY)"
        print(f"WARNING:  {warning}", file=sys.stderr, flush=True)  # logging is uvicorn's to set up
    if workers == 1:
        app = create_app(run_dir, feedback_db=feedback_db, api_key=api_key, threads=threads,
                         score_cache_mb=score_cache_mb, candidates=candidates)  # fmt: skip
        uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config)
        return
    # Worker processes build their own app from the environment (uvicorn needs an import string for workers).
    os.environ["MTLREC_SERVE_RUN_DIR"] = str(run_dir.resolve())
    if feedback_db is None:
        os.environ["MTLREC_SERVE_FEEDBACK_DB"] = ""
    else:  # a URL as given; a path absolute (workers may start elsewhere)
        feedback_db = str(feedback_db) if is_postgres_url(feedback_db) else str(Path(feedback_db).resolve())
        os.environ["MTLREC_SERVE_FEEDBACK_DB"] = feedback_db
    os.environ["MTLREC_SERVE_THREADS"] = str(threads)
    os.environ["MTLREC_SERVE_SCORE_CACHE_MB"] = str(score_cache_mb)
    os.environ["MTLREC_SERVE_CANDIDATES"] = str(candidates)
    if api_key is None:
        os.environ.pop("MTLREC_API_KEY", None)
    else:
        os.environ["MTLREC_API_KEY"] = api_key
    from mtlrec.serve.workers import reuse_port_supported, run_workers

    if reuse_port_supported():  # a socket per worker: connections spread evenly (see serve/workers.py)
        run_workers(workers, host, port, log_level, log_config)
        return
    uvicorn.run("mtlrec.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, log_config=log_config)  # fmt: skip


def logging_config(level: str) -> dict:
    """uvicorn's logging setup plus mtlrec's own logger on the same handler (each worker applies it too)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["mtlrec"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
