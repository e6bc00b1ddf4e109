"""Speed of constrained beam search (issue 3 targets) against exact dense search, on this CPU.

Random-weight models of several sizes decode random token queries (length ~10) against random
clustered identifiers shaped like CART's (128 coarse codes, 2 x 128 fine codes, a unique
counter) for 10k / 100k / 1M items. Measured in one run:

- throughput, batch of 100 queries, beam 10 and beam 20, per model size and index size;
- single-query latency p50 / p99 (beam 10, largest index);
- exact dense search over 1M x 512 float32 (chunked matmul + top-k), batch of 100 queries;
- a torch.profiler breakdown of one batched search: share of CPU time outside matmul /
  attention kernels, and the wall-clock share of the search's own bookkeeping (trie gather,
  masking, top-k, cache reordering) outside the model calls.

Targets (goals, not tests): >= 200 queries/s at batch 100 / beam 10 and faster than dense;
p50 <= 20 ms; < 15 % throughput change from 10k to 1M items; < 20 % outside matmul/attention.

    python benchmarks/decode_speed.py                 # full run, ~2-4 minutes on 2 cores
    python benchmarks/decode_speed.py --quick         # smaller smoke run

Writes ``benchmarks/results/decode_speed_<n>thread(s).json`` and ``.md`` (machine, load average
before and after, settings, numbers). Wall-clock numbers are only meaningful on idle cores; the
CPU seconds beside them (with ``--threads 1``) show the work itself when the machine is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gcmr.ids.trie import Trie
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.search.beam import constrained_beam_search

SIZES = {  # name: (d_model, n_heads, d_ff); ModelConfig's default is d192
    "d128": (128, 4, 512),
    "d192": (192, 4, 768),
    "d256": (256, 4, 1024),
}
MATMUL_OPS = ("addmm", "mm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "_efficient_attention")


def clustered_codes(n: int, *, coarse: int = 128, fine: int = 128, fine_levels: int = 2,
                    seed: int = 0) -> np.ndarray:
    """Unique identifiers [n, 2 + fine_levels] shaped like CART's, fully vectorized.

    Coarse codes follow skewed cluster sizes (Dirichlet weights, like k-means on real data);
    within a coarse cluster the first fine code concentrates around a cluster-specific centre
    (residuals of one cluster are correlated) and the next ones spread wider; the last column is
    the unique counter, the rank of an item among items with the same prefix (group by sort).
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(coarse, 2.0))
    cols = [rng.choice(coarse, size=n, p=weights)]
    for level in range(fine_levels):
        centre = rng.integers(0, fine, size=coarse)
        spread = fine / 8 * 4 ** level
        jitter = np.rint(rng.normal(0.0, spread, size=n)).astype(np.int64)
        cols.append((centre[cols[0]] + jitter) % fine)
    prefix = np.stack(cols, axis=1)
    key = np.ravel_multi_index(prefix.T, [coarse] + [fine] * fine_levels)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    group_start = np.flatnonzero(starts)[np.cumsum(starts) - 1]
    counter = np.empty(n, dtype=np.int64)
    counter[order] = np.arange(n) - group_start
    return np.concatenate([prefix, counter[:, None]], axis=1)


def random_queries(b: int, *, vocab: int, seed: int, length: int = 10):
    """Random token ids [b, T] with lengths length-2 .. length+2 and their padding mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length - 2, length + 3, (b,), generator=g)
    t = int(lengths.max())
    mask = torch.arange(t) < lengths.unsqueeze(1)
    ids = torch.randint(2, vocab, (b, t), generator=g).masked_fill(~mask, 0)
    return ids, mask


def _config_default() -> tuple[int, int, int]:
    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    return fields["d_model"], fields["n_heads"], fields["d_ff"]


def make_model(size: str, level_sizes: list[int], vocab: int) -> GenerativeRetrievalModel:
    d, h, f = SIZES[size]
    cfg = ModelConfig(vocab_size=vocab, level_sizes=level_sizes, d_model=d, n_heads=h, d_ff=f)
    return GenerativeRetrievalModel(cfg).eval()


def timed(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of ``repeats`` calls after a warm-up.

    CPU time shows how much work a call is when other processes share the cores (then wall
    time grows but CPU time does not)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


@torch.no_grad()
def dense_search(items: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 131072):
    """Exact inner-product top-k over ``items`` in chunks (the dense baseline)."""
    best_s = best_i = None
    for start in range(0, items.shape[0], chunk):
        s, i = (queries @ items[start:start + chunk].T).topk(k, dim=1)
        i += start
        if best_s is None:
            best_s, best_i = s, i
        else:
            best_s, pick = torch.cat([best_s, s], 1).topk(k, dim=1)
            best_i = torch.cat([best_i, i], 1).gather(1, pick)
    return best_s, best_i


def profile_search(model, ids, mask, trie, beam: int) -> dict:
    """Profiler op breakdown and the wall-clock share of beam-search bookkeeping."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        constrained_beam_search(model, ids, mask, trie, beam=beam)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            constrained_beam_search(model, ids, mask, trie, beam=beam)
    def kind(name: str) -> str:
        bare = name.split("::")[-1]
        if any(a in bare for a in ATTENTION_OPS):
            return "attention"
        if bare in MATMUL_OPS:
            return "matmul"
        return "other"

    # self time of every op, charged to its outermost matmul/attention ancestor if it has one
    # (addmm copies its bias into the output: that copy is part of the matmul)
    shares = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    other_ops: dict[str, float] = {}
    for event in prof.events():
        category, node = "other", event
        while node is not None:
            if kind(node.name) != "other":
                category = kind(node.name)
            node = node.cpu_parent
        shares[category] += event.self_cpu_time_total
        if category == "other":
            other_ops[event.name] = other_ops.get(event.name, 0.0) + event.self_cpu_time_total
    total = sum(shares.values())
    shares = {key: value / total for key, value in shares.items()}
    others = sorted(((us / total, n) for n, us in other_ops.items()), reverse=True)[:12]

    # wall clock: time inside the model's calls vs the whole search (the rest is bookkeeping)
    spent = {"model": 0.0}

    def wrap(fn):
        def inner(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent["model"] += time.perf_counter() - t0
            return out
        return inner

    for name in ("encode", "decode_step", "level_log_probs"):
        setattr(model, name, wrap(getattr(model, name)))
    try:
        totals = []
        models = []
        for _ in range(3):
            spent["model"] = 0.0
            t0 = time.perf_counter()
            constrained_beam_search(model, ids, mask, trie, beam=beam)
            totals.append(time.perf_counter() - t0)
            models.append(spent["model"])
    finally:
        for name in ("encode", "decode_step", "level_log_probs"):
            delattr(model, name)
    bookkeeping = [1 - m / t for m, t in zip(models, totals)]
    return {
        "profiler_total_ms": round(total / 1000, 1),
        "share_matmul": round(shares["matmul"], 4),
        "share_attention": round(shares["attention"], 4),
        "share_outside_matmul_attention": round(shares["other"], 4),
        "top_other_ops": [{"op": n, "share": round(s, 4)} for s, n in others],
        "wall_share_search_bookkeeping": round(statistics.median(bookkeeping), 4),
    }


def machine_info(threads: int) -> dict:
    from gcmr.bench.report import cpu_model

    cpu = cpu_model()
    return {
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", default="d128,d192,d256", help="model sizes to time")
    p.add_argument("--items", default="10000,100000,1000000", help="index sizes")
    p.add_argument("--beams", default="10,20")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--dense-items", type=int, default=1_000_000)
    p.add_argument("--dense-dim", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--quick", action="store_true", help="small smoke run (10k/100k, 2 repeats)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.repeats, args.latency_queries, args.dense_items = "10000,100000", 2, 20, 100_000
    torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",")
    item_counts = [int(x) for x in args.items.split(",")]
    beams = [int(x) for x in args.beams.split(",")]
    result: dict = {"machine": machine_info(args.threads), "load_before": load_average(),
                    "settings": {k: v for k, v in vars(args).items() if k != "out"},
                    "model_sizes": {s: dict(zip(("d_model", "n_heads", "d_ff"), SIZES[s]))
                                    for s in sizes},
                    "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    ids, mask = random_queries(args.batch, vocab=args.vocab, seed=0)
    single = random_queries(args.latency_queries, vocab=args.vocab, seed=1)

    indexes = []
    for n in item_counts:
        t0 = time.perf_counter()
        codes = clustered_codes(n, seed=n)
        level_sizes = [128, 128, 128, int(codes[:, 3].max()) + 1]
        trie = Trie.build(codes, level_sizes)
        info = {"items": n, "level_sizes": level_sizes, "trie_nodes": trie.num_nodes,
                "trie_max_degree": trie.max_degree,
                "build_s": round(time.perf_counter() - t0, 2)}
        print(f"index {n:>9,}: levels {level_sizes}, max degree {trie.max_degree}", flush=True)
        indexes.append((info, trie))
    result["indexes"] = [info for info, _ in indexes]

    runs = []
    for size in sizes:
        for info, trie in indexes:
            model = make_model(size, info["level_sizes"], args.vocab)
            for beam in beams:
                times, cpu = timed(
                    lambda: constrained_beam_search(model, ids, mask, trie, beam=beam),
                    args.repeats)
                qps = args.batch / statistics.median(times)
                runs.append({"size": size, "items": info["items"], "beam": beam,
                             "batch": args.batch, "queries_per_s": round(qps, 1),
                             "batch_ms_median": round(1000 * statistics.median(times), 1),
                             "batch_ms_all": [round(1000 * t, 1) for t in times],
                             "cpu_s_per_batch_median": round(statistics.median(cpu), 3)})
                print(f"{size:>8} {info['items']:>9,} items beam {beam:>2}: {qps:7.1f} q/s "
                      f"(cpu {statistics.median(cpu):.2f} s per batch)", flush=True)
    result["throughput"] = runs

    latency = []
    info, trie = indexes[-1]
    for size in sizes:
        model = make_model(size, info["level_sizes"], args.vocab)
        q_ids, q_mask = single
        ms, cpu_ms = [], []
        with torch.no_grad():
            constrained_beam_search(model, q_ids[:1], q_mask[:1], trie, beam=10)
            for i in range(q_ids.shape[0]):
                length = int(q_mask[i].sum())
                t0, c0 = time.perf_counter(), time.process_time()
                constrained_beam_search(model, q_ids[i:i + 1, :length], q_mask[i:i + 1, :length],
                                        trie, beam=10)
                ms.append(1000 * (time.perf_counter() - t0))
                cpu_ms.append(1000 * (time.process_time() - c0))
        latency.append({"size": size, "items": info["items"], "beam": 10,
                        "p50_ms": round(float(np.percentile(ms, 50)), 2),
                        "p99_ms": round(float(np.percentile(ms, 99)), 2),
                        "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 2)})
        print(f"{size:>8} single query: p50 {latency[-1]['p50_ms']} ms, "
              f"p99 {latency[-1]['p99_ms']} ms (cpu p50 {latency[-1]['cpu_p50_ms']} ms)",
              flush=True)
    result["latency"] = latency

    g = torch.Generator().manual_seed(0)
    items = torch.randn(args.dense_items, args.dense_dim, generator=g)
    dq = torch.randn(args.batch, args.dense_dim, generator=g)
    times, cpu = timed(lambda x=items: dense_search(x, dq, 10), max(2, args.repeats // 2))
    result["dense"] = {"items": args.dense_items, "dim": args.dense_dim, "batch": args.batch,
                       "k": 10, "queries_per_s": round(args.batch / statistics.median(times), 1),
                       "batch_ms_all": [round(1000 * t, 1) for t in times],
                       "cpu_s_per_batch_median": round(statistics.median(cpu), 3)}
    print(f"dense exact {args.dense_items:,} x {args.dense_dim}: "
          f"{result['dense']['queries_per_s']} q/s", flush=True)
    del items

    default = next((s for s in sizes if SIZES[s] == _config_default()), sizes[-1])
    model = make_model(default, info["level_sizes"], args.vocab)
    result["profile"] = {"size": default, "items": info["items"], "beam": 10,
                         **profile_search(model, ids, mask, trie, beam=10)}
    print(f"profile ({default}): outside matmul/attention "
          f"{result['profile']['share_outside_matmul_attention']:.1%}, search bookkeeping "
          f"{result['profile']['wall_share_search_bookkeeping']:.1%} of wall time", flush=True)
    result["load_after"] = load_average()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"decode_speed_{args.threads}thread{'s' if args.threads > 1 else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {stem}.json and {stem}.md")
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Constrained beam search speed",
        "",
        f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs, torch {m['torch']}, "
        f"{m['torch_threads']} threads, float32, random-weight models, random clustered "
        f"CART-shaped identifiers. Load average before / after: {r['load_before']} / "
        f"{r['load_after']} ({r['started']} - {r['finished']}).",
        "",
    ]
    busy = max(r["load_before"] + r["load_after"], default=0.0)
    if busy > (m["usable_cpus"] or 1) - m["torch_threads"] + 0.5:
        lines += [f"**The machine was shared (load average up to {busy} on {m['usable_cpus']} "
                  f"CPUs): wall-clock numbers include waiting for other processes; with several "
                  f"threads they also include threads spinning while a sibling is descheduled. "
                  f"CPU seconds per batch show the work itself.**", ""]
    lines += [
        "## Throughput (queries/s, batch of %d)" % r["settings"]["batch"],
        "",
        "| model (d/heads/ffn) | items | levels | beam | queries/s | ms per batch | CPU s per batch |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    levels = {i["items"]: i["level_sizes"] for i in r["indexes"]}
    for run in r["throughput"]:
        s = r["model_sizes"][run["size"]]
        lines.append(f"| {run['size']} ({s['d_model']}/{s['n_heads']}/{s['d_ff']}) | "
                     f"{run['items']:,} | {levels[run['items']]} | {run['beam']} | "
                     f"{run['queries_per_s']} | {run['batch_ms_median']} | "
                     f"{run['cpu_s_per_batch_median']} |")
    d = r["dense"]
    lines += ["", f"Exact dense search (matmul + top-10, chunked), {d['items']:,} x {d['dim']} "
                  f"float32, batch {d['batch']}: **{d['queries_per_s']} queries/s** "
              f"({d['cpu_s_per_batch_median']} CPU s per batch).", "",
              "## Throughput change from the smallest to the largest index (beam 10)", ""]
    for size in r["model_sizes"]:
        rows = [x for x in r["throughput"] if x["size"] == size and x["beam"] == 10]
        if len(rows) >= 2:
            a, b = rows[0], rows[-1]
            change = (b["queries_per_s"] - a["queries_per_s"]) / a["queries_per_s"]
            lines.append(f"- {size}: {a['items']:,} -> {b['items']:,} items: {change:+.1%}")
    lines += ["", "## Single-query latency (beam 10, largest index)", "",
              "| model | p50 ms | p99 ms | CPU ms p50 |", "|---|---:|---:|---:|"]
    for x in r["latency"]:
        lines.append(f"| {x['size']} | {x['p50_ms']} | {x['p99_ms']} | {x['cpu_p50_ms']} |")
    p = r["profile"]
    lines += ["", f"## Profile of one batched search ({p['size']}, {p['items']:,} items, beam "
                  f"{p['beam']})", "",
              f"- CPU time in matmul kernels {p['share_matmul']:.1%}, attention kernels "
              f"{p['share_attention']:.1%}, **everything else {p['share_outside_matmul_attention']:.1%}**"
              " (layer norm, activations, residual adds, copies, masking, top-k, gathers)",
              f"- wall time of the search's own bookkeeping outside the model calls (trie gather, "
              f"masking, top-k, cache reorder): **{p['wall_share_search_bookkeeping']:.1%}**",
              "- largest other ops: " + ", ".join(f"{o['op']} {o['share']:.1%}"
                                                  for o in p["top_other_ops"][:8]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
