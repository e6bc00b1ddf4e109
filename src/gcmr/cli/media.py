"""Media verbs: ``embed`` (encoder backends), ``caption`` (caption enhancement) and ``import``
(the benchmark datasets and generic folders -> corpus format v1)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gcmr.cli.common import positive_int, print_json, print_table

DEVICE_HELP = "auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:1, mps"
PRECISION_HELP = "auto (default: fp16 on CUDA, fp32 elsewhere), fp32, fp16, bf16"


def _spec_help() -> str:
    from gcmr.encoders.registry import SPEC_HELP

    return "encoder specs (--encoder / --text-encoder):\n" + "\n".join(
        "  " + line for line in SPEC_HELP.splitlines())


def _add_runtime(p: argparse.ArgumentParser, *, batch_default: str) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--precision", default="auto",
                   choices=("auto", "fp32", "fp16", "bf16"), help=PRECISION_HELP)
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"items per forward pass (default {batch_default})")
    g.add_argument("--restart", action="store_true",
                   help="discard the partial results of an interrupted run instead of resuming")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")


SHARD_HELP = (
    "scaling out: under torchrun (torchrun --nproc-per-node N -m gcmr %s ...) each rank takes "
    "every N-th chunk and rank 0 writes the result. For independent jobs (a job array; the "
    "partial folder on a shared file system), --shard I/N runs shard I (0-based) of N and "
    "leaves its chunks; the same command without --shard (it computes whatever is still "
    "missing) or with --merge (it refuses to) then writes the result")


def _add_sharding(p: argparse.ArgumentParser, verb: str) -> None:
    g = p.add_argument_group("scaling out", SHARD_HELP % verb)
    g.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="compute only shard I of N (chunks c with c mod N = I)")
    g.add_argument("--merge", action="store_true",
                   help="compute nothing: write the result from the finished chunks of the "
                   "shards (an error names the missing ones)")


def _shard(text: str) -> Any:
    from gcmr.encoders.resumable import Shard
    from gcmr.errors import ConfigError

    try:
        return Shard.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--shard ")) from None


def _sharding(args: argparse.Namespace) -> dict[str, Any]:
    from gcmr.errors import ConfigError

    if args.merge and args.shard is not None:
        raise ConfigError("--merge writes the result of all shards; drop --shard")
    return {"shard": args.shard, "merge_only": args.merge}


def _add_caption_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("caption generation")
    g.add_argument("--num-captions", type=positive_int, default=5,
                   help="captions per item (default 5)")
    g.add_argument("--sample", action="store_true",
                   help="nucleus sampling (diverse captions) instead of beam search")
    g.add_argument("--top-p", type=float, default=0.9, help="sampling top-p (default 0.9)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature (default 1.0)")
    g.add_argument("--num-beams", type=positive_int, default=5,
                   help="beams for beam search (default 5, at least --num-captions)")
    g.add_argument("--max-new-tokens", type=positive_int, default=30,
                   help="caption length limit in tokens (default 30)")
    g.add_argument("--caption-frames", type=positive_int, default=4,
                   help="frames captioned per video (default 4)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def _caption_options(args: argparse.Namespace) -> Any:
    from gcmr.encoders.captioner import CaptionOptions

    return CaptionOptions(num_captions=args.num_captions, sample=args.sample, top_p=args.top_p,
                          temperature=args.temperature, num_beams=args.num_beams,
                          max_new_tokens=args.max_new_tokens, frames=args.caption_frames,
                          seed=args.seed)


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    # ------------------------------------------------------------------ embed
    p = sub.add_parser(
        "embed", help="embed media files or a corpus with an encoder backend",
        formatter_class=fmt,
        description="Embed media with an encoder backend, resumably (finished chunks are kept "
        "in <out>.partial/ and reused when the same command runs again).\n\n"
        "INPUT is\n"
        "  a media folder or a text file of media paths -> --out EMB.npy and EMB.ids.txt\n"
        "      (usable later as --encoder precomputed:EMB.npy);\n"
        "  a corpus directory -> rewrites its embeddings.npy (--target items: each item's\n"
        "      'source' file, relative to --media-root) or writes caption_embeddings.npy\n"
        "      (--target captions: mean text embedding of each item's captions), atomically,\n"
        "      in place or to --out DIR.\n\n" + _spec_help(),
        epilog="examples:\n"
        "  gcmr embed photos/ --encoder efficientnet-lite0 --out photos.npy\n"
        "  gcmr embed corpora/flickr30k --encoder open_clip:ViT-B-32:laion2b_s34b_b79k\n"
        "  gcmr embed corpora/msrvtt --encoder hf-clip:models/clip-vit-b32 --frames 8\n"
        "  gcmr embed corpora/clotho --target captions --encoder minilm")
    p.add_argument("input", type=Path, help="media folder, file list, or corpus directory")
    p.add_argument("--encoder", required=True, help="encoder spec (see above)")
    p.add_argument("--out", type=Path, default=None,
                   help="output .npy (media input; required) or corpus directory (corpus input; "
                   "default: in place)")
    p.add_argument("--target", choices=("items", "captions"), default="items",
                   help="corpus input: embed item media (items) or item captions (captions)")
    p.add_argument("--modality", choices=("image", "audio", "video"), default=None,
                   help="media modality (default: from the corpus or the file extensions)")
    p.add_argument("--media-root", type=Path, default=None,
                   help="corpus input: folder that item sources are relative to (default: the "
                   "media_root recorded by gcmr import)")
    p.add_argument("--frames", type=positive_int, default=8,
                   help="video: frames sampled and mean-pooled per video (default 8)")
    p.add_argument("--chunk-size", type=positive_int, default=1024,
                   help="items per saved chunk (default 1024)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="threads decoding media (default min(4, CPUs))")
    _add_runtime(p, batch_default="32")
    _add_sharding(p, "embed")
    p.set_defaults(func=cmd_embed)

    # ------------------------------------------------------------------ caption
    p = sub.add_parser(
        "caption", help="generate item captions (caption enhancement) or load them from a file",
        formatter_class=fmt,
        description="Set the 'captions' (training pseudo-queries) of every item of a corpus: "
        "generated by a transformers image-to-text model (BLIP, BLIP-2, GIT, ...; video: "
        "captions of evenly spaced frames) or read from a CSV/JSONL file (any modality; the "
        "way to caption audio). items.jsonl is rewritten atomically; --mode append keeps "
        "existing captions, replace drops them (items that get no new captions keep theirs).\n"
        "Captioning is resumable (chunks in a hidden .partial folder beside the corpus).",
        epilog="examples:\n"
        "  gcmr caption corpora/flickr30k --captioner Salesforce/blip-image-captioning-large \\\n"
        "      --num-captions 5 --sample --mode replace\n"
        "  gcmr caption corpora/msrvtt --captioner hf:models/blip-large --caption-frames 4\n"
        "  gcmr caption corpora/clotho --captions-file clotho_generated.csv\n"
        "captions file: CSV with a key column (id, file, file_name, ...) and caption or "
        "caption_1..n columns, or JSONL {\"id\"|\"file\": ..., \"caption\"|\"captions\": ...}")
    p.add_argument("corpus", type=Path, help="corpus directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--captioner", help="image-to-text model: [hf:]LOCAL_DIR or hub name")
    src.add_argument("--captions-file", type=Path, help="CSV or JSONL of captions per item")
    p.add_argument("--mode", choices=("append", "replace"), default="append",
                   help="keep existing captions and add (append, default) or replace them")
    p.add_argument("--media-root", type=Path, default=None,
                   help="folder that item sources are relative to (default: recorded by import)")
    p.add_argument("--out", type=Path, default=None, help="write a new corpus here instead of "
                   "replacing CORPUS")
    p.add_argument("--chunk-size", type=positive_int, default=256,
                   help="items per saved chunk (default 256)")
    _add_caption_options(p)
    _add_runtime(p, batch_default="8")
    _add_sharding(p, "caption")
    p.set_defaults(func=cmd_caption)

    # ------------------------------------------------------------------ import
    from gcmr.encoders.importers import DATASETS

    p = sub.add_parser(
        "import", help="build a corpus from a benchmark dataset or a captioned media folder",
        formatter_class=fmt,
        description="Read a dataset's standard annotation files and media under --root and "
        "write corpus format v1 to OUT: items = media files present (missing ones are counted, "
        "not fatal), embeddings from --encoder, human captions as train/val/test query splits, "
        "item captions from --captioner / --captions-file, else the human captions of train "
        "items only (val/test captions never leak into training).\n\n"
        "datasets:\n"
        "  flickr30k  dataset_flickr30k.json (Karpathy split) + the image folder\n"
        "  coco       dataset_coco.json (Karpathy split, 5k test) + train2014/ val2014/\n"
        "  clotho     clotho_captions_{development,validation,evaluation}.csv + audio folders\n"
        "  audiocaps  train.csv val.csv test.csv + the audio clips you have\n"
        "  msrvtt     MSRVTT_data.json + MSRVTT_train.9k.csv + MSRVTT_JSFUSION_test.csv (1k-A)\n"
        "  msvd       AllVideoDescriptions.txt + youtube_mapping.txt (1200/100/670)\n"
        "  generic    captions.csv / .jsonl with file, caption[, split] + the media folder\n\n"
        + _spec_help(),
        epilog="examples:\n"
        "  gcmr import flickr30k --root data/flickr30k corpora/flickr30k \\\n"
        "      --encoder open_clip:ViT-B-32:laion2b_s34b_b79k \\\n"
        "      --captioner Salesforce/blip-image-captioning-large --sample\n"
        "  gcmr import clotho --root data/clotho corpora/clotho --encoder hf-clap:models/clap\n"
        "  gcmr import msrvtt --root data/msrvtt corpora/msrvtt --encoder imagebind:ckpt.pth\n"
        "  gcmr import generic --root photos/ corpora/photos   # photos/captions.csv")
    p.add_argument("dataset", choices=DATASETS, help="dataset layout to read")
    p.add_argument("out", type=Path, help="output corpus directory")
    p.add_argument("--root", type=Path, required=True, help="dataset folder (media + annotations)")
    p.add_argument("--annotations", type=Path, default=None,
                   help="annotation file (or folder, for clotho/audiocaps) if not under --root")
    p.add_argument("--encoder", default=None,
                   help="encoder spec (default efficientnet-lite0 for image/video; audio "
                   "needs one)")
    cap = p.add_mutually_exclusive_group()
    cap.add_argument("--captioner", default=None, help="generate item captions with this "
                     "image-to-text model ([hf:]DIR or hub name)")
    cap.add_argument("--captions-file", type=Path, default=None,
                     help="item captions from a CSV/JSONL file (e.g. audio captions)")
    p.add_argument("--caption-embeddings", action="store_true",
                   help="also write caption_embeddings.npy (text tower of --encoder, or "
                   "--text-encoder)")
    p.add_argument("--text-encoder", default=None, help="text encoder for --caption-embeddings "
                   "(e.g. minilm)")
    p.add_argument("--split", choices=("1k-A", "7k"), default=None,
                   help="msrvtt split protocol (default 1k-A)")
    p.add_argument("--modality", choices=("image", "audio", "video"), default=None,
                   help="generic: media modality (default: from file extensions)")
    p.add_argument("--name", default=None, help="generic: corpus name (default: folder name)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="keep the first N items of each split (quick trials)")
    p.add_argument("--frames", type=positive_int, default=8,
                   help="video: frames mean-pooled per video for embedding (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_caption_options(p)
    _add_runtime(p, batch_default="32 (captioner: 8)")
    p.set_defaults(func=cmd_import)


def _show(title: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                              for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        rows.append((key.replace("_", " "), value))
    print_table(title, ("field", "value"), rows)


def cmd_embed(args: argparse.Namespace) -> int:
    from gcmr.encoders.pipeline import embed_corpus, embed_inputs, is_corpus_dir
    from gcmr.encoders.registry import load_encoder, load_text_encoder
    from gcmr.errors import ConfigError

    opts = {"device": args.device, "precision": args.precision, "batch_size": args.batch_size}
    if is_corpus_dir(args.input):
        import json

        modality = args.modality or json.loads(
            (args.input / "corpus.json").read_text(encoding="utf-8")).get("modality")
        if args.target == "captions":
            encoder = load_text_encoder(args.encoder, **opts)
        else:
            if modality not in ("image", "audio", "video"):
                raise ConfigError(f"{args.input}: corpus modality is {modality!r}; pass "
                                  f"--modality image|audio|video")
            encoder = load_encoder(args.encoder, modality=modality, frames=args.frames,
                                   workers=args.workers, **opts)
        summary = embed_corpus(encoder, args.input, target=args.target,
                               media_root=args.media_root, out=args.out,
                               chunk_size=args.chunk_size, restart=args.restart,
                               show_progress=not args.no_progress, **_sharding(args))
    else:
        if args.target != "items":
            raise ConfigError("--target captions needs a corpus directory as INPUT")
        if args.out is None:
            raise ConfigError("--out EMB.npy is required when INPUT is a media folder or list")
        from gcmr.encoders.media import guess_modality
        from gcmr.encoders.pipeline import media_inputs

        modality = args.modality
        if modality is None:
            modality = guess_modality(media_inputs(args.input)[1])
        encoder = load_encoder(args.encoder, modality=modality, frames=args.frames,
                               workers=args.workers, **opts)
        summary = embed_inputs(encoder, args.input, args.out, modality=modality,
                               chunk_size=args.chunk_size, restart=args.restart,
                               show_progress=not args.no_progress, **_sharding(args))
    _show("embedded" if summary.get("merged", True) else f"embedded shard {args.shard}",
          summary, args.json)
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from gcmr.encoders.captioner import load_captioner
    from gcmr.encoders.pipeline import caption_corpus

    sharding = _sharding(args)
    captioner = None
    if args.captioner:
        captioner = load_captioner(args.captioner, options=_caption_options(args),
                                   device=args.device, precision=args.precision,
                                   batch_size=args.batch_size or 8)
    summary = caption_corpus(args.corpus, captioner=captioner, captions_file=args.captions_file,
                             mode=args.mode, media_root=args.media_root, out=args.out,
                             chunk_size=args.chunk_size, restart=args.restart,
                             show_progress=not args.no_progress, **sharding)
    _show("captioned" if summary.get("merged", True) else f"captioned shard {args.shard}",
          summary, args.json)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gcmr.encoders.importers import import_dataset

    summary = import_dataset(
        args.dataset, args.root, args.out, encoder=args.encoder, captioner=args.captioner,
        caption_options=_caption_options(args), captions_file=args.captions_file,
        text_encoder=args.text_encoder, caption_embeddings=args.caption_embeddings,
        limit=args.limit, frames=args.frames, device=args.device, precision=args.precision,
        batch_size=args.batch_size, overwrite=args.overwrite, restart=args.restart,
        show_progress=not args.no_progress, annotations=args.annotations, split=args.split,
        modality=args.modality, name=args.name)
    _show(f"imported {args.dataset} -> {args.out}", summary, args.json)
    return 0
