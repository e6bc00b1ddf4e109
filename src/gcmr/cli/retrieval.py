"""Retrieval verbs: ``train``, ``search``, ``eval``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcmr.cli.common import positive_int, print_table, report_eval
from gcmr.cli.options import (
    add_model_group,
    add_train_group,
    load_preset_of,
    model_options,
    train_config,
)
from gcmr.errors import GcmrError


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
    add_model_group(p)
    add_train_group(p, preset=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="search a trained model with text queries",
                       description="Generate the identifiers of the best items for each query "
                       "(constrained beam search). Queries come from the arguments, --file, or "
                       "standard input (one per line).")
    p.add_argument("model", type=Path, help="model directory (gcmr train or gcmr train-dense)")
    p.add_argument("queries", nargs="*", help="query texts")
    p.add_argument("-k", type=positive_int, default=10, help="results per query (default 10)")
    p.add_argument("--beam", type=positive_int, help="beam size of a generative model (default "
                   "max(10, k); widened to k when smaller); dense models have none")
    p.add_argument("--file", type=Path, help="file with one query per line ('-' = stdin)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of tables")
    p.add_argument("--index", type=Path, help="index directory (default: the model's)")
    p.add_argument("--corpus", type=Path, help="corpus directory, when it has moved since "
                   "training (hybrid search reads its embeddings; captions are shown from it)")
    add_rerank_option(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate a model on a query split",
                       description="R@1/5/10 and MRR@10 on a query split, with the corpus's "
                       "oracle ceiling when it has one; writes the results as JSON.")
    p.add_argument("model", type=Path, help="model directory")
    p.add_argument("--split", default="test", help="query split (default test)")
    p.add_argument("-k", type=positive_int, default=10)
    p.add_argument("--beam", type=positive_int, help="beam size of a generative model (default "
                   "max(10, k); widened to k when smaller); dense models have none")
    p.add_argument("--restrict", action="store_true",
                   help="rank only the split's own items (paper protocol); default: all items")
    p.add_argument("--max-queries", type=positive_int, help="evaluate a seeded subsample")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the model's)")
    p.add_argument("--out", type=Path, help="results JSON (default MODEL/eval_<split>.json)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_rerank_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from gcmr.train import train

    preset = load_preset_of(args)
    result = train(args.index, args.out, config=train_config(args, preset),
                   model_options=model_options(args, preset), corpus_path=args.corpus,
                   resume=args.resume, overwrite=args.overwrite, show_progress=not args.quiet)
    rows = [("model", str(result.out)), ("epochs", result.epochs_run),
            ("training pairs", f"{result.num_pairs:,}"), ("seconds", f"{result.seconds:.1f}"),
            ("selected epoch", result.best_epoch)]
    rows += [(f"val {k}", v) for k, v in result.best_metrics.items()]
    print_table("training finished", ("field", "value"), rows)
    return 0


def add_rerank_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank", choices=("hybrid", "none"),
                   help="generative models trained with a query-vector head (--dense-weight): "
                   "hybrid = rerank the beam's candidates by the query vector (their default), "
                   "none = pure generation (the papers' protocol)")


def beam_note(args: argparse.Namespace) -> None:
    """One line on stderr when ``--beam`` was narrower than ``-k`` and the search widened it
    (:func:`gcmr.search.beam.effective_beam`); called after the search, so a dense model,
    which refuses ``--beam``, never gets it."""
    if args.beam is None:
        return
    from gcmr.search.beam import effective_beam

    width = effective_beam(args.beam, args.k)
    if width != args.beam:
        print(f"gcmr {args.command}: searching with beam {width} so that {args.k} distinct "
              f"items can be returned", file=sys.stderr)


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
    searcher = load_searcher(args.model, index_path=args.index, rerank=args.rerank,
                             corpus_path=args.corpus)
    scores, rows = searcher.search_rows(queries, k=args.k, beam=args.beam)
    beam_note(args)
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

    searcher = load_searcher(args.model, rerank=args.rerank, corpus_path=args.corpus)
    corpus = load_corpus(args.corpus or searcher.corpus_path, load_captions=False)
    if corpus.fingerprint != searcher.corpus_fingerprint:
        raise GcmrError(f"{corpus.path} is not the corpus {args.model} was trained on "
                        f"(fingerprint {corpus.fingerprint} != {searcher.corpus_fingerprint})")
    result = evaluate(searcher, corpus, args.split, k=args.k, beam=args.beam,
                      restrict_to_split=args.restrict, max_queries=args.max_queries)
    beam_note(args)
    result["model"] = str(args.model)
    report_eval(result, args.out or (args.model / f"eval_{args.split}.json"),
                title=f"{args.model} on {args.split}", as_json=args.json)
    return 0
