"""Retrieval verbs: ``train``, ``search``, ``eval``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gcmr.cli.common import bounded_int, positive_int, print_table, report_eval
from gcmr.cli.options import (
    add_model_group,
    add_train_group,
    load_preset_of,
    model_options,
    train_config,
)
from gcmr.errors import GcmrError
from gcmr.search.base import MAX_BEAM, MAX_K, snippet


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
    p.add_argument("-k", type=bounded_int(MAX_K), default=10,
                   help=f"results per query (default 10, at most {MAX_K})")
    p.add_argument("--beam", type=bounded_int(MAX_BEAM), help="beam size of a generative model "
                   f"(default max(10, k); widened to k when smaller; at most {MAX_BEAM}); "
                   "dense models have none")
    p.add_argument("--file", type=Path, help="UTF-8 file with one query per line ('-' = stdin)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of tables")
    p.add_argument("--index", type=Path, help="index directory (default: the model's)")
    p.add_argument("--corpus", type=Path, help="corpus directory, when it has moved since "
                   "training (hybrid search reads its embeddings; captions are shown from it)")
    example = p.add_argument_group("query by example (generative models)")
    example.add_argument("--like", metavar="ID", action="append",
                         help="more like this: the items nearest an existing item (repeat for "
                         "several; with text queries, one per query or one for all)")
    example.add_argument("--vector", type=Path, metavar="FILE.npy",
                         help="an item embedding [D] (or a batch [Q, D]) as the query")
    example.add_argument("--example-weight", type=float, default=None,
                         help="text + example queries: weight w of the example's cosine in "
                         "(1 - w) * text cosine + w * example cosine (default 0.5)")
    add_rerank_option(p)
    add_verify_option(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate a model on a query split",
                       description="R@1/5/10 and MRR@10 on a query split, with the corpus's "
                       "oracle ceiling when it has one; writes the results as JSON.")
    p.add_argument("model", type=Path, help="model directory")
    p.add_argument("--split", default="test", help="query split (default test)")
    p.add_argument("-k", type=bounded_int(MAX_K), default=10,
                   help=f"results per query (default 10, at most {MAX_K})")
    p.add_argument("--beam", type=bounded_int(MAX_BEAM), help="beam size of a generative model "
                   f"(default max(10, k); widened to k when smaller; at most {MAX_BEAM}); "
                   "dense models have none")
    p.add_argument("--restrict", action="store_true",
                   help="rank only the split's own items (paper protocol); default: all items")
    p.add_argument("--max-queries", type=positive_int, help="evaluate a seeded subsample")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the model's)")
    p.add_argument("--out", type=Path, help="results JSON (default MODEL/eval_<split>.json)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_rerank_option(p)
    add_verify_option(p)
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


def add_verify_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the model's and index's files at load "
                   "(about 1 s per GB; the check refuses modified or corrupted files)")


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


def require_dir(path: Path | None, what: str) -> None:
    """Refuse a path given for a directory that is a file (or below one), before any loader
    turns it into a NotADirectoryError; a missing path is left to the loader's message."""
    if path is None:
        return
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = f"{path} is" if parent == path else f"{path}: {parent} is"
                raise GcmrError(f"{where} a file, not a {what} directory")
            return


def _undecodable(text: str) -> str | None:
    """Why ``text`` (an argument: undecodable bytes arrive as surrogate escapes) is not valid
    UTF-8, or None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text[:exc.start].encode("utf-8", "surrogateescape")
        bad = text[exc.start].encode("utf-8", "surrogateescape")
        return f"byte 0x{bad[0]:02x} at byte {len(raw) + 1}" if len(bad) == 1 else \
            f"lone surrogate at character {exc.start}"
    return None


def _decode_lines(data: bytes, name: str) -> list[str]:
    """The lines of a query file's bytes as text; a line that is not UTF-8 is an error naming
    ``name``, the line and the byte (a UTF-8 byte-order mark is skipped)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise GcmrError(f"{name} line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                            f"at byte {exc.start + 1} of the line); queries must be UTF-8 text") \
                from None
    return lines


def _read_stdin() -> list[str]:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return _decode_lines(buffer.read(), "standard input")
    try:
        return sys.stdin.read().splitlines()
    except UnicodeDecodeError as exc:
        raise GcmrError(f"standard input is not valid UTF-8 ({exc.reason})") from None


def _read_query_file(path: Path) -> list[str]:
    if str(path) == "-":
        return _read_stdin()
    if path.is_dir():
        raise GcmrError(f"{path}: is a directory, not a query file")
    if not path.is_file():
        raise GcmrError(f"{path}: no such query file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GcmrError(f"{path}: cannot read the query file ({exc.strerror or exc})") from None
    return _decode_lines(data, str(path))


def _read_queries(args: argparse.Namespace, *, example: bool = False) -> list[str]:
    """The queries of ``gcmr search``: arguments, then ``--file`` lines (or standard input),
    blank lines skipped; text that is not UTF-8 is refused naming the argument or line.

    ``example`` (a query by example, whose text is optional): no text is fine, and standard
    input is read only when asked (``--file -``)."""
    queries = list(args.queries)
    for number, query in enumerate(queries, start=1):
        reason = _undecodable(query)
        if reason is not None:
            raise GcmrError(f"query argument {number} is not valid UTF-8 ({reason}): "
                            f"{snippet(query)}")
    if args.file is not None:
        queries += [line for line in _read_query_file(args.file) if line.strip()]
    elif not queries and not example and not sys.stdin.isatty():
        queries = [line for line in _read_stdin() if line.strip()]
    if example:
        return queries
    if not queries:
        raise GcmrError("no queries: pass them as arguments, with --file, or on standard input")
    for i, q in enumerate(queries):
        if not q.strip():
            raise GcmrError(f"query {i + 1} is empty")
    return queries


def _read_vectors(path: Path):
    """The ``--vector`` file: a float array [D] or [Q, D] in .npy format."""
    from gcmr.artifacts import read_npy

    arr = read_npy(path, where=f"--vector {path}")
    if arr.dtype.kind not in "fiu" or arr.ndim not in (1, 2):
        raise GcmrError(f"--vector {path}: expected a float array [D] or [Q, D], got "
                        f"{arr.dtype} of shape {list(arr.shape)}")
    return arr


def _print_hits(title: str, hits: list[dict]) -> None:
    print_table(title, ("rank", "item id", "score", "caption / source"),
                [(h["rank"], h["id"], f"{h['score']:.3f}", h["caption"]) for h in hits])


def cmd_search_example(args: argparse.Namespace) -> int:
    """``gcmr search MODEL --like ID`` / ``--vector FILE.npy`` (with or without text)."""
    import json

    from gcmr.search import load_searcher, ranked_hits
    from gcmr.search.example import EXAMPLE_WEIGHT
    from gcmr.search.retriever import Retriever

    if args.like and args.vector is not None:
        raise GcmrError("pass either --like or --vector, not both")
    queries = _read_queries(args, example=True)
    vector = _read_vectors(args.vector) if args.vector is not None else None
    for path, what in ((args.model, "model"), (args.index, "index"), (args.corpus, "corpus")):
        require_dir(path, what)
    searcher = load_searcher(args.model, index_path=args.index, rerank=args.rerank,
                             corpus_path=args.corpus, verify=not args.no_verify)
    if not isinstance(searcher, Retriever):
        raise GcmrError(f"{args.model} is a dense model; query by example (--like, --vector) "
                        f"needs a generative model")
    weight = EXAMPLE_WEIGHT if args.example_weight is None else args.example_weight
    scores, rows = searcher.search_rows(queries or None, k=args.k, beam=args.beam,
                                        like=args.like, vector=vector, example_weight=weight)
    results = ranked_hits(searcher, scores, rows, searcher.item_descriptions())
    examples = [f"like {i}" for i in args.like] if args.like else \
        [f"vector {args.vector}" + (f" row {i}" if getattr(vector, "ndim", 1) == 2 else "")
         for i in range(1 if vector.ndim == 1 else len(vector))]
    for i, hits in enumerate(results):
        example = examples[i] if len(examples) > 1 else examples[0]
        title = f"query: {queries[i]} + {example}" if queries else example
        if args.json:
            record = {"example": example, "results": hits}
            if queries:
                record["query"] = queries[i]
            print(json.dumps(record))
        else:
            _print_hits(title, hits)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from gcmr.search import load_searcher, ranked_hits

    if args.like or args.vector is not None:
        return cmd_search_example(args)
    if args.example_weight is not None:
        raise GcmrError("--example-weight applies to a query by example (--like, --vector)")
    queries = _read_queries(args)
    for path, what in ((args.model, "model"), (args.index, "index"), (args.corpus, "corpus")):
        require_dir(path, what)
    searcher = load_searcher(args.model, index_path=args.index, rerank=args.rerank,
                             corpus_path=args.corpus, verify=not args.no_verify)
    scores, rows = searcher.search_rows(queries, k=args.k, beam=args.beam)
    beam_note(args)
    results = ranked_hits(searcher, scores, rows, searcher.item_descriptions())
    for q, hits in zip(queries, results):
        if args.json:
            print(json.dumps({"query": q, "results": hits}))
        else:
            _print_hits(f"query: {q}", hits)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gcmr.corpus import load_corpus
    from gcmr.evaluate.runner import evaluate
    from gcmr.search import load_searcher

    for path, what in ((args.model, "model"), (args.corpus, "corpus")):
        require_dir(path, what)
    if args.out is not None and args.out.is_dir():
        raise GcmrError(f"--out {args.out}: is a directory; pass the results file to write")
    searcher = load_searcher(args.model, rerank=args.rerank, corpus_path=args.corpus,
                             verify=not args.no_verify)
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
