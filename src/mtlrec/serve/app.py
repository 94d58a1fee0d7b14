"""The HTTP API: ``create_app(run_dir, feedback_db=..., api_key=...)`` builds a FastAPI app whose lifespan loads
the run once (the language model loads lazily, on the first text query). Every error is JSON
``{"error": "...", "detail": ...}``; bad input is a 4xx with a message, never a 500."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at runtime.

import gc
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtlrec import __version__
from mtlrec.errors import MtlrecError
from mtlrec.recommend.cache import DEFAULT_MB as DEFAULT_CACHE_MB
from mtlrec.serve import schemas as s
from mtlrec.serve.auth import check_key, validate_key
from mtlrec.serve.batching import RecommendBatcher
from mtlrec.serve.feedback import (
    FeedbackError,
    FeedbackStore,
    IdempotencyKeyReused,
    describe_target,
    open_feedback_store,
)
from mtlrec.serve.metrics import CONTENT_TYPE, RequestMetrics
from mtlrec.serve.middleware import ServeMiddleware
from mtlrec.serve.page import install_page
from mtlrec.serve.service import MAX_K, ServeError, ServingModel, parse_blend

MAX_BODY_BYTES = 1 << 20  # 1 MiB
log = logging.getLogger("mtlrec.serve")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorBody, "description": text}
    for code, text in [
        (400, "Bad request (message says what to fix)"),
        (404, "Unknown user or item"),
        (422, "Invalid parameters or body"),
        (503, "Not ready"),
    ]
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"model": s.ErrorBody, "description": "Body over 1 MiB"},
    415: {"model": s.ErrorBody, "description": "Body not sent as JSON"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    401: {"model": s.ErrorBody, "description": "API key missing"},
    403: {"model": s.ErrorBody, "description": "API key wrong"},
}

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key (writes).")
bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token (writes).")


def create_app(
    run_dir: str | Path,
    *,
    feedback_db: str | Path | None = None,
    api_key: str | None = None,
    threads: int = 0,
    score_cache_mb: float = DEFAULT_CACHE_MB,
    candidates: int = 0,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API for the run in ``run_dir``.

    ``feedback_db``: store for ``POST /feedback``: a SQLite file (created if missing) or a ``postgresql://`` URL
    (see :func:`mtlrec.serve.feedback.open_feedback_store`); None disables feedback (503).
    ``api_key``: when set, write endpoints require it (``X-API-Key`` or ``Authorization: Bearer``).
    ``threads``: torch CPU threads for this process (0: torch's default).
    ``score_cache_mb``: MiB of known users' catalogue scores kept between requests (exact: see
    ``mtlrec.recommend.cache``); 0 computes every request.
    ``candidates``: > 0 ranks that many FAISS candidates per known user instead of the whole catalogue (large
    catalogues; needs the ``faiss`` extra); 0 ranks every item.
    """
    run_dir = Path(run_dir)
    api_key = validate_key(api_key)
    feedback_shown = "off" if feedback_db is None else describe_target(feedback_db)  # never the password

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        model = ServingModel.load(run_dir, score_cache_mb, candidates)
        store = None if feedback_db is None else open_feedback_store(feedback_db)
        app.state.model, app.state.store, app.state.run_dir = model, store, run_dir
        app.state.batcher = RecommendBatcher()
        _freeze_heap()
        _reload_on_sighup(app)
        info = model.info()
        log.info(
            "serving %s (dataset %s, %s users, %s items, created %s); feedback: %s; writes need an API key: %s",
            run_dir,
            info["dataset"],
            f"{info['n_users']:,}",
            f"{info['n_items']:,}",
            info["created"],
            feedback_shown,
            "yes" if api_key else "no",
        )
        try:
            yield
        finally:
            app.state.model = None
            if store is not None:
                app.state.store = None
                store.close()

    app = FastAPI(
        title="mtlrec",
        version=__version__,
        summary="Recommendations, item similarity, pair scores and feedback from one trained mtlrec run.",
        lifespan=lifespan,
    )
    app.state.model = None
    app.state.store = None
    app.state.run_dir = run_dir
    app.state.score_cache_mb, app.state.candidates = score_cache_mb, candidates
    app.state.reload = threading.Lock()  # one reload at a time; requests never wait for it
    metrics = RequestMetrics()
    app.add_middleware(ServeMiddleware, metrics=metrics, routes=app, max_body=max_body_bytes)
    _install_error_handlers(app)

    async def serving(request: Request) -> ServingModel:  # async: a sync dependency would cost a thread hop
        model = request.app.state.model
        if model is None:
            raise ServeError(503, "the model is not loaded yet (or the server is shutting down); retry shortly")
        return model

    def feedback_store(request: Request) -> FeedbackStore:
        store = request.app.state.store
        if store is None:
            raise ServeError(503, "feedback is not enabled on this server: start it with --feedback-db PATH")
        return store

    def require_key(
        key: Annotated[str | None, Depends(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        check_key(api_key, key, None if credentials is None else credentials.credentials)

    Model = Annotated[ServingModel, Depends(serving)]

    # -- probes ----------------------------------------------------------------------------------------------------
    @app.get("/health", response_model=s.Health, tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", response_model=s.Ready, responses=ERRORS, tags=["probes"])
    def ready(model: Model, request: Request) -> dict[str, Any]:
        """Readiness: the model is loaded. Which run and dataset, when it was trained, its test metrics."""
        store = request.app.state.store
        feedback = {"enabled": store is not None, "events": None if store is None else store.count()}
        return {"status": "ready", **model.info(), "feedback": feedback, "writes_need_api_key": api_key is not None,
                "pid": os.getpid()}  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, tags=["probes"])
    def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests by route and status, latency histogram, the model served."""
        model: ServingModel | None = request.app.state.model
        info = {"run": str(request.app.state.run_dir), "dataset": "", "created": "", "mtlrec_version": __version__}
        gauges: dict[str, tuple[str, float]] = {"mtlrec_model_loaded": ("1 when the model is loaded.", 0.0)}
        if model is not None:
            info.update(
                dataset=str(model.meta.get("dataset", "")),
                created=str(model.meta.get("created", "")),
                trained_with=str(model.meta.get("mtlrec_version", "")),
            )
            gauges["mtlrec_model_loaded"] = ("1 when the model is loaded.", 1.0)
            gauges["mtlrec_model_items"] = ("Items in the served catalogue.", float(model.n_items))
            gauges["mtlrec_model_users"] = ("Users known to the served model.", float(len(model.user_ids)))
            cache = model.rec.cache
            if cache is not None:
                gauges["mtlrec_score_cache_users"] = ("Users whose catalogue scores are cached.", float(len(cache)))
                gauges["mtlrec_score_cache_bytes"] = ("Bytes the score cache holds.", float(cache.bytes))
                gauges["mtlrec_score_cache_hits"] = ("Known-user requests answered from the cache.", cache.hits)
                gauges["mtlrec_score_cache_misses"] = ("Known-user requests that ran the network.", cache.misses)
        store: FeedbackStore | None = request.app.state.store
        if store is not None:
            gauges["mtlrec_feedback_events"] = ("Feedback events in the store.", float(store.count()))
        return PlainTextResponse(metrics.render(info, gauges), media_type=CONTENT_TYPE)

    # -- recommendations -------------------------------------------------------------------------------------------
    @app.get("/recommend", response_model=s.RecommendResponse, responses=ERRORS, tags=["recommend"])
    async def recommend(
        request: Request,
        model: Model,
        user: Annotated[str, Query(min_length=1, max_length=512, description="A user id of the run.")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items (at most the catalogue).")] = 10,
        exclude_seen: Annotated[bool, Query(description="Leave out items the user already has.")] = True,
        blend: Annotated[
            str | None, Query(max_length=1000, description="Task weights, e.g. interest:1,rating:0.3.")
        ] = None,
        cold_start: Annotated[
            bool, Query(description="Unknown user: the most popular items instead of a 404.")
        ] = False,
    ) -> JSONResponse:
        """Top-K for a known user, each with its overall score, every task's prediction and a reason naming the
        user's liked items most similar to it."""
        query = model.query(user, k=k, exclude_seen=exclude_seen, blend=parse_blend(blend))
        if query is None:
            return JSONResponse(model.unknown_user(user, k, cold_start))
        # Requests that wait together are answered in one batch on the model thread (see serve/batching.py). The
        # body is built by ServingModel in the documented shape and sent as is (tests check it against the schema).
        return JSONResponse(await request.app.state.batcher.recommend(model, query))

    @app.post("/recommend", response_model=s.RecommendResponse, responses=BODY_ERRORS, tags=["recommend"])
    def recommend_new_user(model: Model, body: s.NewUserRequest) -> dict[str, Any]:
        """Top-K for a new user from liked item ids and/or a text about their tastes (cold start)."""
        return model.recommend_new_user(liked=body.liked, text=body.text, k=body.k, blend=body.blend)

    # -- items -----------------------------------------------------------------------------------------------------
    @app.get("/items/{item_id}", response_model=s.ItemDetail, responses=ERRORS, tags=["items"])
    def item(model: Model, item_id: Annotated[str, PathParam(max_length=512)]) -> dict[str, Any]:
        """An item's title, categories, year, text and popularity."""
        return model.item(item_id)

    @app.get("/items/{item_id}/similar", response_model=s.SimilarResponse, responses=ERRORS, tags=["items"])
    def similar(
        model: Model,
        item_id: Annotated[str, PathParam(max_length=512)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        by: Annotated[
            Literal["learned", "text"],
            Query(description="learned: the model's item representations; text: the language model's vectors."),
        ] = "learned",
    ) -> dict[str, Any]:
        """The items most similar to one (cosine)."""
        items = model.similar(item_id, k, by)
        return {"item": model.brief(model.item_row(item_id)), "by": by, "items": items}

    # -- scores ----------------------------------------------------------------------------------------------------
    @app.post("/score", response_model=s.ScoreResponse, responses=BODY_ERRORS, tags=["recommend"])
    def score(model: Model, body: s.ScoreRequest) -> dict[str, Any]:
        """Every task's prediction, and the blended ranking score, for explicit (user, item) pairs."""
        return model.score([(p.user, p.item) for p in body.pairs], blend=body.blend)

    # -- feedback --------------------------------------------------------------------------------------------------
    @app.post(
        "/feedback",
        status_code=201,
        response_model=s.FeedbackResponse,
        responses=WRITE_ERRORS,
        dependencies=[Depends(require_key)],
        tags=["feedback"],
    )
    def feedback(
        store: Annotated[FeedbackStore, Depends(feedback_store)],
        body: Annotated[s.FeedbackBody, Body(description="One event or a list of events.")],
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="A retry with the same key is stored once and gets the same response.",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Store events durably (committed before the response). Events may name users and items the model does
        not know yet: they are what the next training run learns from (`mtlrec feedback export`)."""
        events = [e.to_event() for e in (body if isinstance(body, list) else [body])]
        try:
            ids = store.add(events, key=idempotency_key)
        except IdempotencyKeyReused as exc:
            raise ServeError(422, str(exc), {"idempotency_key": idempotency_key}) from None
        except (FeedbackError, sqlite3.OperationalError) as exc:
            log.error("feedback not stored: %s", exc)
            raise ServeError(
                503, f"the feedback store could not commit the events ({exc}); retry with the same Idempotency-Key"
            ) from None
        return {"stored": len(ids), "ids": ids}

    # -- admin -----------------------------------------------------------------------------------------------------
    @app.post(
        "/admin/reload",
        response_model=s.ReloadResponse,
        responses=WRITE_ERRORS,
        dependencies=[Depends(require_key)],
        tags=["admin"],
    )
    def reload(request: Request, body: Annotated[s.ReloadRequest | None, Body()] = None) -> dict[str, Any]:
        """Load a run (by default the served directory again, e.g. after a new training run wrote it) and swap it
        in. Requests already running finish with the model they started with; a run that fails to load leaves the
        current one serving. Needs the server's API key (and the server must have one)."""
        if api_key is None:
            raise ServeError(403, "reloading needs an API key: start the server with --api-key (or MTLREC_API_KEY)")
        target = None if body is None or body.run_dir is None else Path(body.run_dir)
        return swap_model(request.app, target)

    install_page(app)  # the web page at / (static files from the package) and GET /users
    return app


def swap_model(app: FastAPI, run_dir: Path | None = None) -> dict[str, Any]:
    """Load ``run_dir`` (default: the one served) and make it the served model. The swap is one reference
    assignment: a request holds the model it resolved at its start (``Depends``), so in-flight requests finish on
    the old one and nothing waits. Raises ServeError(422) and keeps serving the old model if loading fails."""
    with app.state.reload:
        target = Path(run_dir) if run_dir is not None else Path(app.state.run_dir)
        started = time.perf_counter()
        try:
            model = ServingModel.load(target, app.state.score_cache_mb, app.state.candidates)
        except (MtlrecError, OSError) as exc:  # OSError: a path the system refuses (too long, no permission)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ServeError(422, f"could not load {target}: {why}; still serving {app.state.run_dir}") from None
        previous: ServingModel | None = app.state.model
        app.state.model, app.state.run_dir = model, target
        seconds = time.perf_counter() - started
        _freeze_heap()  # the new model's objects; the old one's are freed once its last request is done
        log.info("reloaded: now serving %s (loaded in %.1f s)", target, seconds)
        return {"reloaded": True, "seconds": round(seconds, 3), "previous": None if previous is None else
                previous.info(), "current": model.info()}  # fmt: skip


def _freeze_heap() -> None:
    """Move everything alive now (the model, the catalogue, the libraries) out of the garbage collector's sight.
    Without this, each full collection walks ~240,000 objects of a loaded ML-100K run: 115 ms measured, a pause
    that every request in flight waits out (it was the p99 under load). Unfreezing first lets a previous model's
    reference cycles be collected after a reload."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _reload_on_sighup(app: FastAPI) -> None:
    """SIGHUP reloads the served directory in a background thread (the signal handler itself must not block).
    Only possible in the main thread of the process (as under ``mtlrec serve``); elsewhere it is skipped."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return

    def reload_in_background() -> None:
        try:
            swap_model(app)
        except ServeError as exc:
            log.error("SIGHUP reload failed: %s", exc.message)

    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(target=reload_in_background).start())


class _ErrorResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: an error may quote what the client sent, and a lone surrogate from a
    "\\ud800" escape (a blend key, say) cannot be encoded as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _install_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
        return _ErrorResponse(
            {"error": message, "detail": jsonable_encoder(detail)}, status_code=status, headers=headers
        )

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="mtlrec"'} if exc.status == 401 else None
        return error(exc.status, exc.message, exc.detail, headers)

    @app.exception_handler(MtlrecError)
    async def mtlrec_error(request: Request, exc: MtlrecError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {k: (_plain(v) if k == "ctx" else v) for k, v in e.items() if k not in ("input", "url")}
            for e in exc.errors()
        ]
        content_type = request.headers.get("content-type", "")
        body_errors = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in problems)
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        if body_errors and has_body and not _is_json(content_type):
            return error(
                415,
                f"the body must be JSON sent with 'Content-Type: application/json' (got '{content_type or 'none'}')",
            )
        bad_json = next((e for e in problems if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            why = (bad_json.get("ctx") or {}).get("error", "not valid JSON")
            loc = tuple(bad_json.get("loc", ()))
            at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
            return error(400, f"malformed JSON body{at}: {why}", problems)
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in problems[:3]
        )
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return error(422, f"invalid request: {where}{more}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {
            404: f"no such endpoint: {request.method} {request.url.path} (see /docs)",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code)
        return error(exc.status_code, message or str(exc.detail), None, dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return error(500, "internal server error (logged on the server)")


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _plain(ctx: Any) -> Any:
    """Validation error context with exceptions and other objects as text (JSON-friendly)."""
    if not isinstance(ctx, dict):
        return str(ctx)
    return {k: v if isinstance(v, str | int | float | bool | type(None)) else str(v) for k, v in ctx.items()}


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and ``mtlrec serve --workers N`` (each worker process builds its own
    app): reads MTLREC_SERVE_RUN_DIR, MTLREC_SERVE_FEEDBACK_DB, MTLREC_SERVE_THREADS, MTLREC_SERVE_SCORE_CACHE_MB,
    MTLREC_SERVE_CANDIDATES and MTLREC_API_KEY."""
    run_dir = os.environ.get("MTLREC_SERVE_RUN_DIR")
    if not run_dir:
        raise MtlrecError("MTLREC_SERVE_RUN_DIR is not set: it names the run directory to serve")
    return create_app(
        run_dir,
        feedback_db=os.environ.get("MTLREC_SERVE_FEEDBACK_DB") or None,
        api_key=os.environ.get("MTLREC_API_KEY") or None,
        threads=int(os.environ.get("MTLREC_SERVE_THREADS") or 0),
        score_cache_mb=float(os.environ.get("MTLREC_SERVE_SCORE_CACHE_MB") or DEFAULT_CACHE_MB),
        candidates=int(os.environ.get("MTLREC_SERVE_CANDIDATES") or 0),
    )
