"""``/metrics``: the Prometheus text format (parsed back with prometheus-client's own parser),
requests by route template, method and status (a 413 of the body check and a 404 included,
unknown paths folded into ``other``), latency and batch-size histograms, the queue-depth
gauge, and one registry per app."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gcmr.serve.app import ServeLimits, build_app
from gcmr.serve.batching import BatchingConfig, BatchKey


class Fake:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.item_ids = [f"item{i}" for i in range(5)]
        self.gate = gate
        self.started = threading.Event()

    def item_descriptions(self):
        return lambda row: f"caption {row}"

    def search_rows(self, queries, *, k=10, beam=None, batch_size=256):
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        rows = np.tile(np.arange(k) % 5, (len(queries), 1))
        return np.zeros(rows.shape, np.float32), rows


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: Any) -> float:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def test_requests_are_counted_by_route_method_and_status() -> None:
    client = TestClient(build_app(Fake(), name="fake", limits=ServeLimits(max_body_bytes=200)))
    assert client.get("/search", params={"q": "a"}).status_code == 200
    assert client.get("/search", params={"q": "b", "k": 3}).status_code == 200
    assert client.get("/search", params={"q": "c", "k": 0}).status_code == 422
    assert client.post("/search", json={"queries": ["x" * 300]}).status_code == 413
    assert client.get("/items/nope").status_code == 404
    assert client.get("/items/item1").status_code == 200
    for i in range(3):
        assert client.get(f"/random/path/{i}").status_code == 404
    m = scrape(client)
    count = "gcmr_requests_total"
    assert value(m, count, endpoint="/search", method="GET", status=200) == 2
    assert value(m, count, endpoint="/search", method="GET", status=422) == 1
    assert value(m, count, endpoint="/search", method="POST", status=413) == 1
    assert value(m, count, endpoint="/items/{item_id}", method="GET", status=404) == 1
    assert value(m, count, endpoint="/items/{item_id}", method="GET", status=200) == 1
    assert value(m, count, endpoint="other", method="GET", status=404) == 3
    assert not any("random" in str(labels) for _, labels in m)  # paths never become labels
    assert value(m, "gcmr_request_seconds_count", endpoint="/search") == 4
    assert value(m, "gcmr_request_seconds_bucket", endpoint="/search", le="30.0") == 4
    assert value(m, "gcmr_request_seconds_sum", endpoint="/search") > 0


def test_batch_sizes_and_the_requests_in_them() -> None:
    client = TestClient(build_app(Fake(), name="fake",
                                  batching=BatchingConfig(max_batch=4, max_wait_ms=0)))
    client.post("/search", json={"queries": ["a", "b", "c"], "k": 2})
    client.post("/search", json={"queries": [f"q{i}" for i in range(6)], "k": 2})  # 4 + 2
    m = scrape(client)
    assert value(m, "gcmr_batch_size_count") == 3 and value(m, "gcmr_batch_size_sum") == 9
    assert value(m, "gcmr_batch_size_bucket", le="2.0") == 1
    assert value(m, "gcmr_batch_size_bucket", le="4.0") == 3
    assert value(m, "gcmr_batch_requests_sum") == 3
    assert value(m, "gcmr_batch_search_seconds_count") == 3
    assert value(m, "gcmr_batch_failures_total") == 0


def test_the_queue_depth_is_read_when_scraped() -> None:
    gate = threading.Event()
    fake = Fake(gate)
    app = build_app(fake, name="fake", batching=BatchingConfig(max_batch=2, max_wait_ms=0))
    client = TestClient(app)
    assert value(scrape(client), "gcmr_queue_depth") == 0
    futures = [app.state.batcher.submit(["a", "b"], BatchKey(k=3)),
               app.state.batcher.submit(["c", "d", "e"], BatchKey(k=3))]
    assert fake.started.wait(5)
    deadline = time.time() + 5
    while app.state.batcher.pending != 3 and time.time() < deadline:
        time.sleep(0.01)
    assert value(scrape(client), "gcmr_queue_depth") == 3  # 5 queued, 2 being searched
    gate.set()
    for f in futures:
        f.result(10)
    assert value(scrape(client), "gcmr_queue_depth") == 0


def test_every_app_has_its_own_registry() -> None:
    apps = [TestClient(build_app(Fake(), name=f"fake{i}")) for i in range(5)]  # no collision
    apps[0].get("/search", params={"q": "a"})
    apps[0].get("/search", params={"q": "b"})
    apps[1].get("/search", params={"q": "c"})
    counts = [value(scrape(c), "gcmr_requests_total", endpoint="/search", method="GET",
                    status=200) for c in apps]
    assert counts == [2, 1, 0, 0, 0]
