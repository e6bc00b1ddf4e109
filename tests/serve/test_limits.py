"""The server's bounds: body size, query length and queries per request (configurable, in
/health and the OpenAPI schema), 4xx for surrogates and bad encodings, errors that never echo
a request, and a large batch searched over several batched searches, so a concurrent small
request is served between them (checked with a fake slow searcher; the batcher itself:
tests/serve/test_batching.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from gcmr.errors import ConfigError
from gcmr.search.base import MAX_BEAM, MAX_K
from gcmr.serve.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUERIES,
    DEFAULT_MAX_QUERY_CHARS,
    MAX_DETAIL_CHARS,
    ServeLimits,
    build_app,
)


class FakeSearcher:
    """A searcher over 5 items that records every ``search_rows`` call (its queries, in
    order) and takes ``delay`` seconds per call: a slow model without a model."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.item_ids = [f"item{i}" for i in range(5)]
        self.delay = delay
        self.error = error
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self._mutex = threading.Lock()

    def item_descriptions(self):
        return lambda row: f"caption {row}"

    def search_rows(self, queries, *, k=10, beam=None, candidates=None, batch_size=256):
        with self._mutex:
            self.calls.append(list(queries))
        self.started.set()
        if self.error is not None:
            raise self.error
        time.sleep(self.delay)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        width = min(k, len(self.item_ids))
        for i, q in enumerate(queries):  # a query "qN" finds item N % 5 first
            first = int(q[1:]) % 5 if q[1:].isdigit() else 0
            rows[i, :width] = (first + np.arange(width)) % 5
        scores = np.where(rows >= 0, -np.arange(k, dtype=np.float32), -np.inf)
        return scores.astype(np.float32), rows


def client_for(searcher: Any = None, **limits: int) -> TestClient:
    return TestClient(build_app(searcher or FakeSearcher(), name="fake",
                                limits=ServeLimits(**limits)))


def test_health_reports_the_limits() -> None:
    limits = client_for().get("/health").json()["limits"]
    assert limits == {"max_body_bytes": DEFAULT_MAX_BODY_BYTES,
                      "max_query_chars": DEFAULT_MAX_QUERY_CHARS,
                      "max_queries": DEFAULT_MAX_QUERIES, "chunk_work": 4096,
                      "max_k": MAX_K, "max_beam": MAX_BEAM}
    custom = client_for(max_body_bytes=500, max_query_chars=7, max_queries=3, chunk_work=50)
    assert custom.get("/health").json()["limits"]["max_queries"] == 3


def test_the_openapi_schema_carries_the_limits() -> None:
    schema = client_for(max_body_bytes=5000, max_query_chars=77, max_queries=12).get(
        "/openapi.json").json()
    request = schema["components"]["schemas"]["SearchRequest"]["properties"]
    queries = next(o for o in request["queries"]["anyOf"] if o.get("type") == "array")
    assert queries["maxItems"] == 12 and queries["minItems"] == 1  # optional: like / vector
    assert queries["items"]["maxLength"] == 77
    assert request["k"]["maximum"] == MAX_K and request["k"]["minimum"] == 1
    assert any(option.get("maximum") == MAX_BEAM for option in request["beam"]["anyOf"])
    get = schema["paths"]["/search"]["get"]
    q = next(p for p in get["parameters"] if p["name"] == "q")
    assert any(o.get("maxLength") == 77 for o in q["schema"]["anyOf"])
    items = schema["components"]["schemas"]["AddRequest"]["properties"]["items"]
    assert items["maxItems"] == 12
    assert "413" in get["responses"] and "413" in schema["paths"]["/search"]["post"]["responses"]
    assert "5,000 bytes" in schema["info"]["description"]


def test_a_body_over_the_limit_is_413_before_parsing() -> None:
    client = client_for(max_body_bytes=1000)
    big = {"queries": ["q1" * 400, "q2" * 400]}
    r = client.post("/search", json=big)
    assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]
    # no Content-Length (chunked upload): counted while it is read
    r = client.post("/search", content=iter([b'{"queries": ["', b"x" * 2000, b'"]}']),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/search", json={"queries": ["q1"]}).status_code == 200


def test_query_length_and_count_limits_never_echo_the_request() -> None:
    client = client_for(max_body_bytes=8 << 20, max_query_chars=50, max_queries=4)
    r = client.post("/search", json={"queries": ["q1", "z" * 1_000_000]})
    assert r.status_code == 422 and len(r.text) < 2000
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", "queries", 1] and "50" in detail[0]["msg"]
    assert "1,000,000 characters" in detail[0]["input"]
    r = client.post("/search", json={"queries": [f"q{i}" for i in range(10_000)]})
    assert r.status_code == 422 and len(r.text) < 2000 and "q9999" not in r.text
    assert "10,000 items" in r.json()["detail"][0]["input"]
    r = client.get("/search", params={"q": "y" * 51})
    assert r.status_code == 422 and len(r.text) < 2000


def test_many_invalid_elements_list_a_few_errors() -> None:
    r = client_for(max_queries=400).post("/search", json={"queries": list(range(300))})
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail) == 11 and "290 more errors" in detail[-1]["msg"]


@pytest.mark.parametrize("body", [b'{"queries": ["\\ud800 dog"]}', b'{"queries": ["ok", "a\\udfff"]}'])
def test_a_lone_surrogate_in_json_is_422(body: bytes) -> None:
    r = client_for().post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", "queries"]
    assert "\\ud800" in r.text or "\\udfff" in r.text  # shown escaped


def test_the_library_check_answers_4xx_with_the_position() -> None:
    client = client_for()
    r = client.post("/search", json={"queries": ["ok", "  \t "]})
    assert r.status_code == 422 and "queries[1] is empty" in r.json()["detail"]
    r = client.post("/search", json={"queries": ["ok"], "k": MAX_K + 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "k"]
    r = client.post("/search", json={"queries": ["ok"], "k": 2.5})
    assert r.status_code == 422
    r = client.post("/search", json={"queries": ["ok"], "beam": 0})
    assert r.status_code == 422


@pytest.mark.parametrize("body", [
    b'{"queries": ["\xff dog"]}',
    b'{"queries": ["caf\xc3"]}',
    '{"queries": ["dog"]}'.encode("utf-16"),
])
def test_a_body_that_is_not_utf8_is_400(body: bytes) -> None:
    r = client_for().post("/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["detail"]


@pytest.mark.parametrize("query", ["q=%ED%A0%80%20dog", "q=%FF", "q=ok&k=%C3"])
def test_a_query_string_that_is_not_utf8_is_400(query: str) -> None:
    r = client_for().get(f"/search?{query}")
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["detail"]


def test_bad_json_and_long_library_errors_are_short() -> None:
    r = client_for().post("/search", content=b'{"queries": [' + b'"x",' * 50_000,
                          headers={"content-type": "application/json"})
    assert r.status_code == 422 and len(r.text) < 2000
    failing = FakeSearcher(error=ConfigError("bad: " + "w" * 50_000))
    r = client_for(failing).post("/search", json={"queries": ["q1"]})
    assert r.status_code == 422 and len(r.json()["detail"]) <= MAX_DETAIL_CHARS + 3


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_queries"):
        ServeLimits(max_queries=0)
    with pytest.raises(ConfigError, match="chunk_work"):
        ServeLimits(chunk_work=True)
    limits = ServeLimits(chunk_work=100)
    assert limits.chunk_size(k=10, beam=None) == 10  # width max(10, k)
    assert limits.chunk_size(k=5, beam=50) == 2 and limits.chunk_size(k=1000, beam=1000) == 1


def test_a_batch_is_searched_in_chunks_in_order() -> None:
    fake = FakeSearcher()
    client = client_for(fake, chunk_work=30)  # k = 10 -> 3 queries per chunk
    queries = [f"q{i}" for i in range(10)]
    body = client.post("/search", json={"queries": queries, "k": 3}).json()
    assert [len(c) for c in fake.calls] == [3, 3, 3, 1]
    assert [r["query"] for r in body["results"]] == queries
    assert [r["hits"][0]["id"] for r in body["results"]] == [f"item{i % 5}" for i in range(10)]


def test_a_small_request_is_served_between_the_chunks_of_a_large_one() -> None:
    fake = FakeSearcher(delay=0.1)
    client = client_for(fake, chunk_work=10)  # k = beam = 10 -> one query per chunk
    big = [f"q{i}" for i in range(12)]
    answers: dict[str, Any] = {}

    def large() -> None:
        answers["large"] = client.post("/search", json={"queries": big})

    thread = threading.Thread(target=large)
    thread.start()
    assert fake.started.wait(10)
    t0 = time.perf_counter()
    small = client.get("/search", params={"q": "q99"})
    small_s = time.perf_counter() - t0
    thread.join(30)
    assert small.status_code == 200 and answers["large"].status_code == 200
    calls = fake.calls
    assert [q for call in calls for q in call if q != "q99"] == big  # in order, each once
    position = next(i for i, call in enumerate(calls) if call == ["q99"])
    before = sum(len(call) for call in calls[:position])
    assert before <= 4, calls  # after the chunk in progress (or so), not after all 12
    assert small_s < 12 * fake.delay, small_s  # it waited for a chunk or so, not the batch
    assert [r["query"] for r in answers["large"].json()["results"]] == big


def test_gcmr_serve_flags_set_the_limits(monkeypatch, tmp_path: Path) -> None:
    import gcmr.serve.app as app_module
    from gcmr.cli import build_parser, main

    args = build_parser().parse_args(["serve", "M"])
    assert (args.max_body_bytes, args.max_query_chars, args.max_queries) == \
        (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUERY_CHARS, DEFAULT_MAX_QUERIES)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(app_module, "serve", lambda model, **kw: seen.update(kw))
    assert main(["serve", str(tmp_path), "--max-body-bytes", "2048", "--max-query-chars", "64",
                 "--max-queries", "8", "--chunk-work", "100"]) == 0
    assert seen["limits"] == ServeLimits(max_body_bytes=2048, max_query_chars=64,
                                         max_queries=8, chunk_work=100)
    with pytest.raises(SystemExit):
        main(["serve", str(tmp_path), "--max-queries", "0"])
    assert json.dumps(seen["limits"].as_dict())  # what /health shows


@pytest.fixture(scope="module")
def real_model(tmp_path_factory) -> Path:
    """A tiny generative model whose corpus holds lone surrogates (tests/serve/tiny_models.py)."""
    from tests.serve.tiny_models import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("limits"))


def test_a_real_model_chunks_the_same_answers_and_refuses_surrogates(real_model: Path) -> None:
    from gcmr.serve import create_app

    queries = ["red 3", "the blue one 5", "gold item 7", "a photo of a red thing", "blue 1"]
    whole = TestClient(create_app(real_model))
    chunked = TestClient(create_app(real_model, limits=ServeLimits(chunk_work=20)))  # 2 a chunk
    a = whole.post("/search", json={"queries": queries, "k": 4}).json()["results"]
    b = chunked.post("/search", json={"queries": queries, "k": 4}).json()["results"]
    assert [[h["id"] for h in r["hits"]] for r in a] == [[h["id"] for h in r["hits"]] for r in b]
    r = chunked.post("/search", content=b'{"queries": ["red 3", "\\ud800 dog"]}',
                     headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = chunked.get("/search", params={"q": "\x00"})  # no tokens: the tokenizer's GcmrError
    assert r.status_code == 422 and "no tokens" in r.json()["detail"]
    assert chunked.get("/health").json()["limits"]["chunk_work"] == 20
