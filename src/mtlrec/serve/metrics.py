"""Request metrics in the Prometheus text exposition format (version 0.0.4), written by hand: a counter of
requests by method, route and status, and a latency histogram by route. Routes are the app's path templates
(``/items/{item_id}``), never raw paths, so the number of series stays bounded. Each server process keeps its
own figures (with ``--workers N``, a scrape reaches one of them)."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds


def escape(value: object) -> str:
    """A label value as the exposition format quotes it."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs: object) -> str:
    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in pairs.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class RequestMetrics:
    """Thread-safe counters; ``observe`` is called once per finished request."""

    def __init__(self, buckets: Iterable[float] = BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.started = time.time()
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[str, list[float]] = {}  # route -> per-bucket counts (not cumulative), +Inf, sum

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            hist = self._latency.setdefault(route, [0.0] * (len(self.buckets) + 2))
            hist[bisect.bisect_left(self.buckets, seconds)] += 1  # first bucket with le >= seconds, else +Inf
            hist[-1] += seconds

    def requests(self, method: str, route: str, status: int) -> int:
        with self._lock:
            return self._requests.get((method, route, status), 0)

    def render(self, info: dict[str, object], gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """The whole exposition: ``info`` labels the model-info gauge; ``gauges`` name -> (help, value)."""
        with self._lock:
            requests = sorted(self._requests.items())
            latency = {route: list(h) for route, h in sorted(self._latency.items())}
        lines = [
            "# HELP mtlrec_requests_total HTTP requests served, by method, route and status code.",
            "# TYPE mtlrec_requests_total counter",
        ]
        for (method, route, status), n in requests:
            lines.append(f"mtlrec_requests_total{labels(method=method, path=route, status=status)} {n}")
        lines += [
            "# HELP mtlrec_request_duration_seconds Time from request start to the end of the response, by route.",
            "# TYPE mtlrec_request_duration_seconds histogram",
        ]
        for route, hist in latency.items():
            cumulative = 0.0
            for le, count in zip((*self.buckets, "+Inf"), hist[:-1], strict=True):
                cumulative += count
                bound = le if isinstance(le, str) else _number(le)
                lines.append(f"mtlrec_request_duration_seconds_bucket{labels(path=route, le=bound)} {int(cumulative)}")
            lines.append(f"mtlrec_request_duration_seconds_sum{labels(path=route)} {hist[-1]!r}")
            lines.append(f"mtlrec_request_duration_seconds_count{labels(path=route)} {int(cumulative)}")
        lines += [
            "# HELP mtlrec_model_info The run being served (value always 1).",
            "# TYPE mtlrec_model_info gauge",
            f"mtlrec_model_info{labels(**info)} 1",
            "# HELP mtlrec_start_time_seconds When this server process started, Unix seconds.",
            "# TYPE mtlrec_start_time_seconds gauge",
            f"mtlrec_start_time_seconds {self.started!r}",
        ]
        for name, (help_text, value) in (gauges or {}).items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
        return "\n".join(lines) + "\n"
