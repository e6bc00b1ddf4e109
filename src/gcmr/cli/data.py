"""Corpus verbs: ``validate`` and ``synth``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gcmr.cli.common import positive_int, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a corpus directory and summarize it",
                       description="Validate a corpus (format v1) and print a summary, or the "
                       "list of problems with file, line and field.")
    p.add_argument("corpus", type=Path, help="corpus directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("synth", help="write a synthetic benchmark world (corpus format v1)",
                       description="Write a synthetic cross-modal world: latent scenes, item "
                       "embeddings, captioner-style captions, human queries split 80/10/10, "
                       "and the oracle ceiling of any text-only retriever.")
    p.add_argument("out", type=Path, help="output corpus directory")
    p.add_argument("--config", type=Path, help="SynthConfig JSON (typo rate, queries per item, "
                   "noise, ...); the flags below override it")
    p.add_argument("--items", type=positive_int, help="number of items (default 5000)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--dim", type=positive_int, help="embedding dimension (default 1024)")
    p.add_argument("--dtype", choices=("float32", "float16"), help="default float32")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_synth)


def cmd_validate(args: argparse.Namespace) -> int:
    from gcmr.corpus import load_corpus, summarize

    summary = summarize(load_corpus(args.corpus))
    if args.json:
        print_json(summary)
        return 0
    caps = summary["captions_per_item"]
    rows = [
        ("name", summary["name"]),
        ("modality", summary["modality"]),
        ("embedding model", summary["embedding_model"]),
        ("items", f"{summary['items']:,}"),
        ("dim / dtype", f"{summary['dim']} / {summary['dtype']}"),
        ("captions per item", f"mean {caps['mean']:.2f} (min {caps['min']}, max {caps['max']})"),
    ]
    rows += [(f"queries: {name}", f"{n:,}") for name, n in summary["splits"].items()]
    if summary["oracle"]:
        for split, metrics in summary["oracle"].items():
            rows.append((f"oracle: {split}", ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())))
    rows.append(("caption embeddings", "yes" if summary["caption_embeddings"] else "no"))
    rows.append(("fingerprint", summary["fingerprint"]))
    print_table(f"corpus {args.corpus}: valid", ("field", "value"), rows)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from gcmr.corpus.synth import SynthConfig, synthesize

    config = SynthConfig.from_file(args.config) if args.config else SynthConfig()
    flags = {"num_items": args.items, "seed": args.seed, "dim": args.dim, "dtype": args.dtype}
    config = SynthConfig.from_dict({**config.to_dict(),
                                    **{k: v for k, v in flags.items() if v is not None}})
    info = synthesize(args.out, config, overwrite=args.overwrite)
    print_table(f"synthetic world written to {args.out}", ("field", "value"),
                [(k, v) for k, v in info.items()])
    return 0
