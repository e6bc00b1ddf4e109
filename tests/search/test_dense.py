"""Dense search: exact top-k (chunked == unchunked == brute force), faiss agreement, the
zero-shot searcher, and the dual-tower model (training step, save/load, CLI eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.errors import ConfigError, CorpusError, GcmrError
from gcmr.search.dense import (
    DenseSearchConfig,
    ExactBackend,
    FaissBackend,
    ZeroShotSearcher,
    exact_search,
    make_backend,
)


def _data(n: int = 500, d: int = 24, q: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 2.0, size=(n, 1))
    queries = rng.normal(size=(q, d)).astype(np.float32)
    return items.astype(np.float32), queries


def _brute(queries: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    xn = items / np.linalg.norm(items, axis=1, keepdims=True)
    s = qn @ xn.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize("chunk", [7, 64, 100_000])
def test_exact_search_matches_brute_force_for_any_chunking(chunk: int) -> None:
    items, queries = _data()
    scores, rows = exact_search(queries, items, 10, chunk_rows=chunk)
    ref_s, ref_r = _brute(queries, items, 10)
    assert rows.dtype == np.int64 and scores.dtype == np.float32 and rows.shape == (30, 10)
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()  # best first


def test_exact_search_reads_float16_memmap_and_pads(tmp_path: Path) -> None:
    items, queries = _data(n=6)
    path = tmp_path / "emb.npy"
    np.save(path, items.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    scores, rows = exact_search(queries, mm, 10, chunk_rows=4)
    assert (rows[:, :6] >= 0).all() and (rows[:, 6:] == -1).all()
    assert np.isneginf(scores[:, 6:]).all()
    ref_s, ref_r = _brute(queries, items.astype(np.float16).astype(np.float32), 6)
    np.testing.assert_array_equal(rows[:, :6], ref_r)


def test_exact_backend_in_memory_and_streaming_agree() -> None:
    items, queries = _data()
    mem = ExactBackend(items, DenseSearchConfig(chunk_rows=50))
    stream = ExactBackend(items, DenseSearchConfig(chunk_rows=50, in_memory_mb=0))
    assert mem.in_memory and not stream.in_memory and stream.nbytes == 0
    assert mem.nbytes == items.size * 4
    np.testing.assert_array_equal(mem.search(queries, 5)[1], stream.search(queries, 5)[1])


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_faiss_top_k_equals_exact(factory: str) -> None:
    pytest.importorskip("faiss")
    items, queries = _data(n=800)
    config = DenseSearchConfig(backend=f"faiss:{factory}", ef_search=256)
    backend = make_backend(items, config)
    assert isinstance(backend, FaissBackend) and backend.nbytes > 0
    scores, rows = backend.search(queries, 10)
    ref_s, ref_r = _brute(queries, items, 10)
    np.testing.assert_allclose(scores, ref_s, atol=1e-4)
    if factory == "Flat":  # exact up to float ties
        np.testing.assert_array_equal(rows, ref_r)
    else:  # a graph search with a wide beam finds (nearly) all of them
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref_r)])
        assert recall >= 0.95


def test_faiss_ivfpq_builds_on_a_seeded_sample_and_adapts_nlist() -> None:
    pytest.importorskip("faiss")
    items, queries = _data(n=400, d=16)
    backend = make_backend(items, DenseSearchConfig(backend="faiss:IVF64,PQ4x4", nprobe=64,
                                                    train_size=300))
    assert backend.factory == "IVF7,PQ4x4"  # 300 sample rows / 39 points per list
    _, rows = backend.search(queries, 10)
    _, ref = _brute(queries, items, 10)
    assert rows.shape == (30, 10) and (rows >= 0).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref)])
    assert recall > 0.3  # compressed: approximate, but far above chance (10/400)


def test_bad_backend_and_factory_strings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="faiss:<factory string>"):
        DenseSearchConfig(backend="hnsw")
    pytest.importorskip("faiss")
    items, _ = _data(n=50)
    with pytest.raises(ConfigError, match="factory"):
        make_backend(items, DenseSearchConfig(backend="faiss:NoSuchIndex"))


# ----------------------------------------------------------------------------- zero-shot


def _corpus_with_query_vectors(path: Path, *, noise: float = 0.05) -> Path:
    """A tiny corpus whose test queries ship embeddings near their relevant item."""
    from gcmr.corpus import Query, write_corpus

    rng = np.random.default_rng(1)
    n, d = 60, 16
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"i{i}" for i in range(n)]
    captions = [[f"thing {i}"] for i in range(n)]
    test = [Query(f"query about {i}", (ids[i],)) for i in range(0, n, 3)]
    write_corpus(path, ids=ids, captions=captions, embeddings=emb,
                 queries={"test": test, "train": [Query("x", (ids[0],))]}, name="zs",
                 modality="image")
    qv = emb[0:n:3] + noise * rng.normal(size=(len(test), d)).astype(np.float32)
    np.save(path / "queries" / "test.npy", qv.astype(np.float32))
    return path


def test_zero_shot_searcher_evaluates_precomputed_query_vectors(tmp_path: Path) -> None:
    from gcmr.corpus import load_corpus
    from gcmr.evaluate.runner import evaluate

    corpus = load_corpus(_corpus_with_query_vectors(tmp_path / "c"))
    searcher = ZeroShotSearcher(corpus, ["test"], DenseSearchConfig())
    result = evaluate(searcher, corpus, "test")
    assert result["metrics"]["R@1"] == 1.0
    scores, ids = searcher.search(["query about 3"], k=3)
    assert ids[0, 0] == "i3" and scores[0, 0] > 0.9
    restricted = evaluate(searcher, corpus, "test", restrict_to_split=True)
    assert restricted["candidates"] == 20 and restricted["metrics"]["R@1"] == 1.0
    with pytest.raises(GcmrError, match="no precomputed embedding"):
        searcher.search(["an unknown query"])


def test_zero_shot_refuses_wrong_shapes(tmp_path: Path) -> None:
    from gcmr.corpus import load_corpus

    path = _corpus_with_query_vectors(tmp_path / "c")
    np.save(path / "queries" / "test.npy", np.zeros((3, 16), dtype=np.float32))
    corpus = load_corpus(path)
    with pytest.raises(CorpusError, match=r"test.npy: expected shape \[20, 16\]"):
        ZeroShotSearcher(corpus, ["test"], DenseSearchConfig())
    with pytest.raises(CorpusError, match="train.npy: missing"):
        ZeroShotSearcher(corpus, ["train"], DenseSearchConfig())


def test_eval_dense_cli_zero_shot(tmp_path: Path, capsys) -> None:
    from gcmr.cli import main

    path = _corpus_with_query_vectors(tmp_path / "c")
    out = tmp_path / "zs.json"
    assert main(["eval-dense", str(path), "--split", "test", "--out", str(out), "--json"]) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["R@1"] == 1.0 and result["backend"] == "exact"
    assert result["model"] == "zero-shot"
    capsys.readouterr()


# ----------------------------------------------------------------------------- dual tower

TINY_TOWER = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 2}


def _tiny_config(**changes):
    from gcmr.train import TrainConfig

    base = dict(epochs=2, batch_size=16, lr=3e-3, vocab_size=200, val_split="test",
                max_val_queries=20, warmup_epochs=0.5)
    base.update(changes)
    return TrainConfig(**base)


def test_info_nce_multi_positive_and_symmetric() -> None:
    from gcmr.train.losses import info_nce

    torch.manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    rows = torch.tensor([0, 1, 2, 0])
    perfect = info_nce(items[rows], items[rows], rows, torch.tensor(50.0))
    shuffled = info_nce(items[torch.tensor([1, 2, 0, 1])], items[rows], rows, torch.tensor(50.0))
    assert perfect < 0.4 < shuffled  # the two queries of item 0 are not each other's negatives
    # query -> item part: cross-entropy over the 3 distinct items
    logits = 50.0 * items[rows] @ items.T
    q2i = torch.nn.functional.cross_entropy(logits, rows)
    assert perfect >= 0.5 * q2i - 1e-6


def test_dense_training_step_lowers_the_loss_and_the_model_loads_back(
        tiny_corpus: Path, tmp_path: Path) -> None:
    from gcmr.search import load_searcher
    from gcmr.search.dense import DenseRetriever
    from gcmr.train.dense import train_dense

    result = train_dense(tiny_corpus, tmp_path / "dense", config=_tiny_config(epochs=3),
                         tower_options=TINY_TOWER, show_progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.num_pairs == 40 * 2 + 20
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert manifest["format"] == "gcmr-dense" and manifest["corpus"]["num_items"] == 40
    assert manifest["search"]["backend"] == "exact"
    searcher = load_searcher(tmp_path / "dense")
    assert isinstance(searcher, DenseRetriever)
    scores, rows = searcher.search_rows(["red item 1", "blue item 2"], k=5)
    assert scores.shape == rows.shape == (2, 5) and (rows >= 0).all()
    # the selected weights reproduce the recorded validation metrics
    from gcmr.corpus import load_corpus
    from gcmr.evaluate.runner import evaluate

    corpus = load_corpus(tiny_corpus)
    metrics = evaluate(searcher, corpus, "test")["metrics"]
    assert metrics == pytest.approx(result.best_metrics, abs=1e-4)


def test_dense_model_faiss_backend_and_saved_index(tiny_corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from gcmr.search.dense import DenseRetriever, DenseSearchConfig
    from gcmr.train.dense import train_dense

    train_dense(tiny_corpus, tmp_path / "d", config=_tiny_config(epochs=1, val_split=None),
                tower_options=TINY_TOWER, search=DenseSearchConfig(backend="faiss:Flat"),
                save_index=True, show_progress=False)
    assert (tmp_path / "d" / "faiss.index").is_file()
    flat = DenseRetriever.load(tmp_path / "d")
    assert flat.backend.build_seconds == 0.0  # the saved index was read, not rebuilt
    exact = DenseRetriever.load(tmp_path / "d", backend="exact")
    texts = ["red item 1", "gold thing", "green one 5"]
    np.testing.assert_array_equal(flat.search_rows(texts, k=5)[1], exact.search_rows(texts, k=5)[1])
    cands = np.arange(0, 40, 2)
    rows = flat.search_rows(texts, k=5, candidates=cands)[1]
    assert np.isin(rows, cands).all()
    np.testing.assert_array_equal(rows, exact.search_rows(texts, k=5, candidates=cands)[1])


def test_cli_train_dense_then_gcmr_eval(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    from gcmr.cli import main

    model = tmp_path / "dense"
    code = main(["train-dense", str(tiny_corpus), str(model), "--epochs", "1", "--batch-size",
                 "16", "--vocab-size", "200", "--d-model", "32", "--heads", "2", "--ffn", "64",
                 "--encoder-layers", "1", "--quiet", "--no-val"])
    assert code == 0
    assert main(["eval", str(model), "--json"]) == 0
    result = json.loads((model / "eval_test.json").read_text())
    assert set(result["metrics"]) == {"R@1", "R@5", "R@10", "MRR@10"}
    assert result["queries"] == 20
    assert main(["eval-dense", str(model), "--backend", "faiss:HNSW32", "--json"]) == 0
    assert (model / "eval_test_faiss-HNSW32.json").is_file()
    assert main(["train-dense", str(tiny_corpus), str(model), "--epochs", "1"]) == 2  # exists
    capsys.readouterr()
