"""Hybrid search settings on one trained model: the beam width and the expanded candidate
count (``RerankConfig.candidates`` / ``max_candidates``), each evaluated on the same queries,
with the time the evaluation took. This is how the defaults were picked.

    python benchmarks/rerank_sweep.py MODEL CORPUS --out benchmarks/results/rerank_sweep
    # the committed run: the 5k world's hybrid model of `run_bench.sh hybrid`
    python benchmarks/rerank_sweep.py /tmp/gcmr-bench/acc5k/model-cart-hybrid-* \
        /tmp/gcmr-bench/w5k --out benchmarks/results/rerank_sweep

Writes ``OUT/rerank_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gcmr.bench.report import machine_info, write_report
from gcmr.corpus import load_corpus
from gcmr.evaluate.runner import evaluate
from gcmr.search.rerank import RerankConfig
from gcmr.search.retriever import Retriever

SETTINGS = ((20, 100), (10, 100), (10, 150), (10, 200), (15, 150), (20, 200))
METRICS = ("R@1", "R@5", "R@10", "MRR@10")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rerank_sweep"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=2000)
    args = ap.parse_args()
    machine = machine_info()
    started = time.perf_counter()
    retriever = Retriever.load(args.model)
    corpus = load_corpus(args.corpus, load_captions=False)
    saved = retriever.rerank
    default = RerankConfig()
    rows = []
    for beam, total in SETTINGS:
        retriever.rerank = saved.replace(candidates=beam, max_candidates=total)
        t0 = time.perf_counter()
        metrics = evaluate(retriever, corpus, args.split, k=10, max_queries=args.max_queries,
                           seed=0)["metrics"]
        seconds = time.perf_counter() - t0
        is_default = (beam, total) == (default.candidates, default.max_candidates)
        rows.append({"beam": beam, "candidates": total, **{m: metrics[m] for m in METRICS},
                     "eval_s": round(seconds, 2),
                     "note": "the default" if is_default else "-"})
        print(rows[-1], flush=True)
    write_report(args.out, "rerank_sweep", title="Hybrid search: beam and candidate count",
                 columns=["beam", "candidates", *METRICS, "eval_s", "note"], rows=rows,
                 settings={"model": str(args.model), "corpus": str(args.corpus),
                           "split": args.split, "max_queries": args.max_queries,
                           "expand_depth": saved.expand_depth,
                           "logprob_weight": saved.logprob_weight},
                 command="python benchmarks/rerank_sweep.py " + " ".join(sys.argv[1:]),
                 machine=machine, seconds=time.perf_counter() - started,
                 notes=["Same model, same seeded query sample for every row; the candidates "
                        "are the beam's items plus the members of their coarse clusters, "
                        "reranked by the query head's cosine (+ the saved log-probability "
                        "weight). eval_s includes tokenization and the query encoder, one "
                        "evaluation each, on a shared machine (indicative only; the speed "
                        "measurement is benchmarks/results/hybrid_scale)."])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
