"""The server's item catalog keeps its reading of the training corpus across live updates."""

from __future__ import annotations

from pathlib import Path

from gcmr.serve.items import ItemCatalog


class _Searcher:
    def __init__(self, corpus: Path) -> None:
        self.corpus_path = corpus
        self.item_ids = [f"item{i:04d}" for i in range(40)]


def test_a_refreshed_catalog_reuses_the_corpus_it_read(tiny_corpus, monkeypatch) -> None:
    import gcmr.corpus

    searcher = _Searcher(tiny_corpus)
    old = ItemCatalog(searcher, lambda row: "")
    assert old.describe("item0003")["captions"][0].startswith("a photo of a")
    reads = []
    real = gcmr.corpus.read_items
    monkeypatch.setattr(gcmr.corpus, "read_items",
                        lambda *a, **k: reads.append(a) or real(*a, **k))
    new = ItemCatalog(searcher, lambda row: "").keep_corpus_of(old)
    assert new.describe("item0003") == old.describe("item0003") and reads == []
    # another searcher (another model) reads its own corpus
    other = ItemCatalog(_Searcher(tiny_corpus), lambda row: "").keep_corpus_of(old)
    other.describe("item0003")
    assert len(reads) == 1
