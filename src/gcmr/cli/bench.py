"""Dense baseline and benchmark verbs: ``train-dense``, ``eval-dense``, ``bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcmr.cli.common import nonneg_float, positive_int, print_json, print_table


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dense search")
    g.add_argument("--backend", help="exact (chunked torch matmul + top-k) or faiss:<factory>, "
                   "e.g. faiss:Flat, faiss:HNSW32, faiss:IVF1024,PQ64 (needs gcmr[faiss])")
    g.add_argument("--ef-search", type=positive_int, help="faiss HNSW efSearch (default 64)")
    g.add_argument("--nprobe", type=positive_int, help="faiss IVF nprobe (default 16)")
    g.add_argument("--chunk-rows", type=positive_int,
                   help="items per chunk for exact search and faiss adds (default 262144)")


def _search_options(args: argparse.Namespace) -> dict:
    names = {"backend": "backend", "ef_search": "ef_search", "nprobe": "nprobe",
             "chunk_rows": "chunk_rows"}
    return {key: getattr(args, arg) for arg, key in names.items()
            if getattr(args, arg, None) is not None}


def register(sub: argparse._SubParsersAction) -> None:
    from gcmr.cli.retrieval import add_train_options

    p = sub.add_parser(
        "train-dense", help="train the dual-tower dense baseline",
        description="Train a dense dual tower on the same pairs as `gcmr train` (item captions + "
        "train queries): the same query encoder architecture and tokenizer, pooled and "
        "projected into the item embedding space, symmetric InfoNCE with in-batch negatives "
        "against the frozen item embeddings. Training options are those of `gcmr train` (one "
        "budget for both; generative-only options such as --omega are ignored).")
    p.add_argument("source", type=Path, help="corpus directory, or an index directory (its "
                   "corpus is used)")
    p.add_argument("out", type=Path, help="dense model directory to write")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the index's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("query tower")
    g.add_argument("--d-model", type=positive_int, help="transformer width (default 256)")
    g.add_argument("--heads", type=positive_int, help="attention heads (default 4)")
    g.add_argument("--ffn", type=positive_int, help="feed-forward width (default 1024)")
    g.add_argument("--encoder-layers", type=positive_int, help="encoder layers (default 3)")
    g.add_argument("--dropout", type=nonneg_float, help="dropout (default 0.1)")
    g.add_argument("--pooling", choices=("mean", "first"), help="token pooling (default mean)")
    g.add_argument("--temperature", type=float, help="initial InfoNCE temperature (default 0.07)")
    g.add_argument("--fixed-temperature", action="store_true",
                   help="do not learn the temperature")
    _add_search_options(p)
    p.add_argument("--save-index", action="store_true",
                   help="build the faiss index of --backend now and save it in OUT "
                   "(otherwise it is rebuilt from the corpus when the model is loaded)")
    add_train_options(p)
    p.set_defaults(func=cmd_train_dense)

    p = sub.add_parser(
        "eval-dense", help="evaluate dense retrieval (a dense model or zero-shot query vectors)",
        description="R@1/5/10 and MRR@10 of dense search on a query split. MODEL is a "
        "`gcmr train-dense` directory, or a corpus whose split ships precomputed query "
        "embeddings queries/<split>.npy ([Q, D] in the item space, row i = line i of "
        "queries/<split>.jsonl): zero-shot retrieval with e.g. CLIP text embeddings, no "
        "training. `gcmr eval` also evaluates dense models (with their saved backend).")
    p.add_argument("model", type=Path, help="dense model directory or corpus directory")
    p.add_argument("--split", default="test", help="query split (default test)")
    p.add_argument("-k", type=positive_int, default=10)
    p.add_argument("--restrict", action="store_true",
                   help="rank only the split's own items (paper protocol); default: all items")
    p.add_argument("--max-queries", type=positive_int, help="evaluate a seeded subsample")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the model's)")
    p.add_argument("--out", type=Path, help="results JSON (default MODEL/eval_<split>[_<backend>]"
                   ".json; for a corpus: CORPUS/eval_zero_shot_<split>.json)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_search_options(p)
    p.set_defaults(func=cmd_eval_dense)

    _register_bench(sub)


def cmd_train_dense(args: argparse.Namespace) -> int:
    from gcmr.cli.retrieval import train_config
    from gcmr.search.dense import DenseSearchConfig
    from gcmr.train.dense import train_dense

    tower = {k: v for k, v in {"d_model": args.d_model, "n_heads": args.heads,
                               "d_ff": args.ffn, "encoder_layers": args.encoder_layers,
                               "dropout": args.dropout, "pooling": args.pooling,
                               "temperature": args.temperature}.items() if v is not None}
    if args.fixed_temperature:
        tower["learn_temperature"] = False
    search = DenseSearchConfig.from_dict(_search_options(args), where="dense search options")
    result = train_dense(args.source, args.out, config=train_config(args), tower_options=tower,
                         search=search, corpus_path=args.corpus, save_index=args.save_index,
                         overwrite=args.overwrite, show_progress=not args.quiet)
    rows = [("model", str(result.out)), ("epochs", result.epochs_run),
            ("training pairs", f"{result.num_pairs:,}"), ("seconds", f"{result.seconds:.1f}"),
            ("selected epoch", result.best_epoch), ("search backend", search.backend)]
    rows += [(f"val {k}", v) for k, v in result.best_metrics.items()]
    print_table("dense training finished", ("field", "value"), rows)
    return 0


def cmd_eval_dense(args: argparse.Namespace) -> int:
    from gcmr.artifacts import write_json
    from gcmr.corpus import load_corpus
    from gcmr.errors import GcmrError
    from gcmr.evaluate.runner import evaluate
    from gcmr.search.dense import DenseRetriever, DenseSearchConfig, ZeroShotSearcher

    options = _search_options(args)
    if (args.model / "corpus.json").is_file():
        corpus = load_corpus(args.corpus or args.model, load_captions=False)
        config = DenseSearchConfig.from_dict(options, where="dense search options")
        searcher = ZeroShotSearcher(corpus, [args.split], config)
        name = "zero-shot"
        default_out = corpus.path / f"eval_zero_shot_{args.split}.json"
    else:
        searcher = DenseRetriever.load(args.model, corpus_path=args.corpus, **options)
        corpus = load_corpus(searcher.corpus_path, load_captions=False)
        if corpus.fingerprint != searcher.corpus_fingerprint:
            raise GcmrError(f"{corpus.path} is not the corpus {args.model} was trained on "
                            f"(fingerprint {corpus.fingerprint} != "
                            f"{searcher.corpus_fingerprint})")
        name = str(args.model)
        tag = "" if "backend" not in options else "_" + options["backend"].replace(":", "-") \
            .replace(",", "-")
        default_out = args.model / f"eval_{args.split}{tag}.json"
    config = searcher.config
    result = evaluate(searcher, corpus, args.split, k=args.k, restrict_to_split=args.restrict,
                      max_queries=args.max_queries)
    result.update(model=name, backend=config.backend, search=config.to_dict())
    out = args.out or default_out
    write_json(out, result)
    if args.json:
        print_json(result)
        return 0
    oracle = result["oracle"] or {}
    rows = [(m, v, oracle.get(m, "-"), (f"{v / oracle[m]:.1%}" if oracle.get(m) else "-"))
            for m, v in result["metrics"].items()]
    print_table(f"{name} [{config.backend}] on {args.split} ({result['queries']:,} queries, "
                f"{result['candidates']:,} candidates, {result['queries_per_s']:,.0f} queries/s)",
                ("metric", "value", "oracle", "of oracle"), rows)
    print(f"results written to {out}", file=sys.stderr)
    return 0


def _register_bench(sub: argparse._SubParsersAction) -> None:
    pass
