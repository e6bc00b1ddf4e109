"""Identifier sizes for additive identifiers at 5k and 100k items: how well can generation
that scores codes by the query vector rank, for each size choice?

Trained generation is hours per row at 100k items on a 2-core CPU, so this measures the
ceiling that the default code vectors aim at instead: a dense tower is trained once per world
(`gcmr train-dense`, the bench budget), each index variant is built with the default
additive identifiers (text projection + residual K-Means), every code gets its least-squares
item-space vector (`gcmr.train.code_vectors.fit_code_vectors`, as training does), and the
test queries are ranked by `<q, x_hat>` over every item (exact, no beam). Beside it: the
largest group of items on one semantic id (the counter's size), the share of items that need
a counter, and the identifier length.

    python benchmarks/additive_sizes.py --work /tmp/gcmr-bench/sizes --items 5000,100000

Worlds, indexes and dense towers are reused by a re-run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gcmr.bench.report import machine_info, write_report

# name -> gcmr index flags (every variant: the default additive identifiers)
VARIANTS = {
    "fixed 128 x 128 x 128 (the default)": [],
    "sizes from N (--clusters 0 --codebook-size 0)": ["--clusters", "0", "--codebook-size", "0"],
    "fixed 128, 3 fine levels (--levels 3)": ["--levels", "3"],
    "fixed 256 x 256 x 256": ["--clusters", "256", "--codebook-size", "256"],
}
DENSE = ["--d-model", "64", "--heads", "4", "--ffn", "256",
         "--encoder-layers", "2", "--lr", "0.002", "--batch-size", "256", "--quiet"]


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def ranking(index_dir: Path, world: Path, q: np.ndarray, relevant: list[set[int]]) -> dict:
    from gcmr.ids import load_index
    from gcmr.train.code_vectors import fit_code_vectors

    index = load_index(index_dir)
    items = np.load(world / "embeddings.npy", mmap_mode="r")
    sizes = list(index.level_sizes)
    vectors, info = fit_code_vectors(index.codes, items, sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    recon = sum(vectors[offsets[lvl] + index.codes[:, lvl]] for lvl in range(len(sizes)))
    top = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), 256):
        top[start:start + 256] = (q[start:start + 256] @ recon.T).argmax(1)
    semantic = index.codes[:, :-1]
    _, counts = np.unique(semantic, axis=0, return_counts=True)
    return {"R@1 of <q, x_hat>": round(float(np.mean([t in r for t, r in zip(top, relevant)])), 4),
            "identifier": "x".join(str(s) for s in sizes),
            "max group": int(counts.max()),
            "items with counter > 0": round(float((index.codes[:, -1] > 0).mean()), 4),
            "reconstruction error": info["relative_error"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gcmr-bench/sizes"))
    ap.add_argument("--items", default="5000,100000")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/additive_sizes"))
    args = ap.parse_args()
    gcmr = [sys.executable, "-m", "gcmr"]
    machine = machine_info()
    started = time.perf_counter()
    rows = []
    for n in [int(v) for v in args.items.split(",")]:
        world = args.work / f"w{n}"
        if not (world / "corpus.json").is_file():
            run(gcmr + ["synth", str(world), "--items", str(n), "--seed", "0"])
        dense = args.work / f"dense{n}"
        if not (dense / "manifest.json").is_file():
            # the bench budget's 4 epochs at 5k; one epoch (600k pairs) at 100k
            epochs = max(1, round(4 * 5000 / n))
            run(gcmr + ["train-dense", str(world), str(dense), "--overwrite", "--epochs",
                        str(epochs), *DENSE])
        from gcmr.search.dense import DenseRetriever

        tower = DenseRetriever.load(dense, device="cpu")
        lines = (world / "queries" / "test.jsonl").read_text().splitlines()[:args.queries]
        queries = [json.loads(line) for line in lines]
        row_of = {item: i for i, item in enumerate(
            json.loads(line)["id"] for line in (world / "items.jsonl").open())}
        relevant = [{row_of[x] for x in qq["relevant"]} for qq in queries]
        q = np.concatenate([tower.encode_queries([qq["text"] for qq in queries[s:s + 256]])
                            for s in range(0, len(queries), 256)])
        exact = (q @ np.asarray(tower.items, dtype=np.float32).T).argmax(1)
        rows.append({"items": n, "identifiers": "dense tower, exact (the ceiling)",
                     "R@1 of <q, x_hat>": round(float(np.mean(
                         [t in r for t, r in zip(exact, relevant)])), 4)})
        for name, flags in VARIANTS.items():
            idx = args.work / f"idx{n}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
            if not (idx / "manifest.json").is_file():
                run(gcmr + ["index", str(world), str(idx), "--quiet", "--overwrite", *flags])
            rows.append({"items": n, "identifiers": name,
                         **ranking(idx, world, q, relevant)})
            print(rows[-1], flush=True)
    columns = ["items", "identifiers", "R@1 of <q, x_hat>", "identifier", "max group",
               "items with counter > 0", "reconstruction error"]
    notes = [
        "Not trained generation: the ceiling that code vectors aim at. q = a dense tower's "
        "query vector (gcmr train-dense, d_model 64, 4 epochs at 5k items, 1 at 100k); x_hat = the sum of each item's "
        "least-squares code vectors; every item ranked exactly (no beam).",
        "Every variant uses the default additive identifiers (gcmr index defaults: text "
        "projection of rank 64 on the captions' TF-IDF, residual K-Means fine levels).",
    ]
    write_report(args.out, "additive_sizes", title="Identifier sizes for additive identifiers",
                 columns=columns, rows=rows,
                 settings={"items": args.items, "queries": args.queries, "dense": DENSE,
                           "variants": VARIANTS},
                 command="python " + " ".join(sys.argv), machine=machine, notes=notes,
                 seconds=time.perf_counter() - started)
    print((args.out / "additive_sizes.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
