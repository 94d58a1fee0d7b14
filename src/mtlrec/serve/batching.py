"""Dynamic batching for ``GET /recommend``: the requests that wait together are answered together, in one pass of
the network, on the event loop.

Why on the event loop and not in threads: the forward pass is many small torch calls that each release and retake
the GIL, so with request threads (FastAPI runs plain ``def`` endpoints in a pool of 40) the threads spend their time
handing the GIL around (measured on 2 cores: 58 requests/s from the pool, ~400/s batched), and even one model
thread costs a hand-off per request (1.5 ms of a 3.7 ms request, measured). Computing on the loop blocks it for one
pass (a few ms); the requests that arrive meanwhile wait in the socket buffers and become the next batch. Use one
worker process per core (``mtlrec serve --workers N``) to use the cores."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mtlrec.recommend import Query
from mtlrec.serve.service import ServingModel

log = logging.getLogger("mtlrec.serve")
MAX_BATCH = 8  # users per pass: most of the gain (2.8 -> 1.4 ms per user at 4), and a short wait for the last one
PAIR_BUDGET = 1 << 20  # at most this many (user, item) rows per pass, so a big catalogue gets smaller batches

Job = tuple[ServingModel, Query, "asyncio.Future[dict[str, Any]]"]


class RecommendBatcher:
    """``await recommend(model, query)`` answers a checked query (``ServingModel.query``). Queries that arrive in
    the same turn of the event loop are answered together, those of each model with ``ServingModel.recommend_many``
    calls of up to ``max_batch`` users (fewer for big catalogues); queries hold the model they were checked
    against, so a hot reload never mixes models in a batch."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._pending: list[Job] = []

    async def recommend(self, model: ServingModel, query: Query) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending.append((model, query, future))
        if len(self._pending) == 1:  # the first of this turn: answer all of them once the turn's requests are in
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        jobs, self._pending = self._pending, []
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            if not job[2].done():  # done: cancelled, the client went away
                groups.setdefault(id(job[0]), []).append(job)
        for group in groups.values():
            limit = max(1, min(self.max_batch, PAIR_BUDGET // group[0][0].n_items))
            for start in range(0, len(group), limit):
                self._answer(group[start : start + limit])

    @staticmethod
    def _answer(jobs: list[Job]) -> None:
        try:
            responses = jobs[0][0].recommend_many([query for _, query, _ in jobs])
        except Exception as exc:  # a bug, not bad input (queries are checked): alone, one query cannot sink others
            if len(jobs) == 1:
                jobs[0][2].set_exception(exc)
                return
            log.exception("a batch of %d recommendations failed; answering them one by one", len(jobs))
            for job in jobs:
                RecommendBatcher._answer([job])
            return
        for (_, _, future), response in zip(jobs, responses, strict=True):
            future.set_result(response)
