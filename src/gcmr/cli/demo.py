"""``gcmr demo``: the whole pipeline on a synthetic world (synth -> index -> train -> eval)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gcmr.cli.common import positive_int, print_table
from gcmr.cli.retrieval import add_model_options, model_options
from gcmr.progress import err_console

# A CPU-sized model for the demo: the library default (d_model 192 / FFN 768, chosen for
# search speed) trains at ~20-60 pairs/s on two CPU cores, too slow for a first run. This one
# trains at ~200 pairs/s and keeps the architecture (3 + 3 layers, CART fusion); any model flag
# overrides it. Measured (benchmarks/model_size.sh): d_model 64 trains 2x faster but reaches
# R@1 0.105 where 128 reaches 0.450, so the demo uses 128 on a smaller world.
DEMO_MODEL = {"d_model": 128, "n_heads": 4, "d_ff": 512}
DEMO_LR = 2e-3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic world",
                       description="Build a synthetic world, validate it, build CART semantic "
                       "identifiers, train the generative retriever, evaluate it on the test "
                       "queries against the oracle ceiling, and measure search throughput.")
    p.add_argument("--out", type=Path, help="work directory to keep (default: a temporary one)")
    p.add_argument("--items", type=positive_int, default=2000, help="items (default 2000)")
    p.add_argument("--dim", type=positive_int, default=1024, help="embedding dim (default 1024)")
    p.add_argument("--epochs", type=positive_int, default=8, help="training epochs (default 8)")
    p.add_argument("--lr", type=float, default=DEMO_LR,
                   help=f"peak learning rate (default {DEMO_LR:g})")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0 = torch's default, all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p, DEMO_MODEL)
    p.epilog = ("The demo model is smaller than the library default so that it trains in a few "
                "minutes on a CPU: d_model 128, 4 heads, FFN 512, 3 + 3 layers (the model flags "
                "override it). About 8 minutes on 2 idle cores.")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return run_demo(args, args.out)
    with tempfile.TemporaryDirectory(prefix="gcmr-demo-") as tmp:
        return run_demo(args, Path(tmp))


def run_demo(args: argparse.Namespace, work: Path) -> int:
    from gcmr.corpus import load_corpus, summarize
    from gcmr.corpus.synth import SynthConfig, synthesize
    from gcmr.evaluate.runner import evaluate
    from gcmr.ids import IndexConfig, build_index
    from gcmr.search.retriever import Retriever
    from gcmr.train import TrainConfig, train

    show = not args.quiet
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        err_console.rule(f"[bold]{name}")

    stage(f"1/4 synthetic world: {args.items:,} items, D = {args.dim}")
    t0 = time.perf_counter()
    corpus_dir = work / "corpus"
    synthesize(corpus_dir, SynthConfig(num_items=args.items, seed=args.seed, dim=args.dim),
               overwrite=True)
    corpus = load_corpus(corpus_dir)
    summary = summarize(corpus)
    timings["synth + validate"] = time.perf_counter() - t0
    err_console.print(f"valid corpus: {summary['items']:,} items, splits {summary['splits']}")

    stage("2/4 CART semantic identifiers")
    t0 = time.perf_counter()
    index = build_index(corpus, IndexConfig(scheme="cart", seed=args.seed), show_progress=show)
    index_dir = index.save(work / "index", overwrite=True)
    timings["index"] = time.perf_counter() - t0
    from gcmr.cli.index import print_summary

    print_summary(index, index_dir)

    stage("3/4 training the generative retriever")
    t0 = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr,
                         num_threads=max(0, args.threads))
    options = {**DEMO_MODEL, **model_options(args)}
    err_console.print("model: " + ", ".join(f"{k} {v}" for k, v in options.items())
                      + f"; {args.epochs} epochs, lr {args.lr:g}")
    result = train(index_dir, work / "model", config=config, model_options=options,
                   overwrite=True, show_progress=show)
    timings["train"] = time.perf_counter() - t0

    stage("4/4 evaluation on the test queries")
    retriever = Retriever.load(work / "model")
    report = evaluate(retriever, corpus, "test", k=10, beam=10)
    qps = measure_throughput(retriever, [q.text for q in corpus.split("test")], batch=100, beam=10)
    oracle = report["oracle"] or {}
    rows = [(m, v, oracle.get(m, "-"), f"{v / oracle[m]:.1%}" if oracle.get(m) else "-")
            for m, v in report["metrics"].items()]
    print_table(f"gcmr demo: CART on {report['queries']:,} test queries over "
                f"{report['candidates']:,} items", ("metric", "value", "oracle ceiling",
                                                    "of oracle"), rows)
    print_table("cost", ("stage", "value"), [
        *[(f"{k} (s)", f"{v:.1f}") for k, v in timings.items()],
        ("training pairs", f"{result.num_pairs:,}"),
        ("epochs (selected)", f"{result.epochs_run} ({result.best_epoch})"),
        ("search throughput (batch 100, beam 10)", f"{qps:,.0f} queries/s"),
    ])
    if args.out is not None:
        print(f"artifacts kept in {work} (corpus/, index/, model/)")
    return 0


def measure_throughput(retriever, texts: list[str], *, batch: int = 100, beam: int = 10,
                       repeats: int = 3) -> float:
    """Queries per second of batched search (best of ``repeats`` runs over one batch)."""
    texts = (texts * (batch // max(1, len(texts)) + 1))[:batch]
    retriever.search_rows(texts[: min(8, batch)], k=10, beam=beam)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        retriever.search_rows(texts, k=10, beam=beam, batch_size=batch)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best
