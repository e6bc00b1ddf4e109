"""Run the CART / AVG paper protocol end to end on the real datasets that are on disk.

For each dataset found under ``--data-root`` (``flickr30k/``, ``coco/``, ``clotho/``,
``audiocaps/``, ``msrvtt/``, ``msvd/``, laid out as ``gcmr import --help`` describes):

    gcmr import DATASET --root DATA/DATASET WORK/DATASET/corpus --encoder ... [--captioner ...]
    gcmr index  WORK/DATASET/corpus WORK/DATASET/index
    gcmr train  WORK/DATASET/index  WORK/DATASET/model
    gcmr eval   WORK/DATASET/model --split test --restrict     (the papers' test-pool protocol)

and writes ``results/paper_protocol.json`` and ``.md`` (R@1/5/10, MRR@10 per dataset, with the
encoder, captioner and item counts). Every command is printed before it runs, so any stage can
be rerun by hand; finished stages are skipped on a rerun (and embedding / captioning resume
from their chunks), so an interrupted run continues where it stopped.

Datasets that are not present are skipped with a message naming the file that was expected;
with no dataset present the script prints what to download and exits 0.

Encoders (the papers use ImageBind for every modality):
  --imagebind CKPT   ImageBind-huge for image, video and audio (needs the imagebind package);
  otherwise images/video use open_clip ViT-B/32 (LAION-2B weights, fetched into the Hugging
  Face cache on first use) and audio needs --clap DIR_OR_HUB_NAME (e.g. laion/clap-htsat-unfused).
Captions: --captioner (default Salesforce/blip-image-captioning-large) for image and video;
audio captions come from --audio-captions DIR/<dataset>.csv when given, else the human
captions of train items (corpus.json says which in ``captions_from``).

Example:
    python benchmarks/paper_protocol.py --data-root ~/data --datasets flickr30k,clotho,msrvtt \
        --clap laion/clap-htsat-unfused --device cuda
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

DATASETS = ("flickr30k", "coco", "clotho", "audiocaps", "msrvtt", "msvd")
MODALITY = {"flickr30k": "image", "coco": "image", "clotho": "audio", "audiocaps": "audio",
            "msrvtt": "video", "msvd": "video"}
DOWNLOAD = {
    "flickr30k": "flickr30k-images/ (Flickr30K) + dataset_flickr30k.json (Karpathy splits)",
    "coco": "train2014/ val2014/ (MS-COCO 2014) + dataset_coco.json (Karpathy splits)",
    "clotho": "Clotho v2: clotho_captions_{development,validation,evaluation}.csv + audio",
    "audiocaps": "AudioCaps train.csv val.csv test.csv + the YouTube clips you could fetch",
    "msrvtt": "MSRVTT videos + msrvtt_data/ (MSRVTT_data.json, MSRVTT_train.9k.csv, "
              "MSRVTT_JSFUSION_test.csv)",
    "msvd": "YouTubeClips/ + AllVideoDescriptions.txt + youtube_mapping.txt",
}
DEFAULT_IMAGE_ENCODER = "open_clip:ViT-B-32:laion2b_s34b_b79k"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data-root", type=Path, required=True,
                   help="folder holding one sub-folder per dataset")
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help=f"comma-separated subset of {','.join(DATASETS)} (default: all)")
    p.add_argument("--work", type=Path, default=Path("runs/paper_protocol"),
                   help="where corpora, indexes and models go (default runs/paper_protocol)")
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results",
                   help="where paper_protocol.json/.md go (default benchmarks/results)")
    p.add_argument("--imagebind", help="ImageBind-huge checkpoint: the papers' encoder")
    p.add_argument("--image-encoder", default=None,
                   help=f"encoder spec for image/video (default {DEFAULT_IMAGE_ENCODER})")
    p.add_argument("--clap", help="transformers CLAP model (dir or hub name) for audio")
    p.add_argument("--captioner", default=DEFAULT_CAPTIONER,
                   help="image-to-text model for image/video captions ('none' = human train "
                   f"captions only; default {DEFAULT_CAPTIONER})")
    p.add_argument("--num-captions", type=int, default=5)
    p.add_argument("--audio-captions", type=Path,
                   help="folder with <dataset>.csv captions for audio items")
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, help="first N items per split (a quick trial)")
    p.add_argument("--index-args", default="", help="extra gcmr index flags, quoted")
    p.add_argument("--train-args", default="", help="extra gcmr train flags, quoted")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def check_present(dataset: str, root: Path) -> str | None:
    """None if the dataset's annotations are readable, else why it is skipped."""
    from gcmr.encoders.importers import read_dataset
    from gcmr.errors import GcmrError

    if not root.is_dir():
        return f"{root} does not exist (expected {DOWNLOAD[dataset]})"
    try:
        data = read_dataset(dataset, root)
        data.check()
    except GcmrError as exc:
        return f"{exc} (expected {DOWNLOAD[dataset]})"
    return None


def encoder_for(dataset: str, args: argparse.Namespace) -> str | None:
    if args.imagebind:
        return f"imagebind:{args.imagebind}"
    if MODALITY[dataset] == "audio":
        return f"hf-clap:{args.clap}" if args.clap else None
    return args.image_encoder or DEFAULT_IMAGE_ENCODER


def commands(dataset: str, args: argparse.Namespace) -> list[tuple[Path, list[str]]]:
    """(artifact that marks the stage done, gcmr argv) for each stage."""
    work = args.work / dataset
    corpus, index, model = work / "corpus", work / "index", work / "model"
    imp = ["import", dataset, "--root", str(args.data_root / dataset), str(corpus),
           "--encoder", str(encoder_for(dataset, args)), "--device", args.device]
    if MODALITY[dataset] != "audio" and args.captioner != "none":
        imp += ["--captioner", args.captioner, "--num-captions", str(args.num_captions),
                "--sample"]
    elif MODALITY[dataset] == "audio" and args.audio_captions:
        imp += ["--captions-file", str(args.audio_captions / f"{dataset}.csv")]
    if args.limit:
        imp += ["--limit", str(args.limit)]
    return [
        (corpus / "corpus.json", imp),
        (index / "manifest.json",
         ["index", str(corpus), str(index), *shlex.split(args.index_args)]),
        (model / "manifest.json", ["train", str(index), str(model), "--device", args.device,
                                   *shlex.split(args.train_args)]),
        (model / "eval_test.json", ["eval", str(model), "--split", "test", "--restrict"]),
    ]


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    from gcmr.cli import main as gcmr_main

    timings = {}
    for done_marker, argv in commands(dataset, args):
        stage = argv[0]
        print(f"$ gcmr {shlex.join(argv)}", flush=True)
        if args.dry_run:
            continue
        if done_marker.exists():
            print(f"  (done: {done_marker} exists)")
            continue
        t0 = time.perf_counter()
        code = gcmr_main(argv)
        timings[stage] = round(time.perf_counter() - t0, 1)
        if code != 0:
            return {"dataset": dataset, "status": f"failed at gcmr {stage} (exit {code})",
                    "seconds": timings}
    if args.dry_run:
        return {"dataset": dataset, "status": "dry run"}
    work = args.work / dataset
    result = json.loads((work / "model" / "eval_test.json").read_text(encoding="utf-8"))
    meta = json.loads((work / "corpus" / "corpus.json").read_text(encoding="utf-8"))
    return {"dataset": dataset, "status": "ok", "metrics": result.get("metrics"),
            "queries": result.get("queries"), "candidates": result.get("candidates"),
            "items": meta["num_items"], "missing_media": meta.get("missing_media"),
            "encoder": meta["embedding_model"], "captions_from": meta.get("captions_from"),
            "seconds": timings}


def write_results(rows: list[dict[str, Any]], out_dir: Path) -> None:
    from gcmr.artifacts import library_versions, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "paper_protocol.json", {"results": rows,
                                                 "library_versions": library_versions()})
    lines = ["# Paper protocol (test split, test-item pool)", "",
             ("| dataset | status | items | missing | R@1 | R@5 | R@10 | MRR@10 | encoder | "
             "captions |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.get("metrics") or {}
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in ("R@1", "R@5", "R@10", "MRR@10")]
        lines.append(f"| {r['dataset']} | {r['status']} | {r.get('items', '-')} | "
                     f"{r.get('missing_media', '-')} | " + " | ".join(cells) +
                     f" | {r.get('encoder', '-')} | {r.get('captions_from', '-')} |")
    (out_dir / "paper_protocol.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in DATASETS]
    if unknown:
        print(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    rows, skipped = [], []
    for dataset in wanted:
        why = check_present(dataset, args.data_root / dataset)
        if why is None and encoder_for(dataset, args) is None:
            why = "no audio encoder: pass --imagebind CKPT or --clap DIR_OR_HUB_NAME"
        if why is not None:
            print(f"skip {dataset}: {why}", flush=True)
            skipped.append(dataset)
            continue
        print(f"== {dataset} ==", flush=True)
        rows.append(run_dataset(dataset, args))
    if not rows:
        print(f"no dataset ran (skipped: {', '.join(skipped)}); put the datasets under "
              f"{args.data_root} as described in `gcmr import --help`")
        return 0
    if not args.dry_run:
        write_results(rows, args.results)
        print(f"results: {args.results / 'paper_protocol.md'}")
    return 0 if all(r["status"] in ("ok", "dry run") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
