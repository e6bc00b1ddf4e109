"""``/metrics``: the server's counters in the Prometheus text format (``prometheus-client``,
in the ``serve`` extra).

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, or two models served side by side) never share or collide on a metric:

- ``gcmr_requests_total{endpoint, method, status}``: requests answered; ``endpoint`` is the
  route's template (``/items/{item_id}``), ``other`` for paths no route serves, so a scan of
  random paths cannot grow the label set;
- ``gcmr_request_seconds{endpoint}``: latency histogram, from the request to the last byte;
- ``gcmr_batch_size`` / ``gcmr_batch_requests``: queries per batched search and the requests
  they came from; ``gcmr_batch_search_seconds``: the time of one batched search;
- ``gcmr_batch_failures_total``: batched searches that raised (searched again per request);
- ``gcmr_queue_depth``: queries waiting for a batch, read when scraped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from gcmr.extras import require
from gcmr.serve.batching import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_CONVERTER = re.compile(r":\w+}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ServeMetrics:
    """The metrics of one app, in a registry of its own; :meth:`render` is the ``/metrics``
    answer (``content_type`` its media type)."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        prom = require("prometheus_client", "serve", purpose="gcmr serve /metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.content_type = prom.CONTENT_TYPE_LATEST
        reg = {"registry": self.registry}
        self.requests = prom.Counter("gcmr_requests", "HTTP requests answered",
                                     ["endpoint", "method", "status"], **reg)
        self.latency = prom.Histogram("gcmr_request_seconds", "HTTP request latency (to the "
                                      "last byte sent)", ["endpoint"],
                                      buckets=LATENCY_BUCKETS, **reg)
        self.batch_size = prom.Histogram("gcmr_batch_size", "queries per batched search",
                                         buckets=BATCH_BUCKETS, **reg)
        self.batch_requests = prom.Histogram("gcmr_batch_requests", "requests whose queries "
                                             "one batched search held", buckets=BATCH_BUCKETS,
                                             **reg)
        self.batch_seconds = prom.Histogram("gcmr_batch_search_seconds", "time of one batched "
                                            "search", buckets=LATENCY_BUCKETS, **reg)
        self.batch_failures = prom.Counter("gcmr_batch_failures", "batched searches that "
                                           "raised (then searched again request by request)",
                                           **reg)
        self.queue_depth = prom.Gauge("gcmr_queue_depth", "queries waiting for a batch", **reg)
        self.queue_depth.set_function(queue_depth)

    def observe_batch(self, stats: BatchStats) -> None:
        if stats.failed:
            self.batch_failures.inc()
            return
        self.batch_size.observe(stats.size)
        self.batch_requests.observe(stats.requests)
        self.batch_seconds.observe(stats.seconds)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method if method in METHODS else "other",
                             str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware (outermost, so a 413 or 400 of the body check is counted too) that
    times every HTTP request and counts it by route template, method and status."""

    def __init__(self, app: Any, metrics: ServeMetrics, routes: Sequence[Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's route list (filled after this is built)

    def endpoint(self, scope: dict) -> str:
        from starlette.routing import Match

        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:  # "/items/{item_id:path}" -> "/items/{item_id}"
                return _CONVERTER.sub("}", str(getattr(route, "path", "other")))
        return "other"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app fails before answering
        t0 = time.perf_counter()

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(self.endpoint(scope), scope.get("method", ""),
                                         status, time.perf_counter() - t0)
