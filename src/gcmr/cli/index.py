"""Index verb: ``gcmr index CORPUS OUT`` builds semantic identifiers (CART and baselines)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gcmr.cli.common import positive_int, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    # no gcmr.ids import here: it pulls in torch, and `gcmr --help` must stay fast
    p = sub.add_parser(
        "index", help="build semantic identifiers for a corpus",
        description="Fit an identifier scheme on the corpus embeddings and write the index "
        "directory (manifest, ids.npy, item ids, trie and scheme tensors). CART: coarse "
        "K-Means token + RQ-VAE fine tokens on the residual + unique counter. Prints per-level "
        "codebook utilization, entropy, dead codes and the collision rate.")
    p.add_argument("corpus", type=Path, help="corpus directory")
    p.add_argument("out", type=Path, help="output index directory")
    p.add_argument("--scheme", default=None,
                   help="identifier scheme: cart (default), rq, hkmeans, atomic, random, or one "
                   "registered by an extension (e.g. avg)")
    p.add_argument("--config", type=Path, default=None,
                   help="IndexConfig JSON file; the options below override it")
    p.add_argument("--clusters", type=positive_int, default=None,
                   help="coarse K-Means clusters K (default 128)")
    p.add_argument("--codebook-size", type=positive_int, default=None,
                   help="vectors per RQ codebook (default 128)")
    p.add_argument("--levels", type=positive_int, default=None,
                   help="fine RQ levels M (default 2; rq/hkmeans/random use M + 1 levels)")
    p.add_argument("--epochs", type=positive_int, default=None, help="RQ-VAE epochs")
    p.add_argument("--max-steps", type=int, default=None,
                   help="RQ-VAE optimizer step cap (0 = none)")
    p.add_argument("--max-fit-items", type=positive_int, default=None,
                   help="fit on a seeded subsample of at most this many items")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    g = p.add_argument_group("AVG aligned vokens (--scheme avg)")
    g.add_argument("--vokens", type=positive_int, default=None,
                   help="voken length M (default 4, AVG table 5)")
    g.add_argument("--voken-codebook-size", type=positive_int, default=None,
                   help="voken codebook entries N (default 1024, AVG table 4)")
    g.add_argument("--per-step-codebooks", action="store_true",
                   help="one codebook per quantization step instead of AVG's shared one")
    g.add_argument("--align-weight", type=float, default=None,
                   help="weight of the caption alignment loss (default 1; 0 = 'w/o alignment')")
    g.add_argument("--text-encoder", default=None,
                   help="caption text encoder when the corpus has no caption_embeddings.npy: "
                   "minilm (default, offline), sentence-transformers:SRC, or a CLIP/CLAP text "
                   "tower spec (see gcmr embed --help)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the build; 0 = torch's choice (default 1: on a busy "
                   "2-core machine two threads made the 5k index 4x slower than one)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_index)


OPTION_FIELDS = {
    "scheme": "scheme", "clusters": "num_clusters", "codebook_size": "codebook_size",
    "levels": "num_fine_levels", "epochs": "epochs", "max_steps": "max_steps",
    "max_fit_items": "max_fit_items", "seed": "seed", "vokens": "voken_length",
    "voken_codebook_size": "voken_codebook_size", "align_weight": "align_weight",
    "text_encoder": "text_encoder",
}


def config_from_args(args: argparse.Namespace) -> Any:
    from gcmr.errors import ConfigError
    from gcmr.ids import IndexConfig

    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"{args.config}: no such config file")
    config = IndexConfig.from_file(args.config) if args.config else IndexConfig()
    changes = {field: getattr(args, opt) for opt, field in OPTION_FIELDS.items()
               if getattr(args, opt) is not None}
    if args.per_step_codebooks:
        changes["shared_codebook"] = False
    config = config.replace(**changes)  # __post_init__ validates the result
    return config


def cmd_index(args: argparse.Namespace) -> int:
    from gcmr.corpus import load_corpus
    from gcmr.errors import ArtifactError
    from gcmr.ids import build_index

    config = config_from_args(args)
    if args.out.exists() and not args.overwrite:  # fail before the (long) fit
        raise ArtifactError(f"{args.out} already exists (use --overwrite to replace it)")
    corpus = load_corpus(args.corpus, load_captions=False)
    index = build_index(corpus, config, show_progress=not (args.quiet or args.json),
                        threads=max(0, args.threads))
    index.save(args.out, overwrite=args.overwrite)
    if args.json:
        print_json({"index": str(args.out), "scheme": index.config.scheme,
                    "level_sizes": index.level_sizes, "stats": index.stats,
                    "timing": index.timing, "config": index.config.to_dict()})
        return 0
    print_summary(index, args.out)
    return 0


def print_summary(index: Any, out: Path) -> None:
    """The per-level health table and the identifier summary."""
    stats = index.stats
    rows = [(lvl["name"], lvl["size"], lvl["used"], f"{100 * lvl['utilization']:.1f}%",
             f"{lvl['entropy_bits']:.2f}", f"{lvl['entropy_norm']:.3f}", lvl["dead_codes"])
            for lvl in stats["levels"]]
    print_table(f"index {out} ({index.config.scheme}, {index.num_items:,} items, "
                f"length {index.length})",
                ("level", "size", "used", "utilization", "entropy (bits)", "entropy / max",
                 "dead codes"), rows)
    t = index.timing
    summary = [
        ("semantic ids (before unique token)", f"{stats['semantic_ids']:,}"),
        ("collision rate (items needing counter > 0)", f"{100 * stats['collision_rate']:.2f}%"),
        ("items in colliding groups", f"{100 * stats['colliding_items']:.2f}%"),
        ("max group size", stats["max_group_size"]),
        ("unique identifiers", f"{stats['unique_ids_pct']:.2f}%"),
        ("vocabulary (level-tagged tokens)", f"{index.vocab_size:,}"),
        ("time: fit / encode / trie+stats / total (cpu)",
         (f"{t['fit_s']:.1f}s / {t['encode_s']:.1f}s / {t['trie_and_stats_s']:.1f}s / "
         f"{t['total_s']:.1f}s ({t['cpu_s']:.1f}s cpu, {t['threads']} threads)")),
    ]
    rq = stats.get("fit", {}).get("rqvae") or {}
    if isinstance(rq.get("final_loss"), float):
        summary.append(("RQ-VAE steps / final loss (recon, quant)",
                        (f"{rq.get('steps')} / {rq['final_loss']:.4f} "
                        f"({rq.get('final_recon', float('nan')):.4f}, "
                        f"{rq.get('final_quant', float('nan')):.4f})")))
    if "restarted_codes" in rq:
        summary.append(("RQ-VAE dead codes restarted per level", str(rq["restarted_codes"])))
    if "codebook_used" in rq:  # AVG: one shared codebook (or one per step)
        summary.append(("voken codebook entries used (per step)",
                        f"{rq['codebook_used']} ({rq.get('used_per_step')})"))
    if isinstance(rq.get("final_align"), float):
        summary.append(("alignment loss / cosine to caption text",
                        f"{rq['final_align']:.4f} / {rq.get('align_cos', float('nan')):.3f}"))
    print_table("identifiers", ("field", "value"), summary)
