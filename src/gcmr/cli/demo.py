"""``gcmr demo``: the whole pipeline on a synthetic world (synth -> index -> train -> eval).

Argument parsing and printing only; the pipeline is :func:`gcmr.bench.demo.run_demo`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from gcmr.bench.demo import DEMO_BATCH, DEMO_PRESET, DemoObserver, run_demo
from gcmr.cli.common import positive_int, print_table
from gcmr.cli.options import add_model_group, add_preset_option, load_preset_of, model_options


def register(sub: argparse._SubParsersAction) -> None:
    from gcmr.train.config import load_preset

    demo = load_preset(DEMO_PRESET)  # the defaults the help shows
    p = sub.add_parser("demo", help="run the whole pipeline on a synthetic world",
                       description="Build a synthetic world, validate it, build CART semantic "
                       "identifiers, train the generative retriever, evaluate it on the test "
                       "queries against the oracle ceiling, and measure search throughput.")
    p.add_argument("--out", type=Path, help="work directory to keep (default: a temporary one)")
    p.add_argument("--items", type=positive_int, default=2000, help="items (default 2000)")
    p.add_argument("--dim", type=positive_int, default=1024, help="embedding dim (default 1024)")
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs (default 5)")
    add_preset_option(p, default=DEMO_PRESET, overridden_by="--lr and the model flags")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: the preset's; {demo['train']['lr']:g} "
                   f"for {DEMO_PRESET})")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0 = torch's default, all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_group(p, defaults=demo["model"])
    p.epilog = ("The demo model (the demo preset) is smaller than the library default so that "
                "it trains in a few minutes on a CPU: d_model 128, 4 heads, FFN 512, 3 + 3 layers "
                "(--preset and the model flags override it; --epochs, --seed and --threads "
                "always apply). About 8 minutes on 2 idle cores.")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return _demo(args, args.out)
    with tempfile.TemporaryDirectory(prefix="gcmr-demo-") as tmp:
        return _demo(args, Path(tmp))


class _PrintIndexSummary(DemoObserver):
    """The library's stage headings and notes, plus the index health tables of `gcmr index`."""

    def index_built(self, index: Any, path: Path) -> None:
        from gcmr.cli.index import print_summary

        print_summary(index, path)


def _demo(args: argparse.Namespace, work: Path) -> int:
    result = run_demo(work, items=args.items, dim=args.dim, epochs=args.epochs, lr=args.lr,
                      threads=args.threads, seed=args.seed, model_options=model_options(args),
                      preset=load_preset_of(args), show_progress=not args.quiet,
                      observer=_PrintIndexSummary())
    print_table(f"gcmr demo: CART on {result.queries:,} test queries over "
                f"{result.candidates:,} items", ("metric", "value", "oracle ceiling",
                                                 "of oracle"), result.rows)
    print_table("cost", ("stage", "value"), [
        *[(f"{k} (s)", f"{v:.1f}") for k, v in result.timings.items()],
        ("training pairs", f"{result.num_pairs:,}"),
        ("epochs (selected)", f"{result.epochs_run} ({result.best_epoch})"),
        (f"search throughput (batch {DEMO_BATCH}, {result.search})",
         f"{result.queries_per_s:,.0f} queries/s"),
    ])
    if args.out is not None:
        print(f"artifacts kept in {work} (corpus/, index/, model/)")
    return 0
