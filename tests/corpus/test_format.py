"""Corpus format v1: reading, writing and every bad-input case the validator must name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gcmr.cli import main
from gcmr.corpus import CorpusWriter, Query, load_corpus, read_queries, summarize
from gcmr.errors import CorpusError


def _rewrite_items(corpus: Path, edit) -> None:
    lines = (corpus / "items.jsonl").read_text().splitlines()
    lines = edit(lines)
    (corpus / "items.jsonl").write_text("\n".join(lines) + "\n")


def _problems(corpus: Path) -> str:
    with pytest.raises(CorpusError) as info:
        load_corpus(corpus)
    return str(info.value)


def test_round_trip(tiny_corpus: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    assert len(corpus) == 40 and corpus.dim == 16
    assert isinstance(corpus.embeddings, np.memmap)
    assert corpus.ids[3] == "item0003"
    assert corpus.captions[3][0].startswith("a photo of")
    assert corpus.splits == ["test", "train"]
    assert corpus.split("train")[0] == Query("the red one 0", ("item0000",))
    assert [r.tolist() for r in corpus.relevant_rows("test")[:2]] == [[1], [3]]
    summary = summarize(corpus)
    assert summary["splits"] == {"test": 20, "train": 20}
    assert summary["captions_per_item"]["mean"] == 2.0
    # the fingerprint depends on content, not on the path
    again = load_corpus(tiny_corpus)
    assert again.fingerprint == corpus.fingerprint


def test_fingerprint_changes_with_embeddings(corpus_factory) -> None:
    a = load_corpus(corpus_factory("a", seed=0))
    b = load_corpus(corpus_factory("b", seed=1))
    assert a.fingerprint != b.fingerprint


def test_malformed_json_line(tiny_corpus: Path) -> None:
    _rewrite_items(tiny_corpus, lambda ls: ls[:4] + ['{"id": "x", '] + ls[5:])
    msg = _problems(tiny_corpus)
    assert "items.jsonl line 5: malformed JSON" in msg


def test_missing_id(tiny_corpus: Path) -> None:
    _rewrite_items(tiny_corpus, lambda ls: ls[:2] + ['{"captions": ["x"]}'] + ls[3:])
    assert "items.jsonl line 3: missing field 'id'" in _problems(tiny_corpus)


def test_duplicate_ids(tiny_corpus: Path) -> None:
    def dup(lines):
        obj = json.loads(lines[7])
        obj["id"] = "item0002"
        lines[7] = json.dumps(obj)
        return lines

    _rewrite_items(tiny_corpus, dup)
    msg = _problems(tiny_corpus)
    assert "line 8: field 'id': duplicate id 'item0002' (first on line 3)" in msg


def test_row_count_mismatch(tiny_corpus: Path) -> None:
    emb = np.load(tiny_corpus / "embeddings.npy")
    np.save(tiny_corpus / "embeddings.npy", emb[:-3])
    msg = _problems(tiny_corpus)
    assert "embeddings.npy: has 37 rows but there are 40 items" in msg


def test_nan_rows_named(tiny_corpus: Path) -> None:
    emb = np.load(tiny_corpus / "embeddings.npy")
    emb[5, 2] = np.nan
    emb[9, 0] = np.inf
    np.save(tiny_corpus / "embeddings.npy", emb)
    msg = _problems(tiny_corpus)
    assert "row 5 (items.jsonl line 6, id 'item0005'): contains NaN or Inf" in msg
    assert "row 9 (items.jsonl line 10, id 'item0009')" in msg


def test_wrong_dtype_and_rank(tiny_corpus: Path) -> None:
    emb = np.load(tiny_corpus / "embeddings.npy")
    np.save(tiny_corpus / "embeddings.npy", emb.astype(np.int32))
    assert "dtype int32 is not supported" in _problems(tiny_corpus)
    np.save(tiny_corpus / "embeddings.npy", emb.reshape(-1))
    assert "expected a rank-2 array" in _problems(tiny_corpus)
    (tiny_corpus / "embeddings.npy").write_bytes(b"not numpy")
    assert "not a readable .npy array" in _problems(tiny_corpus)


def test_unknown_relevant_and_empty_text(tiny_corpus: Path) -> None:
    path = tiny_corpus / "queries" / "test.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps({"text": "a dog", "relevant": ["nope"]})
    lines[2] = json.dumps({"text": "   ", "relevant": ["item0001"]})
    lines[3] = json.dumps({"text": "x", "relevant": []})
    path.write_text("\n".join(lines) + "\n")
    msg = _problems(tiny_corpus)
    assert "test.jsonl line 2: field 'relevant' names item ids not in the corpus: ['nope']" in msg
    assert "test.jsonl line 3: field 'text' is empty" in msg
    assert "test.jsonl line 4: field 'relevant' must be a non-empty list" in msg


def test_meta_disagrees_with_files(tiny_corpus: Path) -> None:
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    meta["embedding_dim"] = 32
    meta["num_items"] = 41
    (tiny_corpus / "corpus.json").write_text(json.dumps(meta))
    msg = _problems(tiny_corpus)
    assert "has dimension 16 but corpus.json says embedding_dim = 32" in msg
    assert "field 'num_items' is 41 but items.jsonl has 40 items" in msg


def test_meta_format_fields(tiny_corpus: Path) -> None:
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    meta.update(format="other", version=2, modality="smell")
    del meta["name"]
    (tiny_corpus / "corpus.json").write_text(json.dumps(meta))
    msg = _problems(tiny_corpus)
    assert "field 'format' must be 'gcmr-corpus'" in msg
    assert "field 'version' must be 1" in msg
    assert "field 'modality' must be one of" in msg
    assert "missing field 'name'" in msg


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    msg = _problems(tmp_path / "c")
    assert "corpus.json: missing file" in msg and "items.jsonl: missing file" in msg
    with pytest.raises(CorpusError, match="not a directory"):
        load_corpus(tmp_path / "nowhere")


def test_extra_fields_ignored(tiny_corpus: Path) -> None:
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    meta["license"] = "cc-by"
    (tiny_corpus / "corpus.json").write_text(json.dumps(meta))
    _rewrite_items(tiny_corpus, lambda ls: [ls[0][:-1] + ', "scene": {"a": 1}}'] + ls[1:])
    corpus = load_corpus(tiny_corpus)
    assert corpus.meta.extra == {"license": "cc-by"}


def test_oracle_validated(tiny_corpus: Path) -> None:
    (tiny_corpus / "oracle.json").write_text(json.dumps({"test": {"R@1": 1.5}}))
    assert "field 'test.R@1' must be a fraction in [0, 1]" in _problems(tiny_corpus)
    (tiny_corpus / "oracle.json").write_text(json.dumps({"test": {"R@1": 0.5}}))
    assert load_corpus(tiny_corpus).oracle == {"test": {"R@1": 0.5}}


def test_float16_and_chunked_writer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with CorpusWriter(tmp_path / "c", name="c", modality="audio", embedding_dim=8, num_items=10,
                      embedding_model="test", dtype="float16") as writer:
        for start in (0, 4, 8):
            count = min(4, 10 - start)
            writer.add_items([f"a{i}" for i in range(start, start + count)],
                             [["x"]] * count, rng.normal(size=(count, 8)))
        writer.write_queries("val", [{"text": "q", "relevant": ["a1"]}])
    corpus = load_corpus(tmp_path / "c")
    assert corpus.embeddings.dtype == np.float16 and len(corpus) == 10
    assert read_queries(tmp_path / "c" / "queries" / "val.jsonl")[0].relevant == ("a1",)


def test_writer_is_atomic(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="wrote 2 items, expected num_items = 3"):
        with CorpusWriter(tmp_path / "c", name="c", modality="image", embedding_dim=4,
                          num_items=3, embedding_model="t") as writer:
            writer.add_items(["a", "b"], [[], []], np.ones((2, 4)))
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorpusError, match="duplicate id 'a'"):
        with CorpusWriter(tmp_path / "c", name="c", modality="image", embedding_dim=4,
                          num_items=3, embedding_model="t") as writer:
            writer.add_items(["a", "a", "b"], [[], [], []], np.ones((3, 4)))
    assert list(tmp_path.iterdir()) == []


def test_cli_validate(tiny_corpus: Path, capsys) -> None:
    assert main(["validate", str(tiny_corpus)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(tiny_corpus), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 40
    _rewrite_items(tiny_corpus, lambda ls: ls[:1] + ["{oops"] + ls[2:])
    assert main(["validate", str(tiny_corpus)]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl line 2: malformed JSON" in err and "Traceback" not in err
