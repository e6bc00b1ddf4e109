"""``gcmr compress-vectors``: compact item vectors for a model's hybrid rerank
(:mod:`gcmr.search.compact`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gcmr.cli.common import nonneg_int, positive_int, print_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress-vectors", help="store compact item vectors for a model's hybrid rerank",
        description="Encode the item embeddings that hybrid search reranks its candidates "
        "with into the model directory: product-quantization codes (--codec pq, --pq-m bytes "
        "per item; default D / 4) or float16 rows. Hybrid search then scores the candidates "
        "with them and no longer reads the corpus's embeddings.npy. --codec none goes back "
        "to the corpus's float rows. The model directory is replaced atomically; items "
        "added later (gcmr add) are encoded with the same codebook.")
    p.add_argument("model", type=Path, help="model directory (gcmr train, with a query head)")
    p.add_argument("--codec", choices=("pq", "float16", "none"), default="pq",
                   help="pq (product quantization, 8-bit codes), float16, or none (remove "
                   "them: score with the corpus's embeddings) (default pq)")
    p.add_argument("--pq-m", type=positive_int, default=None,
                   help="PQ sub-quantizers = bytes per item; must divide the embedding "
                   "dimension D (default D / 4)")
    p.add_argument("--rotation", choices=("none", "opq"), default="none",
                   help="PQ: learn an orthogonal rotation first (faiss OPQ): more accurate "
                   "at the same bytes per item, a D x D matrix more in the model and minutes "
                   "of training (default none)")
    p.add_argument("--train-size", type=positive_int, default=65_536,
                   help="items sampled (seeded) to train the PQ codebook (default 65536)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="sampling and k-means seed")
    p.add_argument("--corpus", type=Path, help="the model's training corpus, when it has moved")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch and faiss CPU threads (default all)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the model's files")
    p.set_defaults(func=cmd_compress_vectors)


def cmd_compress_vectors(args: argparse.Namespace) -> int:
    from gcmr.cli.retrieval import require_dir
    from gcmr.errors import GcmrError
    from gcmr.search.compact import CompactConfig, compress_item_vectors

    require_dir(args.model, "model")
    if args.codec != "pq" and (args.pq_m is not None or args.rotation != "none"):
        raise GcmrError(f"--pq-m and --rotation apply to --codec pq, not {args.codec}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    config = None if args.codec == "none" else CompactConfig(
        codec=args.codec, m=args.pq_m or 0, train_size=args.train_size, seed=args.seed,
        rotation=args.rotation)
    record = compress_item_vectors(args.model, config, corpus_path=args.corpus,
                                   verify=not args.no_verify, show_progress=not args.quiet)
    if args.json:
        print(json.dumps(record.to_dict() if record else {"codec": "none"}))
        return 0
    if record is None:
        print_table("gcmr compress-vectors", ("field", "value"),
                    [("item vectors", "the corpus's embeddings.npy (compact copy removed)")])
        return 0
    full = 4 * record.dim
    pq = f" (m = {record.m} x {record.nbits} bits" + (", OPQ rotation)" if record.rotation ==
                                                      "opq" else ")")
    rows = [("codec", record.codec + (pq if record.codec == "pq" else "")),
            ("items", f"{record.rows:,}"),
            ("bytes per item", (f"{record.bytes_per_item:,} (float32: {full:,}; "
                                f"{full / record.bytes_per_item:.0f}x smaller)"))]
    if record.codec == "pq":
        rows += [("codebook", f"{record.codebook_bytes:,} bytes (shared by all items)"),
                 ("trained on", f"{record.train_rows:,} items (seed {record.seed})")]
    rows.append(("seconds", f"{record.seconds:.2f}"))
    print_table("gcmr compress-vectors", ("field", "value"), rows)
    return 0
