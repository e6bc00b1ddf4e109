"""The server against its own OpenAPI schema (issue 12): schemathesis generates valid and
invalid requests for every operation of ``app.openapi()`` (positive and negative modes) and
checks each answer against the schema (documented status codes, content types, response
schemas); hypothesis adds hostile requests the schema does not describe (lone surrogates in
JSON escapes, invalid UTF-8, huge numbers and strings, wrong types). Both run in-process
through the ASGI app, on a fake searcher and on a real tiny model whose corpus holds lone
surrogates, and every answer must hold what the README promises: never a 5xx, always valid
UTF-8, a 4xx is JSON with a short ``detail`` that never echoes a long value of the request,
a 200 has the documented shape.

(schemathesis's pytest integration, ``schemathesis.pytest.from_fixture``, fails on pytest 9
(it reads ``request.node._nodeid``), so the tests draw from its per-operation hypothesis
strategies, ``APIOperation.as_strategy``, inside ordinary ``@given`` tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gcmr.errors import safe_text
from gcmr.search.base import MAX_BEAM, MAX_K
from gcmr.serve.app import MAX_DETAIL_CHARS, ServeLimits, build_app, create_app
from tests.serve.tiny_models import SurrogateSearcher, train_tiny_model

LIMITS = ServeLimits(max_body_bytes=64 << 10, max_query_chars=200, max_queries=16,
                     chunk_work=64)
MAX_ERROR_BODY = 4096  # an error answer stays this short, whatever was sent


def fuzz(max_examples: int) -> settings:
    """Bounded, reproducible runs (derandomized, no example database)."""
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def real_model(tmp_path_factory) -> Path:
    return train_tiny_model(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(params=["fake", "real"])
def served(request) -> tuple[Any, list[str]]:
    """(a fresh ASGI app, the ids its hits may show) for the fake searcher and the real
    model (fresh: a client that closes runs the app's shutdown, which stops its batcher)."""
    if request.param == "fake":
        searcher = SurrogateSearcher()
        app = build_app(searcher, name="fake", limits=LIMITS)
    else:
        from gcmr.search import load_searcher

        model = request.getfixturevalue("real_model")
        searcher = load_searcher(model, device="cpu")
        app = create_app(model, device="cpu", limits=LIMITS)
    return app, [safe_text(i) for i in searcher.item_ids]  # as the answers show them


def strings_in(value: Any) -> list[str]:
    """Every string inside a JSON-like value (keys too)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in strings_in(v)]
    return []


def check_answer(status: int, body: bytes, *, path: str, sent: list[str],
                 item_ids: list[str], content_type: str = "application/json") -> None:
    """What every answer of the server holds, whatever the request was."""
    assert status < 500, body[:500]
    if status == 200 and not content_type.startswith(("application/json", "text/")):
        return  # an item's image
    text = body.decode("utf-8")  # strict: never invalid UTF-8
    if status == 200 and not content_type.startswith("application/json"):
        assert path != "/" or "<html" in text
        return  # the page, /metrics
    answer = json.loads(text)
    if 400 <= status < 500:
        assert len(body) <= MAX_ERROR_BODY, (status, len(body), text[:300])
        assert set(answer) == {"detail"}
        details = answer["detail"]
        assert isinstance(details, (str, list)) and details
        assert all(len(s) <= MAX_DETAIL_CHARS + 3 for s in strings_in(details))
        for value in sent:  # a long value of the request is never echoed whole
            if len(value) > MAX_DETAIL_CHARS:
                assert value[:MAX_DETAIL_CHARS + 1] not in text
        return
    assert status == 200, (status, text[:300])
    if path == "/health":
        assert answer["status"] == "ok" and answer["limits"]["max_k"] == MAX_K
        return
    if path != "/search":
        return  # another operation (an item record): its response schema is checked above
    assert set(answer) == {"results", "k", "took_ms"}
    k = answer["k"]
    assert isinstance(k, int) and 1 <= k <= MAX_K and answer["took_ms"] >= 0
    assert answer["results"] and len(answer["results"]) <= LIMITS.max_queries
    for result in answer["results"]:
        if "like" in result:  # a query by example: the example's id, the text optional
            assert set(result) == {"query", "hits", "like"} and result["like"] in item_ids
        else:
            assert set(result) == {"query", "hits"} and isinstance(result["query"], str)
        if result["query"] is not None:
            assert result["query"].strip() and len(result["query"]) <= LIMITS.max_query_chars
        hits = result["hits"]
        assert len(hits) <= k
        assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
        for hit in hits:
            assert set(hit) == {"rank", "id", "score", "caption"}
            assert hit["id"] in item_ids and isinstance(hit["caption"], str)
            assert isinstance(hit["score"], (int, float))
        assert len({h["id"] for h in hits}) == len(hits)  # an item at most once


# ----------------------------------------------------------------------------- surrogates


def test_a_lone_surrogate_in_a_caption_or_id_is_served_escaped(real_model: Path,
                                                               capsys) -> None:
    """items.jsonl may hold "\\ud800" (valid JSON); the model trains on it (the tokenizer
    escapes it) and the server answers 200 with valid UTF-8 JSON, the surrogates escaped
    as the library's safe_text does, never a 500 or invalid UTF-8."""
    from gcmr.corpus import load_corpus

    corpus = load_corpus(real_model.parent / "corpus")
    assert corpus.captions[0][0] == "a photo of a red \ud800 thing number 0"
    assert corpus.ids[5] == "item\udfff0005"
    client = TestClient(create_app(real_model), raise_server_exceptions=False)
    for response in (client.get("/search", params={"q": "red 0", "k": 24}),
                     client.post("/search", json={"queries": ["red 0", "blue 5"], "k": 24})):
        assert response.status_code == 200, response.text[:300]
        text = response.content.decode("utf-8")  # strict: the body is valid UTF-8
        hits = [h for r in json.loads(text)["results"] for h in r["hits"]]
        by_id = {h["id"]: h for h in hits}
        assert "item\\udfff0005" in by_id  # escaped: a backslash, then "udfff"
        assert by_id["item0000"]["caption"] == "a photo of a red \\ud800 thing number 0"
        assert all(h["id"].encode("utf-8") and h["caption"].encode("utf-8") for h in hits)
    page = client.get("/")
    assert page.status_code == 200 and page.content.decode("utf-8")
    for item_id in ("item0000", "item\udfff0005"):  # an item's record shows its captions
        record = client.get(f"/items/{quote(item_id.encode('utf-8', 'surrogatepass'))}")
        assert record.status_code < 500, record.text[:300]
        record.content.decode("utf-8")
    from gcmr.cli import main

    capsys.readouterr()
    assert main(["search", str(real_model), "red 0", "-k", "24"]) == 0  # the table prints
    assert "\\ud800" in capsys.readouterr().out


# ----------------------------------------------------------------------------- schemathesis


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_against_the_openapi_schema(served, mode: str) -> None:
    schemathesis = pytest.importorskip("schemathesis")  # the test extra has it
    app, item_ids = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /health", "GET /search", "POST /search",
                                               "GET /"}
    strategy = st.one_of([op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
                          for op in operations])
    seen: dict[int, int] = {}

    @fuzz(60)
    @given(case=strategy)
    def run(case) -> None:
        response = case.call()
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        # ST checks: no 5xx, documented status codes, content types and response schemas;
        # (positive data a documented refusal answers 422 is fine: a blank query, or one
        # the tokenizer finds no token in, passes the schema's min_length)
        excluded = [schemathesis.checks.positive_data_acceptance]
        if response.status_code == 413:  # the body limit refuses before the schema is read
            excluded.append(schemathesis.checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded)
        sent = strings_in(case.body) + strings_in(case.query or {})
        check_answer(response.status_code, response.content, path=case.path, sent=sent,
                     item_ids=item_ids,
                     content_type=response.headers.get("content-type", [""])[0])

    run()
    if mode == "positive":
        assert seen.get(200, 0) > 0, seen
    else:
        assert any(400 <= s < 500 for s in seen), seen


# ----------------------------------------------------------------------------- hostile requests

HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
            max_size=3).map(lambda s: "dog " + s),  # lone surrogates
    st.sampled_from(["", "   ", "\x00", "\u200b", "\ufeff", "🐕" * 300]),
    st.integers(1, 4).map(lambda n: "x" * (LIMITS.max_query_chars * n + 1)),
    st.just("y" * 20_000),  # in a URL too: the HTTP client refuses URLs over 64 KB
)
HOSTILE_NUMBER = st.one_of(
    st.integers(-2, 3), st.integers(MAX_BEAM - 1, MAX_BEAM + 1), st.just(10**30),
    st.just(-(10**30)), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.none(), st.just("7"), st.just([3]),
)
HOSTILE_VALUE = st.one_of(HOSTILE_TEXT, HOSTILE_NUMBER, st.dictionaries(st.text(max_size=5),
                                                                        st.integers(),
                                                                        max_size=3))


@st.composite
def hostile_requests(draw) -> tuple[str, str, bytes | None, list[str]]:
    """(method, url, raw body or None, the strings sent): JSON bodies written by hand, so a
    lone surrogate goes out as its JSON escape, as a client in another language sends it."""
    kind = draw(st.sampled_from(["post", "post-raw", "get"]))
    if kind == "get":
        q = draw(st.one_of(HOSTILE_TEXT, st.just(None)))
        params = []
        if q is not None:
            params.append("q=" + quote(q.encode("utf-8", "surrogatepass")))
        for name in draw(st.lists(st.sampled_from(["k", "beam", "other"]), max_size=2)):
            value = draw(HOSTILE_NUMBER)
            shown = value if isinstance(value, str) else json.dumps(value)
            params.append(f"{name}={quote(shown)}")
        return "GET", "/search?" + "&".join(params), None, [q or ""]
    if kind == "post-raw":
        raw = draw(st.one_of(
            st.binary(max_size=200),
            st.just(b'{"queries": ["\xff dog"]}'),
            st.just(b'{"queries": ['),
            st.just(b'{"queries": ["' + b"z" * 70_000 + b'"]}'),
            st.just('{"queries": ["dog"]}'.encode("utf-16")),
        ))
        return "POST", "/search", raw, [raw.decode("utf-8", "replace")]
    queries = draw(st.one_of(st.lists(HOSTILE_TEXT, max_size=LIMITS.max_queries + 2),
                             HOSTILE_VALUE, st.just(["y" * 60_000])))
    body: dict[str, Any] = {"queries": queries}
    for name in draw(st.lists(st.sampled_from(["k", "beam", "extra"]), max_size=3,
                              unique=True)):
        body[name] = draw(HOSTILE_VALUE)
    raw = json.dumps(body).encode("ascii")  # ensure_ascii: surrogates as \\udXXX escapes
    return "POST", "/search", raw, strings_in(body)


def test_hostile_requests_never_break_the_server(served) -> None:
    app, item_ids = served

    @fuzz(120)
    @given(request=hostile_requests())
    def run(request) -> None:
        method, url, raw, sent = request
        headers = {"content-type": "application/json"} if raw is not None else {}
        response = client.request(method, url, content=raw, headers=headers)
        check_answer(response.status_code, response.content, path="/search", sent=sent,
                     item_ids=item_ids)

    with TestClient(app, raise_server_exceptions=False) as client:
        run()
