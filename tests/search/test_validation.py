"""The search arguments' contract (``gcmr.search.base.check_search_args``), checked at the top
of every searcher's public ``search`` / ``search_rows``: bad queries, k, beam or candidates
are a :class:`ConfigError` naming the argument (and the query's position), never a
TypeError, an IndexError or an unbounded allocation; and a hypothesis fuzzer that throws
random arguments at tiny real searchers and accepts only a GcmrError or a valid result."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gcmr.corpus import load_corpus
from gcmr.errors import ConfigError, GcmrError
from gcmr.search.base import (
    MAX_BEAM,
    MAX_K,
    check_search_args,
    snippet,
)
from gcmr.search.caption_matcher import CaptionMatcher
from tests.conftest import BagOfWords

LEGACY_CORPUS = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1" / "corpus"
SMALL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1}


@pytest.fixture(scope="module")
def searchers(tmp_path_factory) -> dict[str, Any]:
    """One of each searcher over the committed 24-item corpus: a hybrid generative Retriever
    (query head; also searched with rerank="none"), a dense tower and the caption matcher."""
    from gcmr.ids import IndexConfig, build_index
    from gcmr.search import load_searcher
    from gcmr.train import TrainConfig, train
    from gcmr.train.dense import train_dense

    root = tmp_path_factory.mktemp("validation")
    shutil.copytree(LEGACY_CORPUS, root / "corpus")
    corpus = load_corpus(root / "corpus")
    index = build_index(corpus, IndexConfig(num_clusters=3, codebook_size=4, latent_dim=4,
                                            hidden_dims=[8], epochs=1, max_steps=4,
                                            batch_size=8), show_progress=False)
    index_dir = index.save(root / "index")
    budget = {"epochs": 1, "batch_size": 8, "vocab_size": 60, "val_split": None}
    train(index_dir, root / "model", config=TrainConfig(**budget, dense_weight=1.0),
          model_options={**SMALL, "decoder_layers": 1}, show_progress=False)
    train_dense(root / "corpus", root / "dense", config=TrainConfig(**budget),
                tower_options=SMALL, show_progress=False)
    vocab = sorted({w for caps in corpus.captions for c in caps for w in c.lower().split()})
    return {"generative": load_searcher(root / "model"),
            "dense": load_searcher(root / "dense"),
            "captions": CaptionMatcher(corpus, BagOfWords(vocab))}


KINDS = ["generative", "dense", "captions"]


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"queries": None}, r"queries must be a str or a sequence of str, got NoneType"),
    ({"queries": 3}, r"queries must be a str or a sequence of str, got int"),
    ({"queries": b"dog"}, r"queries must be a str .* got bytes"),
    ({"queries": {"dog"}}, r"got set"),
    ({"queries": {"q": "dog"}}, r"got dict"),
    ({"queries": np.array([["a", "b"]])}, r"1-D sequence of str, got an array of shape \[1, 2\]"),
    ({"queries": ["dog", None]}, r"queries\[1\] must be a str, got NoneType"),
    ({"queries": ["dog", "cat", 7]}, r"queries\[2\] must be a str, got int"),
    ({"queries": [b"dog"]}, r"queries\[0\] is bytes, expected str \(decode it first\)"),
    ({"queries": ["dog", "  \t"]}, r"queries\[1\] is empty"),
    ({"queries": ""}, r"queries\[0\] is empty"),
    ({"queries": ["ok", "\ud800 dog"]}, r"queries\[1\] is not valid text: character 0 is a lone"),
    ({"queries": ["a\udcff"]}, r"queries\[0\] .* character 1 .* cannot be encoded as UTF-8"),
    ({"k": 0}, r"k must be an integer in \[1, 1000\], got 0"),
    ({"k": -5}, r"k must be an integer in \[1, 1000\], got -5"),
    ({"k": 2.5}, r"k must be an integer in \[1, 1000\], got 2.5 \(float\)"),
    ({"k": 2.0}, r"k must be an integer .* \(float\)"),
    ({"k": True}, r"k must be an integer .* got True \(bool\)"),
    ({"k": None}, r"k must be an integer .* got None"),
    ({"k": "10"}, r"k must be an integer .* \(str\)"),
    ({"k": 10**9}, r"k must be an integer in \[1, 1000\], got 1000000000"),
    ({"beam": 0}, r"beam must be an integer in \[1, 1000\], got 0"),
    ({"beam": MAX_BEAM + 1}, r"beam must be an integer in \[1, 1000\], got 1001"),
    ({"beam": False}, r"beam must be an integer .* \(bool\)"),
    ({"beam": 1.5}, r"beam .* \(float\)"),
    ({"candidates": [0.5, 1.5]}, r"candidates must be a 1-D sequence of integer item rows"),
    ({"candidates": [[1, 2]]}, r"candidates must be a 1-D sequence"),
    ({"candidates": [0, 99]}, r"candidates must be item rows in \[0, 24\), got rows from 0 to 99"),
    ({"candidates": [-1]}, r"candidates must be item rows in \[0, 24\)"),
    ({"candidates": []}, r"candidates is empty"),
    ({"batch_size": 0}, r"batch_size must be an integer in \[1, "),
])
def test_bad_arguments_are_config_errors_naming_them(kwargs: dict, message: str) -> None:
    args = {"queries": ["dog"], "k": 10, "beam": None, "candidates": None, "num_items": 24,
            **kwargs}
    with pytest.raises(ConfigError, match=message):
        check_search_args(args.pop("queries"), **args)


def test_good_arguments_pass_and_come_back_as_a_list() -> None:
    assert MAX_K == 1000 and MAX_BEAM == 1000
    assert check_search_args("dog", k=1) == ["dog"]
    assert check_search_args(("a", "b"), k=MAX_K, beam=MAX_BEAM) == ["a", "b"]
    assert check_search_args(np.array(["a", "b"]), k=np.int64(3), beam=np.int32(5)) == ["a", "b"]
    assert check_search_args([], k=3) == []  # an empty batch: an empty result
    assert check_search_args(["\x00\x01 dog", "🐶", "café"], k=1) == ["\x00\x01 dog", "🐶",
                                                                      "café"]
    assert check_search_args(["a"], k=1, candidates=np.array([0, 23]), num_items=24) == ["a"]


def test_messages_never_echo_a_whole_value() -> None:
    huge = "x" * 1_000_000
    with pytest.raises(ConfigError) as info:
        check_search_args([huge, "\ud800" + huge], k=1)
    assert len(str(info.value)) < 400 and "1,000,001 characters" in str(info.value)
    with pytest.raises(ConfigError) as info:
        check_search_args([str(i) for i in range(10_000)] + [None], k=1)
    assert "queries[10000]" in str(info.value) and len(str(info.value)) < 200
    with pytest.raises(ConfigError) as info:
        check_search_args(list(range(10_000)), k=1)
    assert len(str(info.value)) < 200
    shown = snippet(["q" * 500] * 10_000)
    assert len(shown) < 150 and "10,000 items" in shown
    shown = snippet("\ud800" * 300)
    shown.encode("utf-8")  # printable and JSON-safe: surrogates are escaped
    assert "300 characters" in shown


# ----------------------------------------------------------------------------- every searcher


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["search", "search_rows"])
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"queries": None}, "queries must be a str or a sequence of str"),
    ({"queries": ["red 3", None]}, r"queries\[1\] must be a str"),
    ({"queries": ["red 3", "\ud800 dog"]}, r"queries\[1\] is not valid text"),
    ({"queries": ["   "]}, r"queries\[0\] is empty"),
    ({"k": 2.5}, r"k must be an integer in \[1, 1000\]"),
    ({"k": True}, r"k must be an integer"),
    ({"k": 0}, r"k must be an integer in \[1, 1000\]"),
    ({"k": 1_000_000_000}, r"k must be an integer in \[1, 1000\], got 1000000000"),
    ({"beam": 0}, r"beam must be an integer in \[1, 1000\], got 0"),
    ({"beam": 10**6}, r"beam must be an integer in \[1, 1000\]"),
    ({"candidates": [0, 10_000]}, r"candidates must be item rows in \[0, 24\)"),
])
def test_every_searcher_refuses_bad_arguments_at_the_top(searchers, kind: str, method: str,
                                                         kwargs: dict, message: str) -> None:
    args = {"queries": ["red 3"], "k": 3, **kwargs}
    with pytest.raises(ConfigError, match=message):
        getattr(searchers[kind], method)(args.pop("queries"), **args)


@pytest.mark.parametrize("kind", KINDS)
def test_every_searcher_takes_valid_edge_arguments(searchers, kind: str) -> None:
    searcher = searchers[kind]
    beam = 1 if kind == "generative" else None
    scores, ids = searcher.search("red 3", k=1, beam=beam)  # one str, k = beam = 1
    assert scores.shape == ids.shape == (1, 1) and ids[0, 0].startswith("item")
    scores, rows = searcher.search_rows(["red 3", "blue 1"], k=MAX_K)  # k beyond the items
    assert scores.shape == rows.shape == (2, MAX_K)
    assert (rows[:, :24] >= 0).all() and (rows[:, 24:] == -1).all()
    scores, rows = searcher.search_rows([], k=5)
    assert scores.shape == rows.shape == (0, 5)
    scores, rows = searcher.search_rows(("red 3",), k=np.int64(2), candidates=[1, 2, 3])
    assert set(rows.ravel().tolist()) <= {1, 2, 3}


def test_generative_search_takes_the_widest_beam_and_pure_generation(searchers) -> None:
    retriever = searchers["generative"]
    _, rows = retriever.search_rows(["red 3"], k=3, beam=MAX_BEAM)
    assert (rows >= 0).all()
    _, rows = retriever.search_rows(["red 3"], k=3, beam=2, rerank="none")
    assert (rows >= 0).all()
    with pytest.raises(ConfigError, match="beam must be an integer"):
        retriever.search(["red 3"], k=3, beam=0, rerank="none")


@pytest.mark.parametrize("kind", ["dense", "captions"])
def test_dense_searchers_refuse_a_valid_beam_as_before(searchers, kind: str) -> None:
    with pytest.raises(ConfigError, match="no beam"):
        searchers[kind].search_rows(["red 3"], k=3, beam=5)


# ----------------------------------------------------------------------------- the fuzzer

WORDS = ["red", "blue", "gold", "green", "thing", "number", "3", "photo", "a", "of"]
any_char = st.characters(exclude_categories=())  # surrogates, controls, unassigned: all
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
texts = st.one_of(
    words,
    st.text(alphabet=any_char, max_size=12),
    st.text(alphabet=st.sampled_from(" \t\n\r\x00\x0b\x1f\x7f\u200b\ufeff\u2028\ud800\udcff"),
            max_size=4),
)
elements = st.one_of(texts, texts, st.none(), st.integers(), st.floats(), st.binary(max_size=4))
weird_queries = st.one_of(st.lists(elements, max_size=4), st.none(), st.integers(),
                          st.binary(max_size=6), st.dictionaries(words, words, max_size=2))
queries_strategy = st.one_of(words, st.lists(words, max_size=3), texts, st.lists(texts, max_size=4),
                             st.lists(texts, max_size=3).map(tuple), weird_queries)
weird_numbers = st.one_of(
    st.integers(-3, 0), st.sampled_from([MAX_K, MAX_K + 1, 10**9, 2**63, -2**63]),
    st.booleans(), st.floats(), st.none(), st.just("5"), st.integers(1, 30).map(np.int64))
ks = st.one_of(st.integers(1, 30), st.integers(1, 30), weird_numbers.filter(lambda v: v is not None))
beams = st.one_of(st.none(), st.integers(1, 30), weird_numbers)
candidates = st.one_of(st.none(), st.none(), st.lists(st.integers(0, 23), min_size=1, max_size=5),
                       st.lists(st.integers(-2, 30), max_size=5),
                       st.lists(st.floats(0, 5), min_size=1, max_size=2))


def _check_result(searcher: Any, method: str, queries: Any, k: Any, out: Any) -> None:
    """A search that did not raise returned the documented shapes and values."""
    scores, second = out
    expected = 1 if isinstance(queries, str) else len(queries)
    assert scores.shape == second.shape == (expected, int(k)) and scores.dtype == np.float32
    if method == "search_rows":
        assert second.dtype == np.int64 and ((second >= -1) & (second < 24)).all()
        assert (np.isfinite(scores) == (second >= 0)).all()
    else:
        assert second.dtype == object and all(i == "" or i in searcher.item_ids
                                               for i in second.ravel())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(queries=queries_strategy, k=ks, beam=beams, candidates=candidates,
       method=st.sampled_from(["search", "search_rows"]))
def test_fuzzed_arguments_give_a_gcmr_error_or_a_valid_result(searchers, kind: str,
                                                              queries: Any, k: Any, beam: Any,
                                                              candidates: Any,
                                                              method: str) -> None:
    searcher = searchers[kind]
    try:
        out = getattr(searcher, method)(queries, k=k, beam=beam, candidates=candidates)
    except GcmrError as exc:
        event(f"refused: {type(exc).__name__}")
        message = str(exc)
        assert message and len(message) < 2000
        message.encode("utf-8")  # printable: no raw surrogate in a message
        return
    event("searched")
    _check_result(searcher, method, queries, k, out)
