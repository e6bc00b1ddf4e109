"""Live add and delete (gcmr.search.updates): identifiers from the fitted scheme, the trie and
the hybrid rerank extended at once, deletions never returned, errors that name the id,
atomic and versioned model directories, the unique level grown when counters overflow, and
the short fine-tune (gcmr.train.finetune)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gcmr.errors import ArtifactError, ConfigError
from gcmr.search.retriever import Retriever
from gcmr.search.updates import NewItems, UpdateError, add_items, delete_items

BASE, TOTAL = 40, 48  # the live_world fixture (tests/search/conftest.py)


def manifest(model: Path) -> dict:
    return json.loads((model / "manifest.json").read_text())


def all_results(r: Retriever, texts: list[str], rerank: str) -> np.ndarray:
    """Ids of an exhaustive search (beam and k as large as the collection)."""
    return r.search(texts, k=TOTAL, beam=TOTAL, rerank=rerank)[1]


def test_added_items_are_found_by_their_captions_at_once(live_world, model_copy) -> None:
    full = live_world["full"]
    r = Retriever.load(model_copy, device="cpu")
    result = r.add_items(live_world["new"])
    assert result.op == "add" and result.version == 1 and result.saved
    assert result.rows == list(range(BASE, TOTAL)) and r.index.num_items == TOTAL
    new_ids = set(full.ids[BASE:])
    for rerank in ("none", "hybrid"):
        scores, ids = r.search([full.captions[i][0] for i in range(BASE, TOTAL)], k=TOTAL,
                               beam=TOTAL, rerank=rerank)
        assert new_ids <= set(ids.ravel())  # in the trie and among the hybrid candidates
        assert np.isfinite(scores).all()  # every candidate scored, new items' vectors too
    # identifiers come from the fitted scheme: the index's encode of their embeddings
    semantic = r.index.encode(np.asarray(full.embeddings[BASE:]))
    np.testing.assert_array_equal(r.index.codes[BASE:, :-1], semantic)
    assert len({tuple(c) for c in r.index.codes}) == TOTAL  # still unique
    # the saved directory gives the same state and the same answers
    again = Retriever.load(model_copy, device="cpu")
    np.testing.assert_array_equal(again.index.codes, r.index.codes)
    assert again.item_ids == r.item_ids and len(again.additions) == TOTAL - BASE
    q = [full.captions[44][0]]
    assert (again.search(q, k=5)[1] == r.search(q, k=5)[1]).all()
    assert again.item_descriptions()(44) == full.captions[44][0]


def test_deleted_items_are_never_returned(live_world, model_copy) -> None:
    full = live_world["full"]
    add_items(model_copy, live_world["new"])
    gone = ["item0003", "item0044"]
    result = delete_items(model_copy, gone)
    assert result.op == "delete" and result.version == 2 and result.rows == [3, 44]
    r = Retriever.load(model_copy, device="cpu")
    assert r.index.num_live == TOTAL - 2 and list(r.index.deleted) == [3, 44]
    texts = [c for i in (3, 44) for c in full.captions[i]] + ["red 3", "gold item 44"]
    for rerank in ("none", "hybrid"):
        ids = all_results(r, texts, rerank)
        assert not set(gone) & set(ids.ravel())
        assert (ids != "").sum(axis=1).tolist() == [TOTAL - 2] * len(texts)
        _, default = r.search(texts, k=10, rerank=rerank)
        assert not set(gone) & set(default.ravel())
    assert not {3, 44} & set(r._expander().order.tolist())
    _, like = r.search(like=["item0002", "item0045"], k=TOTAL)
    assert not set(gone) & set(like.ravel())
    _, restricted = r.search(texts[:1], k=3, candidates=np.array([3, 4, 5, 44]))
    assert not set(gone) & set(restricted.ravel())
    with pytest.raises(UpdateError, match="unknown item id 'item0044'"):
        r.delete_items("item0044")  # already gone
    # ids are not reused: a deleted id cannot come back (its row keeps it)
    with pytest.raises(UpdateError, match="'item0044' was deleted"):
        r.add_items(NewItems(["item0044"], [full.captions[44]],
                             np.asarray(full.embeddings[44:45])))


def test_errors_name_the_id_and_change_nothing(live_world, model_copy, tmp_path) -> None:
    full = live_world["full"]
    emb = np.asarray(full.embeddings[BASE:BASE + 2])
    r = Retriever.load(model_copy, device="cpu")
    cases = [
        (NewItems(["item0001", "fresh"], [["a"], ["b"]], emb), "id 'item0001' already exists"),
        (NewItems(["x", "x"], [["a"], ["b"]], emb), "duplicate id 'x'"),
        (NewItems(["x", "y"], [["a"], ["b"]], emb[:, :8]),
         "dimension 8, the model's items have 16"),
        (NewItems(["x", "y"], [["a"], ["b"]], np.where(np.eye(2, 16) > 0, np.nan, emb)),
         "embedding of 'x' .row 0. contains NaN"),
        (NewItems([], [], emb[:0]), "no items to add"),
    ]
    for items, message in cases:
        with pytest.raises(UpdateError, match=message):
            r.add_items(items)
    with pytest.raises(UpdateError, match="unknown item id 'nope'"):
        delete_items(model_copy, ["item0001", "nope"])
    with pytest.raises(UpdateError, match="no items to retrieve"):
        r.delete_items(list(r.item_ids))
    assert "updates" not in manifest(model_copy) and r.index.num_items == BASE
    assert r.index.num_live == BASE
    with pytest.raises(UpdateError, match="no such corpus directory or items JSONL"):
        NewItems.read(tmp_path / "missing")


def test_jsonl_and_records_sources(live_world, model_copy, tmp_path) -> None:
    full = live_world["full"]
    lines = [json.dumps({"id": full.ids[i], "captions": full.captions[i]})
             for i in range(BASE, BASE + 3)]
    (tmp_path / "new.jsonl").write_text("\n".join(lines) + "\n")
    np.save(tmp_path / "new.npy", np.asarray(full.embeddings[BASE:BASE + 3]))
    result = add_items(model_copy, tmp_path / "new.jsonl")
    assert result.ids == full.ids[BASE:BASE + 3]
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(UpdateError, match=r"expected \[1, D\]"):
        NewItems.read(tmp_path / "bad.jsonl", embeddings=tmp_path / "new.npy")
    items = NewItems.from_records([{"id": "req1", "captions": ["a red thing"],
                                    "embedding": np.asarray(full.embeddings[45]).tolist()}])
    assert items.embeddings.shape == (1, 16)
    with pytest.raises(UpdateError, match="request item 0 .'req1'.: field 'embedding'"):
        NewItems.from_records([{"id": "req1", "captions": [], "embedding": "x"}])


def test_a_failure_mid_add_leaves_the_old_model_loadable(live_world, model_copy,
                                                         monkeypatch) -> None:
    from gcmr.model import io

    before = sorted(p.name for p in model_copy.parent.iterdir())
    r = Retriever.load(model_copy, device="cpu")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_model_manifest", broken)  # after every file is written
    with pytest.raises(OSError, match="disk full"):
        r.add_items(live_world["new"])
    monkeypatch.undo()
    assert r.index.num_items == BASE and len(r.additions) == 0  # in memory: unchanged too
    old = Retriever.load(model_copy, device="cpu")
    assert old.index.num_items == BASE and "updates" not in old.manifest
    leftovers = sorted(p.name for p in model_copy.parent.iterdir())
    assert [n for n in leftovers if n.startswith(".model.tmp")] == []
    assert set(leftovers) - set(before) <= {".model.update.lock"}
    assert r.add_items(live_world["new"]).version == 1  # and the retry succeeds


def test_manifest_versions_log_and_checksums(live_world, model_copy) -> None:
    add_items(model_copy, live_world["new"])
    delete_items(model_copy, ["item0041"])
    info = manifest(model_copy)["updates"]
    assert info["version"] == 2 and [e["op"] for e in info["log"]] == ["add", "delete"]
    assert info["log"][0]["count"] == TOTAL - BASE and info["log"][1]["ids"] == ["item0041"]
    assert info["base_index"]["path"] == str((live_world["root"] / "index").resolve())
    m = manifest(model_copy)
    assert m["index"]["num_items"] == TOTAL and m["index"]["num_live"] == TOTAL - 1
    assert {"additions/items.jsonl", "additions/embeddings.npy"} <= set(m["sha256"])
    # the original corpus and index are untouched; a stale retriever cannot write over
    stale = Retriever.load(live_world["model"], device="cpu")
    assert stale.index.num_items == BASE and "updates" not in stale.manifest
    stale.path = model_copy
    with pytest.raises(ArtifactError, match="changed since it was loaded"):
        stale.delete_items("item0001")
    items = model_copy / "additions" / "items.jsonl"
    items.write_text(items.read_text().replace("item0042", "item9999"))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Retriever.load(model_copy, device="cpu")


def test_counters_continue_and_the_unique_level_grows(live_world, model_copy) -> None:
    full = live_world["full"]
    r = Retriever.load(model_copy, device="cpu")
    index = r.index
    # three copies of item 5's embedding: the same semantic code, the next free counters
    emb = np.repeat(np.asarray(full.embeddings[5:6]), 3, axis=0)
    same = index.codes[:, :-1] == index.codes[5, :-1]
    top = int(index.codes[same.all(axis=1), -1].max())
    np.testing.assert_array_equal(index.next_counters(index.encode(emb)),
                                  [top + 1, top + 2, top + 3])
    size = index.level_sizes[-1]
    weights_before = r.model.output_bias.detach().clone()
    result = r.add_items(NewItems(["c1", "c2", "c3"], [["x one"], ["x two"], ["x three"]], emb))
    assert result.grown and r.index.level_sizes[-1] == max(size, top + 4)
    assert r.model.config.level_sizes == r.index.level_sizes
    grown = r.model.output_bias.detach()
    np.testing.assert_array_equal(grown[:len(weights_before)], weights_before)
    assert (grown[len(weights_before):] == weights_before[-1]).all()
    _, ids = r.search(["x one"], k=TOTAL + 3, beam=TOTAL + 3, rerank="none")
    assert {"c1", "c2", "c3"} <= set(ids.ravel())
    again = Retriever.load(model_copy, device="cpu")
    assert again.model.config.level_sizes == r.index.level_sizes
    assert manifest(model_copy)["model_config"]["level_sizes"] == r.index.level_sizes
    # a deleted row's counter is not reused
    r.delete_items("c3")
    assert r.index.next_counters(r.index.encode(emb[:1]))[0] == top + 4


def test_in_memory_update_without_save(live_world, model_copy) -> None:
    r = Retriever.load(model_copy, device="cpu")
    result = r.add_items(live_world["new"], save=False)
    assert not result.saved and r.index.num_items == TOTAL
    assert "updates" not in manifest(model_copy)
    assert "item0045" in set(all_results(r, ["blue 45"], "hybrid").ravel())


def test_finetune_on_new_items_is_a_new_version(live_world, model_copy) -> None:
    from gcmr.train.finetune import FinetuneConfig, finetune_items

    r = Retriever.load(model_copy, device="cpu")
    r.add_items(live_world["new"])
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    result = finetune_items(r, list(live_world["full"].ids[BASE:]),
                            FinetuneConfig(steps=3, batch_size=8))
    assert result.op == "finetune" and result.version == 2
    assert result.details["steps"] == 3 and result.details["replayed_pairs_per_epoch"] == 16
    changed = [k for k, v in r.model.state_dict().items() if not (v == before[k]).all()]
    assert changed
    again = Retriever.load(model_copy, device="cpu")
    for k, v in again.model.state_dict().items():
        assert (v == r.model.state_dict()[k]).all()
    with pytest.raises(ConfigError, match="needs a budget"):
        finetune_items(r, ["item0041"], FinetuneConfig())
    with pytest.raises(ConfigError, match="unknown item ids"):
        finetune_items(r, ["nope"], FinetuneConfig(steps=1))


def test_descriptions_read_the_corpus_once_across_updates(live_world, model_copy,
                                                          monkeypatch) -> None:
    import gcmr.corpus

    full = live_world["full"]
    r = Retriever.load(model_copy, device="cpu")
    first = r.item_descriptions()
    reads = []
    real = gcmr.corpus.read_items
    monkeypatch.setattr(gcmr.corpus, "read_items",
                        lambda *a, **k: reads.append(a) or real(*a, **k))
    emb = np.asarray(full.embeddings[BASE:BASE + 1])
    r.add_items(NewItems(["d1"], [["a new caption"]], emb))
    after = r.item_descriptions()
    assert reads == []  # items.jsonl is not read again
    assert after(r.index.num_items - 1) == "a new caption"
    assert after(0) == first(0) and after(0)
