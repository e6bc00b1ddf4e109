"""Live update verbs: ``add`` and ``delete`` (:mod:`gcmr.search.updates`; the optional
fine-tune after an add is :mod:`gcmr.train.finetune`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gcmr.cli.common import nonneg_float, positive_int, print_table
from gcmr.errors import GcmrError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("add", help="add items to a trained model without retraining",
                       description="Give new items identifiers with the index's fitted scheme "
                       "and add them to the model's trie: retrievable at once. Optionally "
                       "fine-tune for a short time on their captions mixed with replayed old "
                       "pairs. The model directory is replaced atomically by its next version; "
                       "the original corpus and index are not touched.")
    p.add_argument("model", type=Path, help="model directory (gcmr train)")
    p.add_argument("source", type=Path, help="a corpus directory (corpus format v1) of the new "
                   "items, or an items JSONL file (one {id, captions, source?} per line) with "
                   "its embeddings .npy (--embeddings)")
    p.add_argument("--embeddings", type=Path, help="embeddings .npy of an items JSONL source "
                   "(row i = line i; default: SOURCE with the suffix .npy)")
    p.add_argument("--corpus", type=Path, help="the model's training corpus, when it has moved")
    budget = p.add_argument_group("fine-tune (off unless a budget is given)")
    budget.add_argument("--finetune-minutes", type=nonneg_float, default=0.0,
                        help="fine-tune for about this many minutes (checked between epochs)")
    budget.add_argument("--finetune-steps", type=positive_int,
                        help="fine-tune for this many optimizer steps")
    budget.add_argument("--replay", type=nonneg_float, default=1.0,
                        help="replayed old pairs per new pair in each epoch (default 1)")
    budget.add_argument("--finetune-lr", type=nonneg_float, default=0.0,
                        help="constant learning rate (default half the training run's peak)")
    budget.add_argument("--finetune-batch-size", type=positive_int,
                        help="batch size (default the training run's)")
    p.add_argument("--device", default="cpu", help="device of the fine-tune (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the model's and index's files at load")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("delete", help="delete items from a trained model",
                       description="Remove items from the model's trie: no search returns them "
                       "from now on. The model directory is replaced atomically by its next "
                       "version.")
    p.add_argument("model", type=Path, help="model directory (gcmr train)")
    p.add_argument("ids", nargs="+", help="item ids to delete")
    p.add_argument("--corpus", type=Path, help="the model's training corpus, when it has moved")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the model's and index's files at load")
    p.set_defaults(func=cmd_delete)


def _report(results: list, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in results]))
        return
    for r in results:
        rows = [("version", r.version), ("items changed", len(r.ids)),
                ("items", f"{r.num_live:,} live of {r.num_items:,} rows"),
                ("level sizes", r.level_sizes), ("seconds", f"{r.seconds:.2f}")]
        if r.grown:
            rows.append(("note", "the unique level grew (counter tokens added)"))
        rows += [(k, v) for k, v in r.details.items() if k != "origin"]
        print_table(f"gcmr {r.op}", ("field", "value"), rows)


def cmd_add(args: argparse.Namespace) -> int:
    from gcmr.cli.retrieval import require_dir
    from gcmr.search.retriever import Retriever
    from gcmr.search.updates import NewItems, add_to

    require_dir(args.model, "model")
    finetune = bool(args.finetune_minutes or args.finetune_steps)
    if not finetune and any(x is not None and x != d for x, d in (
            (args.finetune_lr, 0.0), (args.finetune_batch_size, None), (args.replay, 1.0))):
        raise GcmrError("--replay, --finetune-lr and --finetune-batch-size apply to a "
                        "fine-tune: give --finetune-minutes or --finetune-steps")
    config = None
    if finetune:
        from gcmr.train.finetune import FinetuneConfig, finetune_items

        config = FinetuneConfig(minutes=args.finetune_minutes, steps=args.finetune_steps or 0,
                                replay=args.replay, lr=args.finetune_lr,
                                batch_size=args.finetune_batch_size or 0)
        config.validate()
    items = NewItems.read(args.source, embeddings=args.embeddings)
    retriever = Retriever.load(args.model, corpus_path=args.corpus, device=args.device,
                               verify=not args.no_verify)
    results = [add_to(retriever, items, save=True, show_progress=not args.quiet)]
    if config is not None:
        results.append(finetune_items(retriever, list(items.ids), config, save=True,
                                      show_progress=not args.quiet))
    _report(results, args.json)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from gcmr.cli.retrieval import require_dir
    from gcmr.search.updates import delete_items

    require_dir(args.model, "model")
    result = delete_items(args.model, args.ids, corpus_path=args.corpus,
                          verify=not args.no_verify)
    _report([result], args.json)
    return 0
