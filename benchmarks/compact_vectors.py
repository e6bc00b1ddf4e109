"""Compact item vectors for the hybrid rerank: accuracy, bytes per item and speed of each form.

For a trained hybrid model (a query head) on the 5k synthetic world, the same model scores its
hybrid candidates with the item embeddings stored as

- float32 rows of the corpus's memory-mapped ``embeddings.npy`` (the default: nothing stored);
- float16 unit rows in the model directory (``gcmr compress-vectors MODEL --codec float16``);
- product-quantization codes, ``m`` sub-quantizers x 8 bits = ``m`` bytes per item
  (``gcmr compress-vectors MODEL --pq-m M``), scored by asymmetric distance and
  re-normalized (:mod:`gcmr.search.compact`), without and with a learned OPQ rotation
  (``--rotation opq``),

and reports hybrid R@1 / R@10 / MRR@10 on the test queries, agreement with the float32
ranking, bytes per item (codes, and on disk with the codebook), the time to compress, the
search rate of the whole hybrid search, and the time of the rerank scoring alone (the same
candidates for every form).

    python benchmarks/compact_vectors.py --model MODEL --out benchmarks/results/compact_vectors

Without ``--model`` it builds one in ``--work`` first (about 10 minutes on one thread)::

    gcmr synth W --items 5000 --seed 0; gcmr index W IDX
    gcmr train IDX MODEL --epochs 4 --warmup-epochs 0.5 --lr 0.002 --batch-size 256
        --d-model 64 --heads 4 --ffn 256 --encoder-layers 2 --decoder-layers 2
        --max-val-queries 500 --preset none --threads 1

Writes ``OUT/compact_vectors.{json,md}``. The model directory given is not modified (each
form is compressed into a hard-linked copy under ``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.bench.report import machine_info, write_report
from gcmr.corpus import load_corpus
from gcmr.evaluate.metrics import retrieval_metrics
from gcmr.evaluate.runner import sample_queries
from gcmr.search.compact import OPQ_ITERATIONS, CompactConfig, compress_item_vectors
from gcmr.search.retriever import Retriever, search_candidates

TRAIN = ["--epochs", "4", "--warmup-epochs", "0.5", "--lr", "0.002", "--batch-size", "256",
         "--d-model", "64", "--heads", "4", "--ffn", "256", "--encoder-layers", "2",
         "--decoder-layers", "2", "--max-val-queries", "500", "--preset", "none"]


def build_model(work: Path, items: int, seed: int, threads: int) -> Path:
    """synth -> index -> train with the documented commands (skipped when done)."""
    from gcmr.cli import main as gcmr

    world, index, model = work / "world", work / "index", work / "model"
    steps = [(world, ["synth", str(world), "--items", str(items), "--seed", str(seed)]),
             (index, ["index", str(world), str(index), "--quiet"]),
             (model, ["train", str(index), str(model), *TRAIN, "--threads", str(threads),
                      "--quiet"])]
    for out, argv in steps:
        done = (out / "manifest.json").is_file() or (out / "corpus.json").is_file()
        if not done and gcmr(argv) != 0:
            raise SystemExit(f"gcmr {' '.join(argv)} failed")
    return model


def copy_model(model: Path, out: Path) -> Path:
    """A hard-linked copy of a model directory (compressing replaces files, never edits)."""
    if out.exists():
        shutil.rmtree(out)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(model, out, copy_function=link)
    return out


def dir_bytes(model: Path, names: tuple[str, ...]) -> int:
    return sum((model / n).stat().st_size for n in names if (model / n).is_file())


def timed_search(r: Retriever, texts: list[str], repeats: int) -> tuple[np.ndarray, float]:
    """Rows of the model's default hybrid search and the best queries/s of ``repeats`` runs."""
    best, rows = 0.0, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, rows = r.search_rows(texts, k=10)
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return rows, best


def overlap(rows: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's reference top 10 that ``rows`` also holds."""
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, int((b >= 0).sum()))
                          for a, b in zip(rows, exact)]))


def rerank_micros(vectors: Any, queries: torch.Tensor, rows: np.ndarray, repeats: int,
                  batch: int = 256) -> float:
    """Microseconds per query to score the given candidate rows (batches of ``batch``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in range(0, len(rows), batch):
            vectors.cosines(queries[a:a + batch], rows[a:a + batch])
        best = min(best, time.perf_counter() - t0)
    return best / len(rows) * 1e6


@torch.no_grad()
def query_vectors(r: Retriever, texts: list[str], batch: int = 256) -> torch.Tensor:
    out = []
    for a in range(0, len(texts), batch):
        ids, mask = r.tokenizer.encode_batch(texts[a:a + batch])
        out.append(r.model.query_vectors(r.model.encode(ids, mask)))
    return torch.cat(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a trained hybrid model (default: build one)")
    ap.add_argument("--corpus", type=Path, help="the model's corpus, when it has moved")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compact_vectors"))
    ap.add_argument("--work", type=Path, help="working directory (default a temporary one)")
    ap.add_argument("--pq-m", type=int, nargs="+", default=[32, 64, 128, 256],
                    help="PQ sub-quantizers (= bytes per item) to measure")
    ap.add_argument("--opq-m", type=int, nargs="*", default=[32, 64, 128],
                    help="PQ sub-quantizers measured with a learned OPQ rotation")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=0, help="0 = the whole split")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs (the best is kept)")
    ap.add_argument("--items", type=int, default=5000, help="items of a built world")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    machine = machine_info()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="gcmr-compact-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or build_model(work, args.items, args.seed, args.threads)
    manifest = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    corpus = load_corpus(args.corpus or manifest["corpus"]["path"])
    texts, relevant = sample_queries(corpus, args.split, args.max_queries or None,
                                     seed=args.seed)
    n, dim = (int(s) for s in corpus.embeddings.shape)
    forms: list[tuple[str, str, CompactConfig | None]] = [
        ("float32", "float32 (corpus mmap)", None),
        ("float16", "float16", CompactConfig(codec="float16"))]
    forms += [(f"pq{m}", f"PQ m={m}", CompactConfig(m=m, seed=args.seed)) for m in args.pq_m]
    forms += [(f"opq{m}", f"OPQ m={m}", CompactConfig(m=m, seed=args.seed, rotation="opq"))
              for m in args.opq_m]

    # one candidate list for the scoring-only timing: the model's own hybrid candidates
    base = Retriever.load(copy_model(model, work / "forms" / "float32"), device="cpu",
                          corpus_path=args.corpus)
    if base.item_vectors is None:
        raise SystemExit(f"{model}: not a hybrid model (no query head)")
    cfg = base.rerank
    _, cand_rows, _ = search_candidates(
        base.model, base.tokenizer, base.index.trie, texts, k=cfg.candidates,
        beam=cfg.candidates, item_vectors=base.item_vectors, expander=base._expander(),
        max_candidates=cfg.max_candidates)
    qvecs = query_vectors(base, texts)
    candidates_per_query = float((cand_rows >= 0).sum(axis=1).mean())

    rows_out, exact_rows = [], None
    for key, name, config in forms:
        path = copy_model(model, work / "forms" / key)
        t0 = time.perf_counter()
        record = compress_item_vectors(path, config, corpus_path=args.corpus) \
            if config is not None else None
        compress_s = time.perf_counter() - t0
        r = Retriever.load(path, device="cpu", corpus_path=args.corpus)
        rows, qps = timed_search(r, texts, args.repeats)
        if exact_rows is None:
            exact_rows = rows
        m = retrieval_metrics(rows, relevant, ks=(1, 5, 10), mrr_k=10)
        if record is None:
            codes, stored = 4 * dim, 4 * dim * n
        else:
            codes = record.bytes_per_item
            stored = dir_bytes(path, ("item_codes.npy", "item_codebook.safetensors"))
        row = {"form": name, "bytes/item": codes,
               "bytes/item on disk": round(stored / n, 1),
               "R@1": round(m["R@1"], 4), "R@10": round(m["R@10"], 4),
               "MRR@10": round(m["MRR@10"], 4),
               "top-1 = float32": round(float((rows[:, 0] == exact_rows[:, 0]).mean()), 4),
               "top-10 overlap": round(overlap(rows, exact_rows), 4),
               "search q/s": round(qps, 1),
               "rerank µs/query": round(rerank_micros(r.item_vectors, qvecs, cand_rows,
                                                       args.repeats), 1),
               "compress s": round(compress_s, 2) if record is not None else "-"}
        rows_out.append(row)
        print(row, flush=True)

    write_report(
        args.out, "compact_vectors",
        title=f"Compact item vectors for the hybrid rerank ({n:,} items, D = {dim})",
        columns=["form", "bytes/item", "bytes/item on disk", "R@1", "R@10", "MRR@10",
                 "top-1 = float32", "top-10 overlap", "search q/s", "rerank µs/query",
                 "compress s"],
        rows=rows_out,
        settings={"model": str(model), "corpus": str(corpus.path), "split": args.split,
                  "queries": len(texts), "items": n, "dim": dim, "pq_m": args.pq_m,
                  "opq_m": args.opq_m, "threads": args.threads, "repeats": args.repeats,
                  "seed": args.seed,
                  "rerank": cfg.to_dict(),
                  "candidates_per_query": round(candidates_per_query, 1),
                  "train_config": {k: manifest["train_config"].get(k) for k in
                                   ("epochs", "lr", "batch_size", "dense_weight", "seed")},
                  "model_config": {k: manifest["model_config"].get(k) for k in
                                   ("d_model", "n_heads", "d_ff", "encoder_layers",
                                    "decoder_layers", "query_dim")}},
        command="python benchmarks/compact_vectors.py " + " ".join(sys.argv[1:]),
        machine=machine, seconds=time.perf_counter() - started,
        notes=[f"One trained hybrid model (query head, the fusion weight chosen on val with "
               f"the float32 rows: {cfg.logprob_weight:g}); every form reranks the same "
               f"beam + prefix-expanded candidates (beam {cfg.candidates}, up to "
               f"{cfg.max_candidates}; {candidates_per_query:.0f} per query on average) by "
               f"cosine. R@k on all {len(texts):,} {args.split} queries, ranking all "
               f"{n:,} items.",
               "bytes/item: what the form stores per item (float32: the corpus's own "
               "embeddings.npy, read in place; nothing extra in the model). bytes/item on "
               "disk: the model directory's files (codes + the PQ codebook of 256 x D "
               "float32, shared by all items) divided by the item count; the codebook "
               f"({256 * dim * 4:,} bytes, and {dim * dim * 4:,} for an OPQ rotation) "
               f"dominates at {n:,} items and vanishes per item at a million.",
               "PQ: items L2-normalized, faiss ProductQuantizer (k-means per sub-space, "
               f"seed {args.seed}) trained on every item here (at most 65,536 sampled), "
               "codes scored by asymmetric distance (query float vector against the "
               "centroids) and divided by the decoded vector's norm. OPQ: a rotation learned "
               f"first (faiss OPQMatrix, {OPQ_ITERATIONS} iterations; a D x D float32 matrix "
               "more on disk), queries rotated once per search batch.",
               "top-1 = float32: fraction of queries whose first result is the float32 "
               "ranking's; top-10 overlap: mean fraction of the float32 top 10 in the form's "
               "top 10 (order ignored). search q/s: the whole hybrid search "
               "(encoder, constrained beam, expansion, rerank) on one thread, best of "
               f"{args.repeats}; rerank µs/query: only the candidates' scoring.",
               "2 shared cores; other jobs ran at the same time (load average recorded), so "
               "the times are indicative."])
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
