"""One pure ASGI middleware in front of the app: it refuses bodies over the size limit (413, before the app reads
them) and records every request's method, route template, status and latency for ``/metrics``."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mtlrec.serve.metrics import RequestMetrics

UNMATCHED = "unmatched"  # the route label of a request that fits no route (a 404 from routing)


async def send_json_error(send: Send, status: int, message: str, detail: Any = None) -> None:
    body = json.dumps({"error": message, "detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ServeMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics, routes: Any, max_body: int) -> None:
        """``routes``: the application whose ``router.routes`` name the route templates."""
        self.app, self.metrics, self.routes, self.max_body = app, metrics, routes, max_body

    def route_of(self, scope: Scope) -> str:
        partial = None
        for route in self.routes.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", UNMATCHED))
            if match == Match.PARTIAL and partial is None:  # the path fits, the method does not (405)
                partial = str(getattr(route, "path", UNMATCHED))
        return partial or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before responding

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._limited(scope, receive, send_and_record)
        finally:
            self.metrics.observe(scope["method"], self.route_of(scope), status, time.perf_counter() - start)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        limit = f"the limit is {self.max_body:,} bytes ({self.max_body / 2**20:g} MiB); send less per request"
        if b"content-length" in headers:
            try:
                length = int(headers[b"content-length"])
            except ValueError:
                await send_json_error(send, 400, "the Content-Length header is not a number")
                return
            if length > self.max_body:
                await send_json_error(
                    send, 413, f"request body too large ({length:,} bytes); {limit}", {"limit_bytes": self.max_body}
                )
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # HTTP/1.1: no length and no chunks means no body
            await self.app(scope, receive, send)
            return
        # chunked: read the body up to the limit, then hand it to the app as it came
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            total += len(message.get("body", b""))
            if total > self.max_body:
                await send_json_error(
                    send,
                    413,
                    f"request body too large (over {self.max_body:,} bytes); {limit}",
                    {"limit_bytes": self.max_body},
                )
                return
            messages.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
