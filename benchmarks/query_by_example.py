"""Query by example on a trained model: does "more like this" (``like=ID``) and a search by
the item's own embedding (``vector``) return the item itself first?

For every live item of the model (or a seeded sample, ``--max-items``) it searches
``like=[id]`` and ``vector=embedding`` with k = 10 and reports how often the item is the first
hit and in the top 10, the mean cosine of the other hits to the example (do the neighbours
look alike?), and the time per query, beside the exhaustive answer (exact cosine over every
item embedding, what a flat dense index would return for the same example).

    python benchmarks/query_by_example.py MODEL --out benchmarks/results/query_by_example

Writes ``OUT/query_by_example.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gcmr.bench.report import machine_info, write_report
from gcmr.search.example import unit_rows
from gcmr.search.retriever import Retriever

BATCH = 256


def run(retriever: Retriever, ids: list[str], rows: np.ndarray, items: np.ndarray, *,
        mode: str, k: int) -> dict[str, float]:
    """Self@1, self@k, mean cosine of hits 2..k to the example, ms per query for one mode."""
    firsts, within, neighbour_cos, seconds = 0, 0, [], 0.0
    unit = unit_rows(items)
    for start in range(0, len(ids), BATCH):
        batch_ids, batch_rows = ids[start:start + BATCH], rows[start:start + BATCH]
        t0 = time.perf_counter()
        if mode == "like":
            _, hits = retriever.search_rows(None, k=k, like=batch_ids)
        else:
            _, hits = retriever.search_rows(None, k=k, vector=np.asarray(items[batch_rows]))
        seconds += time.perf_counter() - t0
        firsts += int((hits[:, 0] == batch_rows).sum())
        within += int((hits == batch_rows[:, None]).any(axis=1).sum())
        for row, found in zip(batch_rows, hits):
            others = found[(found >= 0) & (found != row)]
            if len(others):
                neighbour_cos.append(float((unit[others] @ unit[row]).mean()))
    n = len(ids)
    return {"self@1": round(firsts / n, 4), f"self@{k}": round(within / n, 4),
            "neighbour cosine": round(float(np.mean(neighbour_cos)), 4),
            "ms/query": round(seconds / n * 1000, 3), "items": n}


def exhaustive(rows: np.ndarray, items: np.ndarray, k: int) -> dict[str, float]:
    """The flat exact answer for the same examples (cosine over every item)."""
    unit = unit_rows(items)
    firsts, neighbour_cos = 0, []
    t0 = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        batch = rows[start:start + BATCH]
        scores = unit[batch] @ unit.T
        top = np.argsort(-scores, axis=1)[:, :k]
        firsts += int((top[:, 0] == batch).sum())
        for row, found, s in zip(batch, top, scores):
            others = found[found != row]
            neighbour_cos.append(float(s[others].mean()))
    seconds = time.perf_counter() - t0
    n = len(rows)
    return {"self@1": round(firsts / n, 4), f"self@{k}": 1.0,
            "neighbour cosine": round(float(np.mean(neighbour_cos)), 4),
            "ms/query": round(seconds / n * 1000, 3), "items": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a trained generative model directory")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/query_by_example"))
    ap.add_argument("--max-items", type=int, default=0, help="0 = every live item")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    started = time.perf_counter()
    retriever = Retriever.load(args.model, device="cpu")
    live = np.asarray(retriever.index.live_rows(), dtype=np.int64)
    if args.max_items and len(live) > args.max_items:
        rng = np.random.default_rng(args.seed)
        live = np.sort(rng.choice(live, args.max_items, replace=False))
    items = np.asarray(retriever.item_matrix()[np.arange(retriever.index.num_items)],
                       dtype=np.float32)
    ids = [retriever.index.item_ids[int(r)] for r in live]
    rows = []
    for mode, label in (("like", "like=ID (more like this)"),
                        ("vector", "vector = the item's embedding")):
        row = {"query": label, **run(retriever, ids, live, items, mode=mode, k=args.k)}
        rows.append(row)
        print(row, flush=True)
    flat = {"query": "exhaustive cosine (flat exact, for reference)",
            **exhaustive(live, items, args.k)}
    rows.append(flat)
    print(flat, flush=True)
    manifest = retriever.manifest
    write_report(
        args.out, "query_by_example",
        title=f"Query by example on {len(ids):,} items of {args.model.name}",
        columns=["query", "self@1", f"self@{args.k}", "neighbour cosine", "ms/query", "items"],
        rows=rows,
        settings={"model": str(args.model), "k": args.k, "max_items": args.max_items,
                  "threads": args.threads, "seed": args.seed, "batch": BATCH,
                  "scheme": retriever.index.config.scheme,
                  "level_sizes": list(retriever.index.level_sizes),
                  "corpus": manifest.get("corpus", {}).get("path")},
        command="python benchmarks/query_by_example.py " + " ".join(sys.argv[1:]),
        machine=machine, seconds=time.perf_counter() - started,
        notes=["self@1: the example item is the first hit; self@k: among the first k. "
               "Neighbour cosine: mean cosine of the other hits to the example's embedding "
               "(the exhaustive row is the best any method can reach at this k).",
               "gcmr's search by example encodes the example into an identifier with the "
               "fitted scheme, takes the items that share its prefix (widening to shorter "
               "prefixes until there are enough candidates) and ranks them by cosine to the "
               "example (gcmr.search.example); it scores a few hundred candidates instead of "
               "every item.",
               f"Searched in batches of {BATCH}; ms/query is the batch time divided by its "
               f"queries."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
