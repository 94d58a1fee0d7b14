"""Serving a trained run over HTTP (``mtlrec serve``) and storing feedback for the next training run.

``create_app`` and ``serve`` need the ``serve`` extra (FastAPI, uvicorn): ``pip install "mtlrec[serve]"``. The
feedback store needs only the standard library, so ``mtlrec feedback export`` works without it; the PostgreSQL
store (``--feedback-db postgresql://...``) needs the ``postgres`` extra (psycopg).
"""

from typing import TYPE_CHECKING, Any

from mtlrec.serve.feedback import (
    FeedbackEvent,
    FeedbackStore,
    IdempotencyKeyReused,
    PostgresFeedbackStore,
    SQLiteFeedbackStore,
    open_feedback_store,
)

if TYPE_CHECKING:
    from mtlrec.serve.app import create_app
    from mtlrec.serve.server import serve


def __getattr__(name: str) -> Any:
    # Lazy: FastAPI and torch load only when the app is built.
    if name == "create_app":
        from mtlrec.serve.app import create_app

        return create_app
    if name == "serve":
        from mtlrec.serve.server import serve

        return serve
    raise AttributeError(f"module 'mtlrec.serve' has no attribute {name!r}")


__all__ = [
    "FeedbackEvent",
    "FeedbackStore",
    "IdempotencyKeyReused",
    "PostgresFeedbackStore",
    "SQLiteFeedbackStore",
    "create_app",
    "open_feedback_store",
    "serve",
]
