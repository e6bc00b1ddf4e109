"""Micro-batching (gcmr.serve.batching): concurrent requests decoded in one search, bounded
by max_batch / max_wait / the work bound, fair between requests and between (k, beam)
groups, a failing query failing only its own request, cancelled requests dropped, and a
graceful close that finishes the queue; then the same through the app (/health, OpenAPI,
lifespan, a real uvicorn server shut down while requests are in flight) and the CLI flags."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gcmr.errors import ConfigError, GcmrError
from gcmr.serve.batching import (
    BatchingConfig,
    BatchKey,
    MicroBatcher,
    ServerClosingError,
)

K10 = BatchKey(k=10)


class Recorder:
    """A search function that records each batch (its queries and key), optionally waits for
    ``gate`` before answering, and fails a batch holding a query that starts with "bad".
    Query "qN" finds row N first, so an answer shows whose it is."""

    def __init__(self, gate: threading.Event | None = None, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], BatchKey]] = []
        self.gate = gate
        self.delay = delay
        self.started = threading.Event()

    def __call__(self, queries: list[str], key: BatchKey) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((list(queries), key))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        time.sleep(self.delay)
        if any(q.startswith("bad") for q in queries):
            raise GcmrError("the tokenizer found no tokens in a query")
        first = np.asarray([int(q[1:]) if q[1:].isdigit() else 0 for q in queries])
        rows = first[:, None] + np.arange(key.k)[None, :]
        return -np.arange(key.k, dtype=np.float32)[None, :].repeat(len(queries), 0), rows

    @property
    def sizes(self) -> list[int]:
        return [len(q) for q, _ in self.calls]


def first_rows(future) -> list[int]:
    return future.result(10)[1][:, 0].tolist()


def test_concurrent_requests_are_decoded_in_one_search() -> None:
    search = Recorder()
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=5, max_wait_ms=1000))
    t0 = time.perf_counter()
    futures = [batcher.submit([f"q{i}"], K10) for i in range(5)]
    assert [first_rows(f) for f in futures] == [[i] for i in range(5)]
    assert time.perf_counter() - t0 < 0.9  # a full batch goes at once, not after max_wait
    assert search.sizes == [5]
    assert batcher.close(5)


def test_the_first_query_waits_at_most_max_wait() -> None:
    search = Recorder()
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=32, max_wait_ms=60))
    t0 = time.perf_counter()
    assert first_rows(batcher.submit(["q7"], K10)) == [7]
    waited = time.perf_counter() - t0
    assert 0.05 <= waited < 2, waited
    assert search.sizes == [1]
    batcher.close(5)


def test_a_lone_client_is_searched_at_once_once_it_is_known_to_be_alone() -> None:
    """The first batch waits max_wait for company; after a batch of one request, the same
    caller asking again is searched at once instead of waiting max_wait every time."""
    search = Recorder()
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=8, max_wait_ms=300))
    t0 = time.perf_counter()
    assert first_rows(batcher.submit(["q1"], K10)) == [1]
    assert time.perf_counter() - t0 >= 0.25  # the first batch waited for company
    t1 = time.perf_counter()
    for i in range(2, 6):
        assert first_rows(batcher.submit([f"q{i}"], K10)) == [i]
    assert time.perf_counter() - t1 < 0.25  # 4 more requests, none waited 300 ms
    assert search.sizes == [1] * 5
    batcher.close()


def test_calls_run_on_the_worker_between_batches_in_order() -> None:
    """call(fn) runs fn on the worker thread after the batch in flight and before queued
    searches; its result or exception reaches the caller; a cancelled call never runs."""
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=4, max_wait_ms=0))
    first = batcher.submit(["q1"], K10)
    assert search.started.wait(5)
    threads, order = [], []

    def step(name: str) -> str:
        threads.append(threading.current_thread().name)
        order.append(name)
        if name == "boom":
            raise GcmrError("update refused")
        return name

    queued = batcher.submit(["q2"], K10)
    a, boom = batcher.call(lambda: step("a")), batcher.call(lambda: step("boom"))
    skipped = batcher.call(lambda: step("never"))
    assert skipped.cancel()
    gate.set()
    assert a.result(5) == "a"
    with pytest.raises(GcmrError, match="update refused"):
        boom.result(5)
    assert first_rows(first) == [1] and first_rows(queued) == [2]
    assert order == ["a", "boom"]
    assert [q for q, _ in search.calls] == [["q1"], ["q2"]]  # q2 after the calls
    assert set(threads) == {search_thread(batcher)}
    batcher.close()
    with pytest.raises(ServerClosingError):
        batcher.call(lambda: None)


def search_thread(batcher: MicroBatcher) -> str:
    return batcher._thread.name  # noqa: SLF001 - the worker's name, for the test only


def test_after_a_search_the_queue_waits_for_the_callers_it_answered() -> None:
    """A query that queued during a long search has waited past max_wait, yet the next
    batch waits up to max_wait after the search for the callers just answered, so they
    search together instead of in alternating half batches."""
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=8, max_wait_ms=400))
    first = batcher.submit(["q1"], K10)
    assert search.started.wait(5)
    waiting = batcher.submit(["q2"], K10)
    time.sleep(0.5)  # q2 has now waited longer than max_wait
    gate.set()
    first.result(10)
    again = batcher.submit(["q3"], K10)  # the caller answered asks again
    assert first_rows(waiting) == [2] and first_rows(again) == [3]
    assert [q for q, _ in search.calls] == [["q1"], ["q2", "q3"]]
    batcher.close(5)


def test_max_batch_one_searches_every_query_alone() -> None:
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=1, max_wait_ms=0))
    futures = [batcher.submit(["q1", "q2", "q3"], K10), batcher.submit(["q4"], K10)]
    gate.set()
    assert first_rows(futures[0]) == [1, 2, 3] and first_rows(futures[1]) == [4]
    assert search.sizes == [1, 1, 1, 1]
    batcher.close(5)


def test_the_work_bound_splits_a_request_and_keeps_its_order() -> None:
    search = Recorder()
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=64, max_wait_ms=0),
                           chunk=lambda key: 30 // max(key.k, 10))  # chunk_work 30 -> 3
    future = batcher.submit([f"q{i}" for i in range(10)], BatchKey(k=4))
    scores, rows = future.result(10)
    assert rows[:, 0].tolist() == list(range(10)) and scores.shape == rows.shape == (10, 4)
    assert search.sizes == [3, 3, 3, 1]
    assert batcher.capacity(BatchKey(k=100)) == 1  # never 0
    batcher.close(5)


def test_a_small_request_rides_in_the_next_batch_of_a_large_one() -> None:
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=4, max_wait_ms=0))
    big = batcher.submit([f"q{i}" for i in range(20)], K10)
    assert search.started.wait(5)  # the first 4 of the big request are being searched
    small = batcher.submit(["q99"], K10)
    assert batcher.pending == 17
    gate.set()
    assert first_rows(small) == [99] and first_rows(big) == list(range(20))
    batches = [q for q, _ in search.calls]
    assert batches[0] == ["q0", "q1", "q2", "q3"]
    assert "q99" in batches[1], batches  # not after the 16 other queries of the big one
    assert [q for b in batches for q in b if q != "q99"] == [f"q{i}" for i in range(20)]
    batcher.close(5)


def test_requests_share_a_batch_round_robin() -> None:
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=4, max_wait_ms=0))
    batcher.submit(["q0"], K10)
    assert search.started.wait(5)
    a = batcher.submit([f"q{i}" for i in range(10, 20)], K10)
    b = batcher.submit([f"q{i}" for i in range(20, 30)], K10)
    gate.set()
    a.result(10), b.result(10)
    assert search.calls[1][0] == ["q10", "q11", "q20", "q21"]  # an equal share each
    for queries, _ in search.calls[1:]:
        assert sorted(q[1] for q in queries) == ["1", "1", "2", "2"], search.calls
    batcher.close(5)


def test_groups_of_different_k_take_turns() -> None:
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=2, max_wait_ms=0))
    wide = batcher.submit([f"q{i}" for i in range(8)], BatchKey(k=5, beam=50))
    assert search.started.wait(5)
    narrow = batcher.submit(["q42"], BatchKey(k=3))
    gate.set()
    assert first_rows(narrow) == [42] and narrow.result()[1].shape == (1, 3)
    assert wide.result(10)[1].shape == (8, 5)
    keys = [key for _, key in search.calls]
    assert keys[1] == BatchKey(k=3), keys  # one batch of the wide group, then the other group
    assert all(key == BatchKey(k=5, beam=50) for key in keys[:1] + keys[2:])


def test_a_failing_query_fails_only_its_own_request() -> None:
    search = Recorder()
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=4, max_wait_ms=1000))
    ok1 = batcher.submit(["q1"], K10)
    bad = batcher.submit(["q2", "bad"], K10)
    ok2 = batcher.submit(["q3"], K10)
    assert first_rows(ok1) == [1] and first_rows(ok2) == [3]
    with pytest.raises(GcmrError, match="no tokens"):
        bad.result(10)
    # the shared batch failed, then each request's part was searched alone
    assert search.sizes == [4, 1, 2, 1]
    assert batcher.pending == 0
    batcher.close(5)


def test_a_cancelled_request_is_not_searched() -> None:
    gate = threading.Event()
    search = Recorder(gate)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=2, max_wait_ms=0))
    first = batcher.submit(["q1"], K10)
    assert search.started.wait(5)
    gone = batcher.submit([f"q{i}" for i in range(50, 60)], K10)
    kept = batcher.submit(["q2"], K10)
    assert gone.cancel() and batcher.pending == 11
    gate.set()
    assert first_rows(first) == [1] and first_rows(kept) == [2]
    assert not any(q.startswith("q5") for qs, _ in search.calls for q in qs)
    assert batcher.pending == 0
    batcher.close(5)


def test_close_finishes_every_queued_request_then_refuses() -> None:
    search = Recorder(delay=0.05)
    batcher = MicroBatcher(search, config=BatchingConfig(max_batch=2, max_wait_ms=0))
    futures = [batcher.submit([f"q{i}", f"q{i + 100}"], K10) for i in range(6)]
    assert batcher.close(10)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert [first_rows(f) for f in futures] == [[i, i + 100] for i in range(6)]
    with pytest.raises(ServerClosingError, match="shutting down"):
        batcher.submit(["q1"], K10)
    assert MicroBatcher(search).close(0)  # never started: nothing to wait for


def test_an_empty_request_is_answered_without_a_search() -> None:
    search = Recorder()
    scores, rows = MicroBatcher(search).submit([], BatchKey(k=7)).result(1)
    assert scores.shape == rows.shape == (0, 7) and search.calls == []


@pytest.mark.parametrize("fields", [{"max_batch": 0}, {"max_batch": 5000}, {"max_batch": 2.0},
                                    {"max_wait_ms": -1}, {"max_wait_ms": math.nan},
                                    {"max_wait_ms": math.inf}, {"max_wait_ms": 1001},
                                    {"max_wait_ms": True}, {"max_wait_ms": "5"}])
def test_the_batching_config_is_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(fields))):
        BatchingConfig(**fields)


def test_the_batching_config_as_reported() -> None:
    assert BatchingConfig().as_dict() == {"max_batch": 32, "max_wait_ms": 2.0}
    assert BatchingConfig(max_batch=1, max_wait_ms=0).as_dict() == {"max_batch": 1,
                                                                    "max_wait_ms": 0.0}


def test_gcmr_serve_flags_set_the_batching(monkeypatch, tmp_path: Path) -> None:
    import gcmr.serve.app as app_module
    from gcmr.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "serve", lambda model, **kw: seen.update(kw))
    assert main(["serve", str(tmp_path), "--max-batch", "8", "--max-wait-ms", "0.5"]) == 0
    assert seen["batching"] == BatchingConfig(max_batch=8, max_wait_ms=0.5)
    assert main(["serve", str(tmp_path)]) == 0
    assert seen["batching"] == BatchingConfig()
    for bad in (["--max-batch", "0"], ["--max-batch", "99999"], ["--max-wait-ms", "-1"],
                ["--max-wait-ms", "2000"], ["--max-wait-ms", "nan"], ["--max-wait-ms", "x"]):
        with pytest.raises(SystemExit):
            main(["serve", str(tmp_path), *bad])


# through the app

fastapi = pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from gcmr.serve.app import ServeLimits, build_app


class SlowFake:
    """A 100-item searcher whose ``search_rows`` records each call and sleeps ``delay``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.item_ids = [f"item{i}" for i in range(100)]
        self.delay = delay
        self.calls: list[list[str]] = []

    def item_descriptions(self):
        return lambda row: f"caption {row}"

    def search_rows(self, queries, *, k=10, beam=None, batch_size=256):
        self.calls.append(list(queries))
        time.sleep(self.delay)
        first = np.asarray([int(q[1:]) % 100 for q in queries])
        rows = (first[:, None] + np.arange(k)[None, :]) % 100
        return -np.arange(k, dtype=np.float32)[None, :].repeat(len(queries), 0), rows


def test_concurrent_http_requests_share_a_batched_search() -> None:
    fake = SlowFake(delay=0.05)
    app = build_app(fake, name="fake", batching=BatchingConfig(max_batch=8, max_wait_ms=300))
    answers: dict[int, Any] = {}
    with TestClient(app) as client:
        def ask(i: int) -> None:
            answers[i] = client.get("/search", params={"q": f"q{i}", "k": 3})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        health = client.get("/health").json()
    assert all(answers[i].status_code == 200 for i in range(8))
    assert [answers[i].json()["results"][0]["hits"][0]["id"] for i in range(8)] == \
        [f"item{i}" for i in range(8)]  # each caller gets its own answer
    assert max(len(c) for c in fake.calls) > 1 and sum(map(len, fake.calls)) == 8, fake.calls
    assert health["batching"] == {"max_batch": 8, "max_wait_ms": 300.0}


def test_the_openapi_schema_states_the_batching() -> None:
    schema = TestClient(build_app(SlowFake(), name="fake",
                                  batching=BatchingConfig(max_batch=12, max_wait_ms=7.5))
                        ).get("/openapi.json").json()
    text = schema["info"]["description"]
    assert "at most 12 queries per batched search" in text and "7.5 ms" in text
    assert "503" in schema["paths"]["/search"]["get"]["responses"]


def test_the_lifespan_drains_the_queue_at_shutdown() -> None:
    fake = SlowFake(delay=0.1)
    app = build_app(fake, name="fake", batching=BatchingConfig(max_batch=1, max_wait_ms=0))
    with TestClient(app) as client:
        assert client.get("/search", params={"q": "q1"}).status_code == 200
        queued = app.state.batcher.submit(["q2", "q3", "q4"], BatchKey(k=10))
        assert not queued.done()
    assert app.state.batcher.closed and queued.done()  # finished before shutdown completed
    assert queued.result()[1][:, 0].tolist() == [2, 3, 4]
    r = client.get("/search", params={"q": "q5"})  # after shutdown: refused, not hung
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_a_batch_over_the_work_bound_is_split_through_the_app() -> None:
    fake = SlowFake()
    client = TestClient(build_app(fake, name="fake", limits=ServeLimits(chunk_work=40),
                                  batching=BatchingConfig(max_batch=3, max_wait_ms=0)))
    body = client.post("/search", json={"queries": [f"q{i}" for i in range(10)], "k": 4}).json()
    assert [r["hits"][0]["id"] for r in body["results"]] == [f"item{i}" for i in range(10)]
    assert [len(c) for c in fake.calls] == [3, 3, 3, 1]  # max_batch 3 < chunk_work // 10 = 4


def test_a_real_uvicorn_server_answers_requests_in_flight_at_shutdown() -> None:
    """uvicorn on a free port, 6 slow requests in flight, then a graceful exit: every one is
    answered with 200 (uvicorn finishes them, the lifespan drains the batcher)."""
    import socket

    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = SlowFake(delay=0.3)
    app = build_app(fake, name="fake", batching=BatchingConfig(max_batch=2, max_wait_ms=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    statuses: list[int] = []

    def ask(i: int) -> None:
        r = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": f"q{i}"}, timeout=20)
        statuses.append(r.status_code)

    clients = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in clients:
        t.start()
    deadline = time.time() + 10  # every request reached the server, the first is searched
    while (not fake.calls or sum(map(len, fake.calls)) + app.state.batcher.pending < 6) \
            and time.time() < deadline:
        time.sleep(0.005)
    assert len(fake.calls) < 3  # some are still queued when the exit begins
    server.should_exit = True  # what SIGTERM does
    for t in clients:
        t.join(20)
    thread.join(20)
    assert statuses == [200] * 6 and not thread.is_alive()
    assert app.state.batcher.closed and app.state.batcher.pending == 0
