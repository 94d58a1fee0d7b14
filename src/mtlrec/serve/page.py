"""The web page at ``/`` (plain HTML, CSS and JavaScript shipped as package data in ``mtlrec/serve/static``, no
build step, nothing fetched from outside) and ``GET /users``, the user-id suggestions it shows."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint signatures at runtime.

import re
import weakref
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from mtlrec.serve import schemas as s
from mtlrec.serve.service import ServeError, ServingModel

STATIC_DIR = Path(__file__).parent / "static"
MAX_USERS = 1000  # ids in one GET /users answer

router = APIRouter()
_sorted_ids: "weakref.WeakKeyDictionary[ServingModel, list[str]]" = weakref.WeakKeyDictionary()


def _natural(user_id: str) -> list[Any]:
    """'u2' before 'u10', '9' before '10'."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", user_id) if part]


def sorted_users(model: ServingModel) -> list[str]:
    ids = _sorted_ids.get(model)
    if ids is None:
        ids = _sorted_ids[model] = sorted((str(u) for u in model.user_ids), key=_natural)
    return ids


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The page: pick a user or describe your tastes, see the recommendations, like them."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/users", response_model=s.UsersResponse, responses={503: {"model": s.ErrorBody}}, tags=["users"])
def users(
    request: Request,
    prefix: Annotated[str, Query(max_length=512, description="Ids starting with this (case-insensitive).")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_USERS, description="How many ids at most.")] = 20,
) -> dict[str, Any]:
    """The run's user ids that start with ``prefix``, in natural order (u2 before u10): suggestions for the page."""
    model: ServingModel | None = request.app.state.model
    if model is None:
        raise ServeError(503, "the model is not loaded yet (or the server is shutting down); retry shortly")
    wanted = prefix.casefold()
    matching = [u for u in sorted_users(model) if u.casefold().startswith(wanted)]
    return {"prefix": prefix, "total": len(matching), "users": matching[:limit]}


def install_page(app: FastAPI) -> None:
    """Add ``/``, ``GET /users`` and the page's files under ``/static`` to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
