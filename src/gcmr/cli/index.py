"""Index verb: ``gcmr index CORPUS OUT`` builds semantic identifiers (CART and baselines)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gcmr.cli.common import print_json, print_table
from gcmr.cli.options import INDEX_OPTIONS, add_options, changes_from, flag_names, options_for

# the help's group of each built-in scheme (gcmr.ids.config.SCHEME_FIELDS says which options
# it reads); an option is listed under the first scheme that reads it
SCHEME_TITLES = {
    "cart": "cart: coarse K-Means token + RQ-VAE fine tokens on the residual (default)",
    "rq": "rq: RQ-VAE only, M + 1 levels (CART w/o K-Means)",
    "hkmeans": "hkmeans: hierarchical K-Means, M + 1 levels (CART w/o RQ-VAE)",
    "atomic": "atomic: one token per item",
    "random": "random: M + 1 keyed-hash tokens",
    "avg": "avg: AVG aligned vokens",
}


def register(sub: argparse._SubParsersAction) -> None:
    # gcmr.ids.config only: gcmr.ids pulls in torch, and `gcmr --help` must stay fast
    from gcmr.ids.config import COMMON_FIELDS, SCHEME_FIELDS, IndexConfig, schemes_using

    p = sub.add_parser(
        "index", help="build semantic identifiers for a corpus",
        description="Fit an identifier scheme on the corpus embeddings and write the index "
        "directory (manifest, ids.npy, item ids, trie and scheme tensors). CART: coarse "
        "K-Means token + RQ-VAE fine tokens on the residual + unique counter. Prints per-level "
        "codebook utilization, entropy, dead codes and the collision rate, and warns about "
        "degenerate data (all-zero or duplicate embedding rows, a collision rate that says the "
        "embeddings carry no information). Options are grouped by the schemes that read them; "
        "an option the chosen scheme ignores is refused.")
    p.add_argument("corpus", type=Path, help="corpus directory")
    p.add_argument("out", type=Path, help="output index directory")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the build; 0 = torch's choice (default 1: on a busy "
                   "2-core machine two threads made the 5k index 4x slower than one)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    common = p.add_argument_group("every scheme")
    common.add_argument("--config", type=Path, default=None,
                        help="IndexConfig JSON file (any fields); the options below override it")
    add_options(common, IndexConfig, options_for(INDEX_OPTIONS, COMMON_FIELDS))
    flags = flag_names(INDEX_OPTIONS)
    placed: set[str] = set(COMMON_FIELDS)
    for scheme, fields in SCHEME_FIELDS.items():
        own = [o for o in INDEX_OPTIONS if o.field in fields and o.field not in placed]
        earlier = [flags[f] for f in flags if f in fields and f in placed - COMMON_FIELDS]
        if earlier:
            description = "also reads " + ", ".join(earlier)
        elif not own:
            description = "reads only the options of every scheme"
        else:
            description = None
        g = p.add_argument_group(SCHEME_TITLES.get(scheme, scheme), description)
        add_options(g, IndexConfig, own, suffix={
            o.field: f" [{', '.join(schemes_using(o.field))}]" for o in own})
        placed.update(o.field for o in own)
    p.set_defaults(func=cmd_index)


def config_from_args(args: argparse.Namespace) -> Any:
    """The IndexConfig of ``--config`` (or the defaults) with the flags given applied; flags
    the resulting scheme does not read are refused (:meth:`IndexConfig.check_options`)."""
    from gcmr.errors import ConfigError
    from gcmr.ids.config import IndexConfig

    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"{args.config}: no such config file")
    config = IndexConfig.from_file(args.config) if args.config else IndexConfig()
    changes = changes_from(args, INDEX_OPTIONS)
    config = config.replace(**changes)  # __post_init__ validates the result
    config.check_options(changes, names=flag_names(INDEX_OPTIONS))
    if config.additive:
        from gcmr.ids.config import RQVAE_FIELDS
        from gcmr.progress import note

        unused = [name for field, name in flag_names(INDEX_OPTIONS).items()
                  if field in changes and field in RQVAE_FIELDS]
        if unused:
            note(f"{', '.join(unused)}: RQ-VAE options, unused with --fine-quantizer kmeans "
                 f"(the default; --fine-quantizer rqvae trains CART's RQ-VAE)")
    return config


def cmd_index(args: argparse.Namespace) -> int:
    import warnings

    from gcmr.artifacts import recover
    from gcmr.corpus import load_corpus
    from gcmr.errors import ArtifactError
    from gcmr.ids import build_index
    from gcmr.ids.stats import DataWarning

    config = config_from_args(args)
    recover(args.out)  # an interrupted earlier write: put the old index back first
    if args.out.exists() and not args.overwrite:  # fail before the (long) fit
        raise ArtifactError(f"{args.out} already exists (use --overwrite to replace it)")
    corpus = load_corpus(args.corpus, load_captions=False)
    with warnings.catch_warnings():  # printed below as one line each, and saved in the stats
        warnings.simplefilter("ignore", DataWarning)
        index = build_index(corpus, config, show_progress=not (args.quiet or args.json),
                            threads=max(0, args.threads))
    index.save(args.out, overwrite=args.overwrite)
    print_warnings(index.stats.get("warnings", []), corpus.path)
    if args.json:
        print_json({"index": str(args.out), "scheme": index.config.scheme,
                    "level_sizes": index.level_sizes, "stats": index.stats,
                    "timing": index.timing, "config": index.config.to_dict()})
        return 0
    print_summary(index, args.out)
    return 0


def print_warnings(messages: list[str], corpus_path: Path) -> None:
    """Each degenerate-data warning of the build on stderr (also in the manifest's stats)."""
    from rich.markup import escape

    from gcmr.progress import err_console

    for message in messages:
        text = escape(f"{corpus_path}: {message}")
        err_console.print(f"[bold yellow]warning:[/bold yellow] {text}", highlight=False,
                          soft_wrap=True)


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
