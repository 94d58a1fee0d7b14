"""Request and response bodies of the HTTP API (pydantic; FastAPI turns them into the OpenAPI schema)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from mtlrec.serve.feedback import FeedbackEvent
from mtlrec.serve.service import MAX_K

MAX_PAIRS = 10_000  # (user, item) pairs in one POST /score
MAX_EVENTS = 10_000  # feedback events in one POST /feedback
MAX_TS = 1e11  # Unix seconds (year 5138): anything larger is a unit mistake (milliseconds)


def _as_id(value: Any) -> Any:
    """Ids are strings; a JSON integer (MovieLens ids) is taken as its decimal text."""
    if isinstance(value, bool):
        raise ValueError("an id is a string (or an integer), not a boolean")
    if isinstance(value, int):
        return str(value)
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=512), BeforeValidator(_as_id)]
Blend = Annotated[
    dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None,
    Field(
        description="Ranking score weights by rankable task, e.g. {'interest': 1, 'rating': 0.3}; default: the "
        "run's eval.blend."
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong and what to do about it.")
    detail: Any = Field(None, description="Structured context: validation errors, unknown ids, valid names.")


# -- requests ---------------------------------------------------------------------------------------------------------
class NewUserRequest(Strict):
    text: str | None = Field(
        None, max_length=10_000, description="The new user's tastes in words.", examples=["I love 90s science fiction"]
    )
    liked: list[Id] = Field(
        default_factory=list, max_length=1000, description="Item ids the user liked.", examples=[["50", "181"]]
    )
    k: int = Field(10, ge=1, le=MAX_K)
    blend: Blend = None


class Pair(Strict):
    user: Id
    item: Id


class ScoreRequest(Strict):
    pairs: list[Pair] = Field(min_length=1, max_length=MAX_PAIRS, examples=[[{"user": "196", "item": "242"}]])
    blend: Blend = None


class FeedbackIn(Strict):
    user: Id
    item: Id
    type: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = Field(
        description="What happened: click, like, rating, purchase, ... (letters, digits, _ . : -).",
        examples=["rating"],
    )
    value: Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, StringConstraints(max_length=1024)] | None = (
        Field(None, description="A number (exported as the rating) or a short text.", examples=[4])
    )
    ts: float | datetime | None = Field(
        None, description="When it happened: Unix seconds or an ISO 8601 time (UTC if no zone); default: on receipt."
    )

    @field_validator("value", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("value is a number or a text, not a boolean")
        return value

    @field_validator("ts")
    @classmethod
    def _sane_time(cls, value: float | datetime | None) -> float | datetime | None:
        if value is None:
            return None
        seconds = _seconds(value)
        if not math.isfinite(seconds) or not 0 <= seconds < MAX_TS:
            raise ValueError(f"ts must be Unix seconds between 0 and {MAX_TS:.0e} (milliseconds? divide by 1000)")
        return value

    def to_event(self) -> FeedbackEvent:
        return FeedbackEvent(
            self.user, self.item, self.type, self.value, None if self.ts is None else _seconds(self.ts)
        )


def _seconds(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def _one_or_many(value: Any) -> str:
    return "events" if isinstance(value, list) else "event"


# One event or a list: tagged by shape, so a bad event's error names only its own fields ("body.events.3.type").
FeedbackBody = Annotated[
    Annotated[FeedbackIn, Tag("event")]
    | Annotated[list[FeedbackIn], Field(min_length=1, max_length=MAX_EVENTS), Tag("events")],
    Discriminator(_one_or_many),
]


# -- responses --------------------------------------------------------------------------------------------------------
class ItemBrief(BaseModel):
    item_id: str
    title: str
    categories: list[str]


class Neighbour(ItemBrief):
    similarity: float = Field(description="Cosine similarity.")


class Recommendation(ItemBrief):
    score: float = Field(description="The blended ranking score (most-popular fallback: the item's user count).")
    scores: dict[str, Any] = Field(description="Every task's prediction (probability, rating, top categories).")
    reason: str | None = Field(description='e.g. "because you liked Star Wars"; None when there is no history.')
    because: list[Neighbour] = Field(description="The user's liked items most similar to this one.")


class RecommendResponse(BaseModel):
    user: str | None
    strategy: Literal["model", "most_popular", "new_user"]
    blend: dict[str, float] | None
    items: list[Recommendation]


class ItemDetail(ItemBrief):
    year: int | float | None
    text: str = Field(description="The text the language model read.")
    popularity: int = Field(description="Users who have the item in the run.")


class SimilarResponse(BaseModel):
    item: ItemBrief
    by: Literal["learned", "text"]
    items: list[Neighbour]


class PairScore(BaseModel):
    user: str
    item: str
    score: float
    scores: dict[str, Any]


class ScoreResponse(BaseModel):
    blend: dict[str, float]
    predictions: list[PairScore]


class FeedbackResponse(BaseModel):
    stored: int = Field(description="Events in this request, all committed.")
    ids: list[int] = Field(description="Their ids in the store, in request order.")


class UsersResponse(BaseModel):
    prefix: str
    total: int = Field(description="Users whose id starts with the prefix.")
    users: list[str] = Field(description="The first `limit` of them, in natural order (u2 before u10).")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    run: str
    run_name: str
    dataset: str | None
    created: str | None
    mtlrec_version: str | None
    encoder: str | None
    n_users: int
    n_items: int
    tasks: list[str]
    rankable_tasks: list[str]
    default_blend: dict[str, float]
    metrics: dict[str, Any] = Field(description="metrics.json of the run: valid, test and any protocol sections.")
    training: dict[str, Any]
    feedback: dict[str, Any]
    writes_need_api_key: bool
    pid: int = Field(description="The server process that answered (with --workers N, one of N).")


class ReloadRequest(BaseModel):
    model_config = {"extra": "forbid"}

    run_dir: str | None = Field(
        None, max_length=4096, description="Run directory to serve from now on; default: the one being served."
    )


class ReloadResponse(BaseModel):
    reloaded: bool
    seconds: float = Field(description="Time taken to load the new run.")
    previous: dict[str, Any] | None = Field(description="The run served before (as in /ready).")
    current: dict[str, Any] = Field(description="The run served now (as in /ready).")
