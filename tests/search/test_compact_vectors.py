"""Compact item vectors of the hybrid rerank (gcmr.search.compact, gcmr compress-vectors): PQ
codes and float16 rows saved in the model directory and checksummed, asymmetric-distance
cosines equal to the re-normalized decoded vectors', a ranking close to the exact one, live
adds encoded with the same codebook, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.cli import main
from gcmr.errors import ArtifactError, ConfigError
from gcmr.search.compact import (
    CompactConfig,
    CompactItemVectors,
    compress_item_vectors,
    open_compact,
    pq_encode,
    train_codebook,
    unit_rows,
    write_compact,
)
from gcmr.search.rerank import ItemVectors
from gcmr.search.retriever import Retriever

BASE, TOTAL, DIM = 40, 48, 16  # the live_world fixture (tests/search/conftest.py)


def manifest(model: Path) -> dict:
    return json.loads((model / "manifest.json").read_text())


def test_pq_cosines_are_the_decoded_vectors_and_close_to_exact() -> None:
    """faiss-trained codebook (2,000 rows): numpy encoding = faiss compute_codes, the
    asymmetric cosines = the re-normalized decoded vectors', and with one dimension per
    sub-quantizer they are close to the exact cosines."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, DIM)).astype(np.float32) * rng.uniform(0.5, 2, (2000, 1))
    q = torch.nn.functional.normalize(torch.randn(7, DIM), dim=1)
    rows = rng.integers(-1, len(x), size=(7, 30))
    exact = ItemVectors(x).cosines(q, rows)
    for m, tolerance in ((DIM, 0.005), (4, 0.1)):  # mean absolute cosine error
        book, rotation, used = train_codebook(x, m, train_size=1500, seed=1)
        assert book.shape == (m, 256, DIM // m) and used == 1500 and rotation is None
        again, _, _ = train_codebook(x, m, train_size=1500, seed=1)
        np.testing.assert_array_equal(book, again)  # seeded
        codes = pq_encode(book, unit_rows(x))
        pq = faiss.ProductQuantizer(DIM, m, 8)
        faiss.copy_array_to_vector(book.ravel(), pq.centroids)
        assert (pq.compute_codes(unit_rows(x)) == codes).mean() > 0.999
        vectors = CompactItemVectors(codes, book)
        cos = vectors.cosines(q, rows)
        assert np.isneginf(cos[rows < 0]).all()
        dec = vectors.decode(np.maximum(rows, 0).ravel()).reshape(*rows.shape, DIM)
        ref = np.einsum("qd,qcd->qc", q.numpy(), unit_rows(dec.reshape(-1, DIM)).reshape(
            dec.shape))
        np.testing.assert_allclose(cos[rows >= 0], ref[rows >= 0], atol=1e-5)
        assert np.abs(cos - exact)[rows >= 0].mean() < tolerance
    half = CompactItemVectors(unit_rows(x).astype(np.float16))
    assert np.abs(half.cosines(q, rows) - exact)[rows >= 0].max() < 1e-3


def test_opq_rotation_round_trip(tmp_path) -> None:
    """A learned rotation (OPQ) is saved with the codebook; queries are rotated, so the
    cosines are still those of the decoded vectors (decoded back in item space)."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((600, DIM)) @ rng.standard_normal((DIM, DIM))).astype(np.float32)
    record = write_compact(tmp_path, x, CompactConfig(m=4, rotation="opq", train_size=500),
                           corpus_fingerprint="fp")
    assert (record.rotation, record.train_rows, record.bytes_per_item) == ("opq", 500, 4)
    assert record.codebook_bytes == 256 * DIM * 4 + DIM * DIM * 4
    vectors = open_compact(tmp_path, {"compact_vectors": record.to_dict(),
                                      "corpus": {"fingerprint": "fp"}}, num_rows=600, dim=DIM)
    r = vectors.rotation
    np.testing.assert_allclose(r @ r.T, np.eye(DIM), atol=1e-4)
    q = torch.nn.functional.normalize(torch.randn(5, DIM), dim=1)
    rows = rng.integers(-1, len(x), size=(5, 20))
    dec = unit_rows(vectors.decode(np.maximum(rows, 0).ravel())).reshape(*rows.shape, DIM)
    ref = np.einsum("qd,qcd->qc", q.numpy(), dec)
    cos = vectors.cosines(q, rows)
    np.testing.assert_allclose(cos[rows >= 0], ref[rows >= 0], atol=1e-4)
    exact = ItemVectors(x).cosines(q, rows)
    assert np.abs(cos - exact)[rows >= 0].mean() < 0.1
    np.testing.assert_array_equal(vectors.encode(x[:7]), np.asarray(vectors.codes[:7]))
    with pytest.raises(ConfigError, match="OPQ rotation needs at least 256 training items"):
        train_codebook(x[:100], 4, rotation="opq")
    with pytest.raises(ArtifactError, match=r"holds tensors \['centroids', 'rotation'\], "
                                            r"expected \['centroids'\]"):
        open_compact(tmp_path, {"compact_vectors": {**record.to_dict(), "rotation": "none"},
                                "corpus": {"fingerprint": "fp"}}, num_rows=600, dim=DIM)
    with pytest.raises(ArtifactError, match="600 item vectors of dimension 16, the model has "
                                            "601 items"):
        open_compact(tmp_path, {"compact_vectors": record.to_dict(),
                                "corpus": {"fingerprint": "fp"}}, num_rows=601, dim=DIM)


def test_bytes_per_item_and_validation() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, DIM)).astype(np.float32)
    book, _, _ = train_codebook(x, 4)
    pq = CompactItemVectors(pq_encode(book, unit_rows(x)), book)
    assert pq.codec == "pq" and pq.dim == DIM and len(pq) == 300
    assert pq.bytes_per_item == 4 and pq.codebook_bytes == 256 * DIM * 4
    half = CompactItemVectors(unit_rows(x).astype(np.float16))
    assert half.codec == "float16" and half.bytes_per_item == 2 * DIM
    grown = pq.plus(x[:5])
    assert len(grown) == 305 and grown.bytes_per_item == 4
    np.testing.assert_array_equal(grown.codes[np.arange(300, 305)], pq.codes[:5])
    assert CompactConfig().sub_quantizers(1024) == 256  # D / 4
    assert CompactConfig().sub_quantizers(24) == 6 and CompactConfig().sub_quantizers(10) == 2
    assert CompactConfig(m=8).sub_quantizers(24) == 8
    with pytest.raises(ConfigError, match=r"m = 5 must divide the item dimension 16.*"
                                          r"nearest that do: \[2, 4, 8\]"):
        CompactConfig(m=5).sub_quantizers(DIM)
    with pytest.raises(ConfigError, match="codec must be one of"):
        CompactConfig(codec="int8")
    with pytest.raises(ConfigError, match="apply to the pq codec"):
        CompactConfig(codec="float16", m=4)
    with pytest.raises(ConfigError, match="rotation must be one of"):
        CompactConfig(rotation="pca")
    with pytest.raises(ConfigError, match="PQ codes must be uint8"):
        CompactItemVectors(np.zeros((3, 4), dtype=np.int16), book)
    with pytest.raises(ConfigError, match="codebook must be finite"):
        CompactItemVectors(np.zeros((3, 2), dtype=np.uint8), book)
    with pytest.raises(ConfigError, match=r"must be \[A, 16\]"):
        pq.encode(np.zeros((2, 8), dtype=np.float32))


def test_round_trip_in_the_model_directory(live_world, model_copy, tmp_path) -> None:
    record = compress_item_vectors(model_copy, CompactConfig(m=4))
    assert (record.codec, record.m, record.dim, record.rows) == ("pq", 4, DIM, BASE)
    assert record.bytes_per_item == 4 and record.train_rows == BASE
    m = manifest(model_copy)
    assert m["rerank"]["item_vectors"] == "compact" and m["compact_vectors"]["m"] == 4
    assert {"item_codes.npy", "item_codebook.safetensors"} <= set(m["sha256"])
    assert m["updates"]["version"] == 1 and m["updates"]["log"][0]["op"] == "compress"
    codes = np.load(model_copy / "item_codes.npy")
    assert codes.shape == (BASE, 4) and codes.dtype == np.uint8
    assert (model_copy / "item_codes.npy").stat().st_size < 128 + BASE * 4 + 1
    # hybrid search scores the stored codes and needs no corpus
    r = Retriever.load(model_copy, device="cpu", corpus_path=tmp_path / "gone")
    assert isinstance(r.item_vectors, CompactItemVectors) and r.rerank.mode == "hybrid"
    np.testing.assert_array_equal(np.asarray(r.item_vectors.codes), codes)
    scores, ids = r.search(["red 3", "gold item 7"], k=5)
    assert np.isfinite(scores).all() and (ids != "").all()
    # float16, then back to the corpus's rows
    record = compress_item_vectors(model_copy, CompactConfig(codec="float16"))
    assert record.bytes_per_item == 2 * DIM and record.m == 0
    assert not (model_copy / "item_codebook.safetensors").exists()
    assert np.load(model_copy / "item_codes.npy").dtype == np.float16
    assert compress_item_vectors(model_copy, None) is None
    m = manifest(model_copy)
    assert m["rerank"]["item_vectors"] == "embeddings" and "compact_vectors" not in m
    assert not (model_copy / "item_codes.npy").exists() and m["updates"]["version"] == 3
    assert isinstance(Retriever.load(model_copy, device="cpu").item_vectors, ItemVectors)


def test_one_dim_per_subquantizer_ranks_like_exact(live_world, model_copy) -> None:
    """M = D, 8 bits: the tiny world has fewer items than centroids, so the codebook holds
    every training value and the hybrid ranking is the exact one (the faiss-trained case is
    tested above)."""
    full = live_world["full"]
    texts = [q.text for q in full.queries["test"] if int(q.relevant[0][4:]) < BASE]
    texts += [full.captions[i][0] for i in range(0, BASE, 3)]
    exact_scores, exact = Retriever.load(model_copy, device="cpu").search(texts, k=10)
    for config in (CompactConfig(m=DIM), CompactConfig(codec="float16")):
        compress_item_vectors(model_copy, config)
        scores, ids = Retriever.load(model_copy, device="cpu").search(texts, k=10)
        assert (ids[:, 0] == exact[:, 0]).all()
        assert (ids == exact).mean() > 0.95
        np.testing.assert_allclose(scores, exact_scores, atol=2e-3)


def test_corrupt_or_missing_files_are_refused(live_world, model_copy) -> None:
    compress_item_vectors(model_copy, CompactConfig(m=8))
    path = model_copy / "item_codes.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"item_codes\.npy: checksum mismatch"):
        Retriever.load(model_copy, device="cpu")
    path.write_bytes(bytes(data[:40]))  # truncated: unreadable without the checksum too
    with pytest.raises(ArtifactError, match=r"item_codes\.npy: missing or unreadable .*"
                                            r"gcmr compress-vectors"):
        Retriever.load(model_copy, device="cpu", verify=False)
    path.unlink()
    with pytest.raises(ArtifactError, match=r"item_codes\.npy: missing or unreadable"):
        Retriever.load(model_copy, device="cpu")
    compress_item_vectors(model_copy, CompactConfig(m=8))
    book = model_copy / "item_codebook.safetensors"
    book.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match=r"item_codebook\.safetensors: checksum mismatch"):
        Retriever.load(model_copy, device="cpu")
    with pytest.raises(ArtifactError, match=r"item_codebook\.safetensors: corrupted"):
        Retriever.load(model_copy, device="cpu", verify=False)
    book.unlink()
    with pytest.raises(ArtifactError, match=r"item_codebook\.safetensors: missing PQ codebook"):
        Retriever.load(model_copy, device="cpu")
    # pure generation does not read them
    assert Retriever.load(model_copy, device="cpu", rerank="none").item_vectors is None


def test_live_adds_are_encoded_with_the_same_codebook(live_world, model_copy) -> None:
    full = live_world["full"]
    compress_item_vectors(model_copy, CompactConfig(m=8))
    book = np.load(model_copy / "item_codes.npy")
    r = Retriever.load(model_copy, device="cpu")
    codebook = r.item_vectors.codebook
    r.add_items(live_world["new"])
    assert len(r.item_vectors) == TOTAL
    new_codes = pq_encode(codebook, unit_rows(np.asarray(full.embeddings[BASE:])))
    saved = np.load(model_copy / "item_codes.npy")
    np.testing.assert_array_equal(saved, np.concatenate([book, new_codes]))
    assert manifest(model_copy)["compact_vectors"]["rows"] == TOTAL
    texts = [full.captions[i][0] for i in range(BASE, TOTAL)]
    scores, ids = r.search(texts, k=TOTAL, beam=TOTAL)
    assert set(full.ids[BASE:]) <= set(ids.ravel()) and np.isfinite(scores).all()
    again = Retriever.load(model_copy, device="cpu")
    assert isinstance(again.item_vectors, CompactItemVectors) and len(again.item_vectors) == TOTAL
    assert (again.search(texts, k=5)[1] == r.search(texts, k=5)[1]).all()
    # a retriever searching without them (pure generation) still extends them; a delete
    # keeps every row
    pure = Retriever.load(model_copy, device="cpu", rerank="none")
    pure.delete_items("item0003")
    assert np.load(model_copy / "item_codes.npy").shape == (TOTAL, 8)
    extra = live_world["root"] / "extra"
    if not extra.exists():
        from gcmr.corpus import write_corpus

        write_corpus(extra, ids=["extra0"], captions=[["a red extra thing"]],
                     embeddings=np.asarray(full.embeddings[:1]), name="x", modality="image")
    pure.add_items(extra)
    assert np.load(model_copy / "item_codes.npy").shape == (TOTAL + 1, 8)
    assert len(Retriever.load(model_copy, device="cpu").item_vectors) == TOTAL + 1


def test_cli_compress_vectors(live_world, model_copy, capsys) -> None:
    m = str(model_copy)
    assert main(["compress-vectors", m, "--pq-m", "8", "--json", "--quiet",
                 "--threads", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["codec"] == "pq" and record["bytes_per_item"] == 8 and record["rows"] == BASE
    assert main(["search", m, "red 3", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert main(["compress-vectors", m, "--json", "--quiet"]) == 0  # default m = D / 4
    assert json.loads(capsys.readouterr().out)["bytes_per_item"] == DIM // 4
    assert main(["compress-vectors", m, "--codec", "float16", "--quiet"]) == 0
    assert "32 (float32: 64; 2x smaller)" in capsys.readouterr().out
    assert main(["compress-vectors", m, "--pq-m", "5"]) == 2
    assert "must divide the item dimension 16" in capsys.readouterr().err
    assert main(["compress-vectors", m, "--codec", "none", "--pq-m", "4"]) == 2
    assert "--pq-m and --rotation apply to --codec pq" in capsys.readouterr().err
    assert main(["compress-vectors", m, "--rotation", "opq", "--quiet"]) == 2
    assert "OPQ rotation needs at least 256 training items" in capsys.readouterr().err
    assert main(["compress-vectors", m, "--codec", "none"]) == 0
    assert manifest(model_copy)["rerank"]["item_vectors"] == "embeddings"
    data = manifest(model_copy)
    data["model_config"]["query_dim"] = 0
    (model_copy / "manifest.json").write_text(json.dumps(data))
    assert main(["compress-vectors", m]) == 2
    assert "no query-vector head" in capsys.readouterr().err
