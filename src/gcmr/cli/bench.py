"""Dense baseline and benchmark verbs: ``train-dense``, ``eval-dense``, ``bench``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gcmr.cli.common import positive_int, print_table, report_eval
from gcmr.cli.options import (
    TOWER_OPTIONS,
    add_model_group,
    add_options,
    add_train_group,
    load_preset_of,
    model_options,
    tower_options,
    train_config,
)


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
    from gcmr.model.config import DenseTowerConfig

    p = sub.add_parser(
        "train-dense", help="train the dual-tower dense baseline",
        description="Train a dense dual tower on the same pairs as `gcmr train` (item captions + "
        "train queries): the same query encoder architecture and tokenizer, pooled and "
        "projected into the item embedding space, symmetric InfoNCE with in-batch negatives "
        "against the frozen item embeddings. Training options are those of `gcmr train` (one "
        "budget for both; generative-only options such as --omega are ignored); a --preset "
        "gives the tower the encoder fields of its model. --resume continues OUT.")
    p.add_argument("source", type=Path, help="corpus directory, or an index directory (its "
                   "corpus is used)")
    p.add_argument("out", type=Path, help="dense model directory to write")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the index's)")
    p.add_argument("--resume", action="store_true",
                   help="continue training OUT from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # the query encoder's flags (EncoderConfig's fields) and the tower's own
    add_options(p.add_argument_group("query tower"), DenseTowerConfig, TOWER_OPTIONS)
    _add_search_options(p)
    p.add_argument("--save-index", action="store_true",
                   help="build the faiss index of --backend now and save it in OUT "
                   "(otherwise it is rebuilt from the corpus when the model is loaded)")
    add_train_group(p, preset=True)
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
    from gcmr.search.dense import DenseSearchConfig
    from gcmr.train.dense import train_dense

    preset = load_preset_of(args)
    search = DenseSearchConfig.from_dict(_search_options(args), where="dense search options")
    result = train_dense(args.source, args.out, config=train_config(args, preset),
                         tower_options=tower_options(args, preset), search=search,
                         corpus_path=args.corpus, save_index=args.save_index,
                         resume=args.resume, overwrite=args.overwrite,
                         show_progress=not args.quiet)
    rows = [("model", str(result.out)), ("epochs", result.epochs_run),
            ("training pairs", f"{result.num_pairs:,}"), ("seconds", f"{result.seconds:.1f}"),
            ("selected epoch", result.best_epoch), ("search backend", search.backend)]
    rows += [(f"val {k}", v) for k, v in result.best_metrics.items()]
    print_table("dense training finished", ("field", "value"), rows)
    return 0


def cmd_eval_dense(args: argparse.Namespace) -> int:
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
    report_eval(result, args.out or default_out, title=f"{name} [{config.backend}] on "
                f"{args.split}", as_json=args.json)
    return 0


def _size(text: str) -> int:
    """``10k`` / ``1M`` / ``250000`` -> int."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 10k, 1M or 250000, got {text!r}") \
            from None
    if value < 10:
        raise argparse.ArgumentTypeError(f"sizes must be >= 10, got {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    return [_size(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1, got {text!r}")
    return values


def _add_common_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="results directory (default ./bench-results)")
    p.add_argument("--work", type=Path, help="where generated worlds, indexes and models go "
                   "(default OUT/work; reused by later runs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _add_accuracy_options(p: argparse.ArgumentParser) -> None:
    from gcmr.bench.accuracy import DEFAULT_ROWS

    g = p.add_argument_group("accuracy rows")
    g.add_argument("--rows", help=f"comma-separated rows (default all: {','.join(DEFAULT_ROWS)})")
    g.add_argument("--grid", action="store_true",
                   help="add CART with K = codebook size 64/256 and identifier length 5/6 "
                   "(CART tables 6, 7; long)")
    g.add_argument("--split", default="test", help="query split to evaluate (default test)")
    g.add_argument("--beam", type=positive_int, default=10, help="beam of the generative rows")
    g.add_argument("--restrict", action="store_true",
                   help="rank only the split's own items (paper protocol)")
    g.add_argument("--max-queries", type=positive_int, help="evaluate a seeded subsample")
    g.add_argument("--hnsw", default="HNSW32", help="faiss factory of the dense-hnsw row")
    g.add_argument("--ef-search", type=positive_int, default=64, help="HNSW efSearch")
    g.add_argument("--index-config", type=Path,
                   help="IndexConfig JSON applied to every row (each row sets its scheme)")
    g.add_argument("--index-max-steps", type=int, help="RQ-VAE optimizer steps of every index")
    add_model_group(p)
    add_train_group(p)


def _accuracy_config(args: argparse.Namespace):
    import json

    from gcmr.bench.accuracy import AccuracyConfig, parse_rows

    index: dict = {}
    if args.index_config:
        index = json.loads(args.index_config.read_text(encoding="utf-8"))
    if args.index_max_steps is not None:
        index["max_steps"] = args.index_max_steps
    fields = {"split": args.split, "beam": args.beam, "restrict": args.restrict,
              "max_queries": args.max_queries or 0, "hnsw": args.hnsw,
              "ef_search": args.ef_search, "grid": args.grid, "index": index,
              "train": train_config(args).to_dict(), "model": model_options(args)}
    if args.rows:
        fields["rows"] = parse_rows(args.rows)
    return AccuracyConfig.from_dict(fields, where="bench accuracy options")


def _add_scale_options(p: argparse.ArgumentParser, *, timing: bool, prefix: str = "") -> None:
    """Scale options; ``prefix`` renames those that clash with accuracy options (bench all)."""
    g = p.add_argument_group("scale")
    g.add_argument(f"--{prefix}config", dest="scale_config", type=Path,
                   help="ScaleConfig JSON; flags override it")
    g.add_argument("--sizes", type=_sizes,
                   help="candidate pool sizes, e.g. 10k,100k,1M (default 10k,100k,1M)")
    g.add_argument("--large", action="store_true", help="add 10M items (needs ~20 GB of disk "
                   "for float32 embeddings, or 10 GB with --float16, and a long run)")
    g.add_argument("--dim", type=positive_int, help="embedding dimension (default 512)")
    g.add_argument("--float16", action="store_true", help="store the world as float16")
    g.add_argument("--methods", help="comma-separated: cart,cart-hybrid,dense-exact,faiss-flat,"
                   "faiss-hnsw (default: all but cart-hybrid)")
    g.add_argument(f"--{prefix}hnsw", dest="scale_hnsw",
                   help="faiss HNSW factory (default HNSW32)")
    g.add_argument(f"--{prefix}ef-search", dest="scale_ef", type=positive_int,
                   help="HNSW efSearch (default 64)")
    g.add_argument(f"--{prefix}threads", dest="scale_threads", type=positive_int,
                   help="torch and faiss threads (default all)")
    g.add_argument("--max-fit-items", type=positive_int,
                   help="identifier fitting subsample (default 100000)")
    g.add_argument(f"--{prefix}seed", dest="scale_seed", type=int,
                   help="world seed (default 0)")
    if timing:
        g.add_argument("--beams", type=_ints, help="CART beams (default 10,20)")
        g.add_argument("--batch-queries", type=positive_int,
                       help="concurrent queries per batch (default 100)")
        g.add_argument("--batches", type=positive_int, help="timed batches (default 3)")
        g.add_argument("--single-queries", type=positive_int,
                       help="single-query latency samples (default 50)")


def _scale_config(args: argparse.Namespace):
    from gcmr.bench.scale import ScaleConfig

    base = ScaleConfig.from_file(args.scale_config) if args.scale_config else ScaleConfig()
    changes = {}
    for arg, key in (("sizes", "sizes"), ("dim", "dim"), ("scale_hnsw", "hnsw"),
                     ("scale_ef", "ef_search"), ("scale_threads", "threads"),
                     ("max_fit_items", "max_fit_items"), ("scale_seed", "seed"),
                     ("beams", "beams"), ("batch_queries", "batch_queries"),
                     ("batches", "batches"), ("single_queries", "single_queries")):
        if getattr(args, arg, None) is not None:
            changes[key] = getattr(args, arg)
    if args.methods:
        changes["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.float16:
        changes["embeddings_dtype"] = "float16"
    config = ScaleConfig.from_dict({**base.to_dict(), **changes}, where="bench scale options")
    if args.large and 10_000_000 not in config.sizes:
        config = ScaleConfig.from_dict({**config.to_dict(), "sizes": config.sizes + [10_000_000]})
    return config


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark CART against ablations and dense baselines",
        description="Reproduce the shape of the CART paper's tables and figure 4 on any "
        "corpus: accuracy of CART, its ablations and the dense dual tower; throughput and "
        "memory as the number of candidate items grows. Each report is written as JSON + "
        "Markdown + PNG under --out, with the machine and every setting recorded.")
    bench = p.add_subparsers(title="reports", dest="report", metavar="REPORT", required=True)

    a = bench.add_parser("accuracy", help="R@1/5/10, MRR@10 of CART, ablations, baselines",
                         description="Train every row with one shared budget (the training "
                         "options below) and evaluate it on the test split.")
    a.add_argument("corpus", type=Path, help="corpus directory")
    _add_common_bench(a)
    _add_accuracy_options(a)
    a.set_defaults(func=cmd_bench)

    for name, helptext in (("throughput", "queries/s and latency vs number of candidates"),
                           ("memory", "serving memory and index build time vs candidates")):
        s = bench.add_parser(name, help=helptext,
                             description=f"{helptext} on distractor worlds of the synthetic "
                             f"generator (identifiers and trie built at each size, embeddings "
                             f"memory-mapped); models randomly initialized (speed and memory do "
                             f"not depend on weights).")
        _add_common_bench(s)
        _add_scale_options(s, timing=name == "throughput")
        s.set_defaults(func=cmd_bench)

    s = bench.add_parser("all", help="accuracy on CORPUS, then throughput + memory",
                         description="All three reports in one run.")
    s.add_argument("corpus", type=Path, help="corpus directory (accuracy report)")
    _add_common_bench(s)
    _add_accuracy_options(s)
    _add_scale_options(s, timing=True, prefix="scale-")
    s.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from gcmr.bench.report import command_line

    out = args.out
    work = args.work or (out / "work")
    command = command_line()
    docs = {}
    if args.report in ("accuracy", "all"):
        from gcmr.bench.accuracy import bench_accuracy

        docs["accuracy"] = bench_accuracy(args.corpus, out, _accuracy_config(args), work=work,
                                          command=command, show_progress=not args.quiet)
    if args.report in ("throughput", "memory", "all"):
        from gcmr.bench.scale import bench_scale

        reports = ("memory",) if args.report == "memory" else ("throughput", "memory")
        docs.update(bench_scale(out, _scale_config(args), work=work, reports=reports,
                                command=command, show_progress=not args.quiet))
    for name, doc in docs.items():
        columns = doc["columns"]
        print_table(f"{doc['title']} ({out / (name + '.md')})", columns,
                    [[row.get(c, "-") if row.get(c) is not None else "-" for c in columns]
                     for row in doc["rows"]])
        for note in doc["notes"]:
            print(f"  - {note}")
    return 0
