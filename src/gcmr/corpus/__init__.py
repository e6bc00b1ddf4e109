"""Corpus format v1 (read, validate, write), the synthetic benchmark world, dataset importers."""

from gcmr.corpus.format import (
    Corpus,
    CorpusMeta,
    CorpusWriter,
    Query,
    check_corpus_fingerprint,
    corpus_fingerprint,
    load_corpus,
    read_items,
    read_queries,
    summarize,
    write_corpus,
)

__all__ = [
    "Corpus",
    "CorpusMeta",
    "CorpusWriter",
    "Query",
    "check_corpus_fingerprint",
    "corpus_fingerprint",
    "load_corpus",
    "read_items",
    "read_queries",
    "summarize",
    "write_corpus",
]
