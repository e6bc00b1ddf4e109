"""Retrieval verbs: ``train``, ``search``, ``eval``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcmr.cli.common import nonneg_float, positive_int, print_table, report_eval
from gcmr.errors import GcmrError

# ModelConfig's defaults, for help texts (importing gcmr.model would load torch on every
# `gcmr --help`; tests/test_cli_defaults.py checks that these match ModelConfig)
MODEL_HELP_DEFAULTS = {"d_model": 192, "n_heads": 4, "d_ff": 768, "encoder_layers": 3,
                       "decoder_layers": 3, "dropout": 0.1}


def add_model_options(p: argparse.ArgumentParser, defaults: dict | None = None, *,
                      title: str = "model", encoder_only: bool = False
                      ) -> argparse._ArgumentGroup:
    """Model-shape flags; ``defaults`` (ModelConfig field -> value) only changes the help text
    for a command whose defaults differ from ModelConfig's. ``encoder_only`` leaves out the
    decoder flags (the dense tower is an encoder)."""
    d = {**MODEL_HELP_DEFAULTS, **(defaults or {})}
    g = p.add_argument_group(title)
    g.add_argument("--d-model", type=positive_int,
                   help=f"transformer width (default {d['d_model']})")
    g.add_argument("--heads", type=positive_int, help=f"attention heads (default {d['n_heads']})")
    g.add_argument("--ffn", type=positive_int, help=f"feed-forward width (default {d['d_ff']})")
    g.add_argument("--encoder-layers", type=positive_int,
                   help=f"encoder layers (default {d['encoder_layers']})")
    if not encoder_only:
        g.add_argument("--decoder-layers", type=positive_int,
                       help=f"decoder layers (default {d['decoder_layers']})")
    g.add_argument("--dropout", type=nonneg_float, help=f"dropout (default {d['dropout']:g})")
    if not encoder_only:
        g.add_argument("--fusion", choices=("cart", "none"),
                       help="decoder fusion: cart (coarse + fine, CART eqs. 2-5) or none (plain "
                       "cross-attention to the last encoder layer; the 'w/o fusion' ablation)")
    return g


def model_options(args: argparse.Namespace) -> dict:
    names = {"d_model": "d_model", "heads": "n_heads", "ffn": "d_ff",
             "encoder_layers": "encoder_layers", "decoder_layers": "decoder_layers",
             "dropout": "dropout", "fusion": "fusion"}
    return {key: getattr(args, arg) for arg, key in names.items() if getattr(args, arg) is not None}


def add_train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--config", type=Path, help="TrainConfig JSON file; flags override it")
    g.add_argument("--method", choices=("cart", "avg"), help="cart (CE + R-Drop) or avg "
                   "(CE + discriminative loss over beam-searched candidates)")
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--warmup-epochs", type=nonneg_float)
    g.add_argument("--restart-epochs", type=nonneg_float,
                   help="cosine restart period in epochs (0 = a single cosine cycle)")
    g.add_argument("--omega", type=nonneg_float,
                   help="R-Drop weight (default 0.15 for cart, 0 for avg; 0 = off)")
    g.add_argument("--val-split", help="query split for model selection (default val)")
    g.add_argument("--no-val", action="store_true", help="no validation; keep the last epoch")
    g.add_argument("--select-metric", choices=("R@1", "R@5", "R@10", "MRR@10"))
    g.add_argument("--patience", type=int, help="early stop after N epochs without improvement")
    g.add_argument("--max-val-queries", type=positive_int)
    g.add_argument("--no-captions", action="store_true",
                   help="do not train on item captions (ablation of caption enhancement)")
    g.add_argument("--no-train-queries", action="store_true",
                   help="do not train on queries/train.jsonl")
    g.add_argument("--vocab-size", type=positive_int, help="query tokenizer vocabulary")
    g.add_argument("--max-query-length", type=positive_int)
    g.add_argument("--dis-beam", type=positive_int, help="AVG: beam of the discriminative loss")
    g.add_argument("--dis-weight", type=nonneg_float,
                   help="AVG: weight of the discriminative loss (0 = the 'w/o L_dis' ablation)")
    g.add_argument("--backbone", help="'t5:PATH_OR_NAME' = a pretrained T5 "
                   "(transformers) with the identifier tokens added (AVG table 6); default: "
                   "the from-scratch CART encoder-decoder")
    g.add_argument("--no-voken-embedding", action="store_true",
                   help="AVG: random voken embeddings (ablation 'w/o voken embedding')")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | mps")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--max-steps", type=int, help="stop after N optimizer steps (smoke runs)")


def train_config(args: argparse.Namespace):
    from gcmr.train import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    flags = {"method": "method", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
             "warmup_epochs": "warmup_epochs", "restart_epochs": "restart_epochs",
             "omega": "omega", "val_split": "val_split", "select_metric": "select_metric",
             "patience": "patience", "max_val_queries": "max_val_queries",
             "vocab_size": "vocab_size", "max_query_length": "max_query_length",
             "dis_beam": "dis_beam", "dis_weight": "dis_weight", "backbone": "backbone",
             "seed": "seed", "device": "device",
             "threads": "num_threads", "max_steps": "max_steps"}
    changes = {key: getattr(args, arg) for arg, key in flags.items()
               if getattr(args, arg, None) is not None}
    if args.no_val:
        changes["val_split"] = None
    if args.no_captions:
        changes["use_captions"] = False
    if args.no_train_queries:
        changes["use_train_queries"] = False
    if getattr(args, "no_voken_embedding", False):
        changes["voken_embedding_init"] = False
    return TrainConfig.from_dict({**config.to_dict(), **changes})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a generative retriever on an index",
                       description="Train the seq2seq retriever (CART: fusion decoder, CE + "
                       "R-Drop) on item captions and train queries -> identifiers.")
    p.add_argument("index", type=Path, help="index directory (from gcmr index)")
    p.add_argument("out", type=Path, help="model directory to write")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the index's)")
    p.add_argument("--resume", action="store_true",
                   help="continue training OUT from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_options(p)
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="search a trained model with text queries",
                       description="Generate the identifiers of the best items for each query "
                       "(constrained beam search). Queries come from the arguments, --file, or "
                       "standard input (one per line).")
    p.add_argument("model", type=Path, help="model directory (gcmr train or gcmr train-dense)")
    p.add_argument("queries", nargs="*", help="query texts")
    p.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    p.add_argument("--beam", type=positive_int, help="beam size (default max(10, k))")
    p.add_argument("--file", type=Path, help="file with one query per line ('-' = stdin)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of tables")
    p.add_argument("--index", type=Path, help="index directory (default: the model's)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate a model on a query split",
                       description="R@1/5/10 and MRR@10 on a query split, with the corpus's "
                       "oracle ceiling when it has one; writes the results as JSON.")
    p.add_argument("model", type=Path, help="model directory")
    p.add_argument("--split", default="test", help="query split (default test)")
    p.add_argument("-k", type=positive_int, default=10)
    p.add_argument("--beam", type=positive_int, help="beam size (default max(10, k))")
    p.add_argument("--restrict", action="store_true",
                   help="rank only the split's own items (paper protocol); default: all items")
    p.add_argument("--max-queries", type=positive_int, help="evaluate a seeded subsample")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the model's)")
    p.add_argument("--out", type=Path, help="results JSON (default MODEL/eval_<split>.json)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from gcmr.train import train

    result = train(args.index, args.out, config=train_config(args),
                   model_options=model_options(args), corpus_path=args.corpus,
                   resume=args.resume, overwrite=args.overwrite, show_progress=not args.quiet)
    rows = [("model", str(result.out)), ("epochs", result.epochs_run),
            ("training pairs", f"{result.num_pairs:,}"), ("seconds", f"{result.seconds:.1f}"),
            ("selected epoch", result.best_epoch)]
    rows += [(f"val {k}", v) for k, v in result.best_metrics.items()]
    print_table("training finished", ("field", "value"), rows)
    return 0


def _read_queries(args: argparse.Namespace) -> list[str]:
    queries = list(args.queries)
    if args.file is not None:
        if str(args.file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            if not args.file.is_file():
                raise GcmrError(f"{args.file}: no such query file")
            lines = args.file.read_text(encoding="utf-8").splitlines()
        queries += [line for line in lines if line.strip()]
    elif not queries and not sys.stdin.isatty():
        queries = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not queries:
        raise GcmrError("no queries: pass them as arguments, with --file, or on standard input")
    for i, q in enumerate(queries):
        if not q.strip():
            raise GcmrError(f"query {i + 1} is empty")
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from gcmr.search import load_searcher, ranked_hits

    queries = _read_queries(args)
    searcher = load_searcher(args.model, index_path=args.index)
    scores, rows = searcher.search_rows(queries, k=args.k, beam=args.beam)
    results = ranked_hits(searcher, scores, rows, searcher.item_descriptions())
    for q, hits in zip(queries, results):
        if args.json:
            print(json.dumps({"query": q, "results": hits}))
        else:
            print_table(f"query: {q}", ("rank", "item id", "score", "caption / source"),
                        [(h["rank"], h["id"], f"{h['score']:.3f}", h["caption"]) for h in hits])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gcmr.corpus import load_corpus
    from gcmr.evaluate.runner import evaluate
    from gcmr.search import load_searcher

    searcher = load_searcher(args.model)
    corpus = load_corpus(args.corpus or searcher.corpus_path, load_captions=False)
    if corpus.fingerprint != searcher.corpus_fingerprint:
        raise GcmrError(f"{corpus.path} is not the corpus {args.model} was trained on "
                        f"(fingerprint {corpus.fingerprint} != {searcher.corpus_fingerprint})")
    result = evaluate(searcher, corpus, args.split, k=args.k, beam=args.beam,
                      restrict_to_split=args.restrict, max_queries=args.max_queries)
    result["model"] = str(args.model)
    report_eval(result, args.out or (args.model / f"eval_{args.split}.json"),
                title=f"{args.model} on {args.split}", as_json=args.json)
    return 0
