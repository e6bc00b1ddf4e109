"""What every searcher over one corpus shares: the corpus identity (path, fingerprint), the
item ids in row order, captions for display, and ``search`` (ids) on top of ``search_rows``
(rows). A subclass implements ``search_rows``.

It is also the one home of the search arguments' contract (:func:`check_search_args`, with
the bounds :data:`MAX_K` and :data:`MAX_BEAM`), which the library's searchers, the CLI and
the server all apply at their boundary, so a bad argument is a :class:`ConfigError` naming
it everywhere, never a TypeError, an IndexError or an unbounded allocation deep inside."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

# snippet and safe_text live in gcmr.errors (the tokenizer below this layer uses them too);
# imported here so callers keep quoting them from the search arguments' contract
from gcmr.errors import SNIPPET_CHARS, ConfigError, CorpusError, safe_text, snippet  # noqa: F401

MAX_K = 1000  # results per query: the [Q, k] outputs and the search's top-k stay bounded
MAX_BEAM = 1000  # beam width of a generative search: its work grows with it at every level
MAX_BATCH_SIZE = 1 << 16  # queries encoded together (search_rows' batch_size)


def check_int(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; a bool, a float (even 2.0), a string or None
    is a :class:`ConfigError` naming ``name`` and the bounds."""
    bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer {bounds}, got {snippet(value)} "
                          f"({type(value).__name__})") from None
    if number < low or (high is not None and number > high):
        raise ConfigError(f"{name} must be an integer {bounds}, got {number}")
    return int(number)


def check_query(index: int, query: Any, *, name: str = "queries") -> str:
    """One query: a non-empty str that can be encoded as UTF-8 (``name[index]`` in errors)."""
    where = f"{name}[{index}]"
    if isinstance(query, (bytes, bytearray)):
        raise ConfigError(f"{where} is {type(query).__name__}, expected str (decode it first): "
                          f"{snippet(query)}")
    if not isinstance(query, str):
        raise ConfigError(f"{where} must be a str, got {type(query).__name__}: "
                          f"{snippet(query)}")
    if not query.strip():
        raise ConfigError(f"{where} is empty")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = query[exc.start]
        raise ConfigError(f"{where} is not valid text: character {exc.start} is a lone "
                          f"surrogate {safe_text(repr(bad))} (undecodable bytes or a broken "
                          f"UTF-16 pair), which cannot be encoded as UTF-8: "
                          f"{snippet(query)}") from None
    return str(query)


def check_queries(queries: Any, *, name: str = "queries") -> list[str]:
    """``queries`` (one str, or a sequence of str: list, tuple, 1-D array) as a list of
    valid queries; anything else is a :class:`ConfigError` naming the argument and, for a
    bad element, its position. An empty sequence is allowed (an empty result)."""
    if isinstance(queries, str):
        return [check_query(0, queries, name=name)]
    if isinstance(queries, np.ndarray) and queries.ndim != 1:
        raise ConfigError(f"{name} must be a str or a 1-D sequence of str, got an array of "
                          f"shape {list(queries.shape)}")
    if (queries is None or isinstance(queries, (bytes, bytearray, Mapping, AbstractSet))
            or not isinstance(queries, Iterable)):
        raise ConfigError(f"{name} must be a str or a sequence of str, got "
                          f"{type(queries).__name__}: {snippet(queries)}")
    return [check_query(i, q, name=name) for i, q in enumerate(queries)]


def check_candidates(candidates: Any, num_items: int | None = None) -> None:
    """``candidates``: None (every item), or corpus rows: a non-empty 1-D sequence of
    integers, in ``[0, num_items)`` when ``num_items`` is given."""
    if candidates is None:
        return
    try:
        rows = np.asarray(candidates)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"candidates must be a 1-D sequence of item rows: {exc}") from None
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise ConfigError(f"candidates must be a 1-D sequence of integer item rows, got "
                          f"{rows.dtype} of shape {list(rows.shape)}")
    if rows.size == 0:
        raise ConfigError("candidates is empty: there is no item to rank (pass None for all)")
    if num_items is not None and (rows.min() < 0 or rows.max() >= num_items):
        raise ConfigError(f"candidates must be item rows in [0, {num_items}), got rows from "
                          f"{int(rows.min())} to {int(rows.max())}")


def check_search_args(queries: Any, *, k: Any, beam: Any = None, candidates: Any = None,
                      num_items: int | None = None, batch_size: Any = None) -> list[str]:
    """The contract of every public ``search`` / ``search_rows``, checked at the top of each:
    ``queries`` a str or a sequence of non-empty, UTF-8-encodable str; ``k`` an int in
    ``[1, MAX_K]``; ``beam`` None or an int in ``[1, MAX_BEAM]`` (a dense searcher then
    refuses any beam); ``candidates`` None or item rows (in ``[0, num_items)`` when given);
    ``batch_size`` (when given) an int in ``[1, MAX_BATCH_SIZE]``.

    Returns the queries as a list of str. Raises :class:`ConfigError` naming the argument (and
    the query's position), so callers never see a TypeError from deep inside the search.
    """
    check_int("k", k, high=MAX_K)
    if beam is not None:
        check_int("beam", beam, high=MAX_BEAM)
    if batch_size is not None:
        check_int("batch_size", batch_size, high=MAX_BATCH_SIZE)
    check_candidates(candidates, num_items)
    return check_queries(queries)


def read_item_ids(corpus_path: Path, num_items: int) -> list[str]:
    """Item ids in row order from ``items.jsonl`` (the embedding rows' names), validated."""
    from gcmr.corpus import read_items

    path = Path(corpus_path) / "items.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: missing; the model's corpus has moved (pass --corpus)")
    ids, _, _ = read_items(path, load_captions=False)
    if len(ids) != num_items:
        raise CorpusError(f"{path}: {len(ids)} items but the embeddings have {num_items} rows")
    return ids


def item_descriptions(corpus_path: Path):
    """A ``row -> text`` lookup of each item's first caption (or its source) for display.

    Reads ``items.jsonl`` once through the validated corpus reader; returns a function giving
    "" when the corpus is unavailable, and raises :class:`CorpusError` (file, line, field)
    when it is there but malformed.
    """
    from gcmr.corpus import read_items

    path = Path(corpus_path) / "items.jsonl"
    if not path.is_file():
        return lambda row: ""
    _, captions, sources = read_items(path)
    texts = [caps[0] if caps else str(src or "") for caps, src in zip(captions, sources)]
    return lambda row: texts[row] if 0 <= row < len(texts) else ""


def rows_to_ids(item_ids: list[str], rows: np.ndarray) -> np.ndarray:
    """Item ids (object array) of ``rows``, ``""`` where a row is -1 padding."""
    ids = np.asarray(list(item_ids) + [""], dtype=object)
    return ids[np.where(rows >= 0, rows, len(ids) - 1)]


class CorpusSearcher:
    """Base of the searchers that rank one corpus's items (see the module docstring)."""

    def __init__(self, *, corpus_path: str | Path, corpus_fingerprint: str,
                 item_ids: list[str] | None = None, num_items: int | None = None) -> None:
        """``item_ids`` in row order when the caller has them; else they are read from the
        corpus on first use (``num_items`` rows expected)."""
        self._corpus_path = Path(corpus_path)
        self._fingerprint = corpus_fingerprint
        self._item_ids = item_ids
        self._num_items = num_items

    @property
    def corpus_path(self) -> Path:
        return self._corpus_path

    @property
    def corpus_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def item_ids(self) -> list[str]:
        if self._item_ids is None:
            from gcmr.corpus import check_corpus_fingerprint

            check_corpus_fingerprint(self._corpus_path, self._fingerprint,
                                     artifact=getattr(self, "path", None))
            self._item_ids = read_item_ids(self._corpus_path, int(self._num_items or 0))
        return self._item_ids

    def item_descriptions(self):
        """``row -> first caption or source`` for display (empty when the corpus is gone)."""
        from gcmr.corpus import check_corpus_fingerprint

        check_corpus_fingerprint(self._corpus_path, self._fingerprint,
                                 artifact=getattr(self, "path", None))
        return item_descriptions(self._corpus_path)

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: np.ndarray | None = None, batch_size: int = 256
                    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def search(self, queries: str | Sequence[str], *, k: int = 10, beam: int | None = None,
               candidates: np.ndarray | None = None, **options: Any
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query: ``(scores [Q, k], item_ids object [Q, k])``, ``""``
        padding."""
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates)
        scores, rows = self.search_rows(queries, k=k, beam=beam, candidates=candidates,
                                        **options)
        return scores, rows_to_ids(self.item_ids, rows)
