"""Caption enhancement: generate pseudo-query captions for every item with a pretrained
image-to-text model (CART's "caption enhancement": the retriever learns to map these captions to
the item's identifier, which is how it memorizes items that have no human captions).

Images are captioned directly; a video is captioned on evenly spaced frames (captions taken
round-robin across frames, so they describe different moments); audio has no captioner here,
so its captions come from a file (:func:`read_captions_file`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcmr.config import JsonConfig
from gcmr.encoders.base import TorchEncoder, batched, inference
from gcmr.encoders.hf import _source
from gcmr.encoders.resumable import ChunkedJob, Shard, open_job
from gcmr.errors import ConfigError, GcmrError
from gcmr.extras import require
from gcmr.progress import progress

DEFAULT_CAPTION_CHUNK = 256


@dataclass
class CaptionOptions(JsonConfig):
    """How captions are generated.

    ``num_captions`` per item; beam search (``num_beams`` >= ``num_captions``, the top beams
    returned) unless ``sample`` (nucleus sampling with ``top_p`` and ``temperature``, more
    diverse captions, reproducible through ``seed``). ``frames``: frames captioned per video.
    """

    num_captions: int = 5
    sample: bool = False
    top_p: float = 0.9
    temperature: float = 1.0
    num_beams: int = 5
    max_new_tokens: int = 30
    frames: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_captions", "num_beams", "max_new_tokens", "frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"caption option {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"caption option top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ConfigError(f"caption option temperature must be > 0, got {self.temperature}")


def clean_captions(texts: Sequence[str], limit: int) -> list[str]:
    """Strip, collapse whitespace, drop empties and case-insensitive duplicates; keep order."""
    out: list[str] = []
    seen: set[str] = set()
    for text in texts:
        text = " ".join(str(text).split())
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
        if len(out) >= limit:
            break
    return out


class HFCaptioner(TorchEncoder):
    """A transformers image-to-text model (BLIP, BLIP-2, GIT, VisionEncoderDecoder, ...) from a
    local directory or a hub name: ``AutoProcessor`` + ``AutoModelForImageTextToText``."""

    def __init__(self, source: str, *, options: CaptionOptions | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        transformers = require("transformers", "encoders", purpose="caption generation")
        self.options = options or CaptionOptions()
        path, opts = _source(source)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(path, **opts)
            auto = getattr(transformers, "AutoModelForImageTextToText", None) or \
                transformers.AutoModelForVision2Seq  # transformers < 4.46
            self.model = auto.from_pretrained(path, **opts).eval().to(self.device)
        except (OSError, ValueError, KeyError) as exc:
            raise GcmrError(f"cannot load an image-to-text model from {source!r}: {exc}") from exc
        self.name = f"hf:{source}"

    def _decode(self, ids: Any) -> list[str]:
        decode = getattr(self.processor, "batch_decode", None)
        if decode is None:
            decode = self.processor.tokenizer.batch_decode
        return decode(ids, skip_special_tokens=True)

    def caption_images(self, images: Sequence[Any], *, per_image: int | None = None,
                       seed: int | None = None) -> list[list[str]]:
        """Up to ``per_image`` (default ``num_captions``) distinct captions for each PIL image."""
        import torch

        o = self.options
        k = per_image or o.num_captions
        out: list[list[str]] = []
        if seed is not None:
            torch.manual_seed(seed)
        for batch in batched(list(images), self.batch_size):
            inputs = self.processor(images=list(batch), return_tensors="pt")
            inputs = {key: v.to(self.device) for key, v in inputs.items()}
            gen: dict[str, Any] = {"max_new_tokens": o.max_new_tokens, "num_return_sequences": k}
            if o.sample:
                gen.update(do_sample=True, top_p=o.top_p, temperature=o.temperature)
            else:
                gen.update(do_sample=False, num_beams=max(o.num_beams, k))
            with inference(self.device, self.dtype):
                ids = self.model.generate(**inputs, **gen)
            texts = self._decode(ids)
            for i in range(len(batch)):
                out.append(clean_captions(texts[i * k:(i + 1) * k], k))
        return out

    def caption_files(self, paths: Sequence[str | Path], modality: str, *,
                      seed: int | None = None) -> list[list[str]]:
        """Captions for image or video files (audio has no captioner: use a captions file)."""
        from gcmr.encoders.media import load_image, sample_video_frames

        o = self.options
        if modality == "image":
            return self.caption_images(self._map(load_image, list(paths)), seed=seed)
        if modality == "video":
            per_frame = math.ceil(o.num_captions / o.frames)
            frame_lists = self._map(lambda p: sample_video_frames(p, o.frames), list(paths))
            flat = [im for frames in frame_lists for im in frames]
            caps = self.caption_images(flat, per_image=per_frame, seed=seed)
            out = []
            for v in range(len(paths)):
                mine = caps[v * o.frames:(v + 1) * o.frames]
                # round-robin across frames: caption 1 of every frame, then caption 2, ...
                merged = [c[j] for j in range(per_frame) for c in mine if j < len(c)]
                out.append(clean_captions(merged, o.num_captions))
            return out
        raise GcmrError(f"no captioner for {modality}: pass the captions in a file "
                        f"(--captions-file) instead")


def load_captioner(spec: str, *, options: CaptionOptions | None = None, device: str | None = None,
                   precision: str = "auto", batch_size: int = 8,
                   workers: int | None = None) -> HFCaptioner:
    """``hf:SRC`` or a bare ``SRC`` (local model directory or hub name, e.g.
    ``Salesforce/blip-image-captioning-large``)."""
    source = spec.removeprefix("hf:")
    if not source:
        raise ConfigError("captioner spec is empty; pass hf:DIR_OR_HUB_NAME")
    return HFCaptioner(source, options=options, device=device, precision=precision,
                       batch_size=batch_size, workers=workers)


def caption_items(
    captioner: HFCaptioner,
    *,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    modality: str,
    partial_dir: str | Path,
    chunk_size: int = DEFAULT_CAPTION_CHUNK,
    restart: bool = False,
    show_progress: bool = True,
) -> list[list[str]]:
    """Captions for every item, resumable through ``partial_dir`` (one JSONL per finished chunk).

    Sampling is seeded per chunk (``seed + chunk index``), so a resumed run produces the same
    captions as an uninterrupted one. The partial directory is removed on success.
    """
    job = caption_job(captioner, ids=ids, paths=paths, modality=modality,
                      partial_dir=partial_dir, chunk_size=chunk_size, restart=restart,
                      show_progress=show_progress)
    result = collect_captions(job)
    job.remove()
    return result


def caption_job(
    captioner: HFCaptioner,
    *,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    modality: str,
    partial_dir: str | Path,
    chunk_size: int = DEFAULT_CAPTION_CHUNK,
    restart: bool = False,
    show_progress: bool = True,
    shard: Shard | None = None,
    merge_only: bool = False,
) -> ChunkedJob:
    """Caption the items of ``shard``'s chunks (all without one) into ``partial_dir``; the
    seeds depend on the chunk, not on the shard, so any sharding gives the same captions.
    ``merge_only`` captions nothing and checks that every chunk is finished."""
    if len(ids) != len(paths):
        raise GcmrError(f"{len(ids)} ids but {len(paths)} paths")
    job = open_job(partial_dir, job={"kind": "caption", "captioner": captioner.name,
                                     "modality": modality,
                                     "options": captioner.options.to_dict()},
                   keys=[f"{i}\t{p}" for i, p in zip(ids, paths)], chunk_size=chunk_size,
                   restart=restart, shard=shard)
    if merge_only:
        job.require_complete("jsonl")
        return job
    done = job.done_items("jsonl")
    desc = f"caption ({captioner.name})" + (f" shard {job.shard}" if job.shard.count > 1 else "")
    show_progress = show_progress and (not job.shard.ranks or job.shard.index == 0)
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(desc, total=job.owned_items(), completed=done,
                            info=f"resumed {done:,} done" if done else "")
        for index in job.pending("jsonl"):
            start, stop = job.bounds(index)
            caps: list[list[str]] = []
            for b0 in range(start, stop, captioner.batch_size):
                b1 = min(stop, b0 + captioner.batch_size)
                seed = captioner.options.seed + index * 1_000_003 + b0 \
                    if captioner.options.sample else None
                caps.extend(captioner.caption_files(paths[b0:b1], modality, seed=seed))
                bar.advance(task, b1 - b0)
            job.save_rows(index, caps)
    return job


def collect_captions(job: ChunkedJob) -> list[list[str]]:
    """The captions of every item of a finished job, in item order."""
    job.require_complete("jsonl")
    result: list[list[str]] = []
    for index in range(job.num_chunks):
        result.extend(job.load_rows(index))
    return result


# ----------------------------------------------------------------------------- captions from a file

KEY_COLUMNS = ("id", "file", "file_name", "filename", "path", "source", "youtube_id", "video_id")


def read_captions_file(path: str | Path) -> dict[str, list[str]]:
    """Captions keyed by item id or file, from CSV or JSONL.

    CSV: a header with a key column (one of ``id, file, file_name, filename, path, source,
    youtube_id, video_id``) and a ``caption`` column or ``caption_1 .. caption_n`` columns
    (the Clotho layout); rows with the same key accumulate. JSONL: objects with a key field and
    ``caption`` (string) or ``captions`` (list).
    """
    path = Path(path)
    if not path.is_file():
        raise GcmrError(f"{path}: captions file not found")
    out: dict[str, list[str]] = {}
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GcmrError(f"{path} line {lineno}: malformed JSON ({exc})") from exc
                if not isinstance(obj, dict):
                    raise GcmrError(f"{path} line {lineno}: expected a JSON object")
                key = next((obj[k] for k in KEY_COLUMNS if isinstance(obj.get(k), str)), None)
                if key is None:
                    raise GcmrError(f"{path} line {lineno}: no key field "
                                    f"(one of {list(KEY_COLUMNS)})")
                caps = obj.get("captions", obj.get("caption"))
                caps = [caps] if isinstance(caps, str) else caps
                if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                    raise GcmrError(f"{path} line {lineno}: field 'caption'/'captions' must be a "
                                    f"string or a list of strings")
                out.setdefault(key, []).extend(caps)
        return out
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        key_col = next((c for c in KEY_COLUMNS if c in header), None)
        cap_cols = [c for c in header if c == "caption" or c.startswith("caption_")]
        if key_col is None or not cap_cols:
            raise GcmrError(f"{path}: CSV header {header} needs a key column (one of "
                            f"{list(KEY_COLUMNS)}) and caption or caption_1..caption_n columns")
        for row in reader:
            key = (row.get(key_col) or "").strip()
            if key:
                out.setdefault(key, []).extend(
                    (row.get(c) or "").strip() for c in cap_cols if (row.get(c) or "").strip())
    return out


def match_captions(table: dict[str, list[str]], ids: Sequence[str],
                   sources: Sequence[str | None]) -> tuple[list[list[str]], int]:
    """Captions per item from a keyed table (key = id, source path, file name or stem);
    returns (captions in item order, number of items without a match)."""
    out: list[list[str]] = []
    unmatched = 0
    for item_id, source in zip(ids, sources):
        keys = [item_id]
        if source:
            p = Path(source)
            keys += [source, p.as_posix(), p.name, p.stem]
        hit = next((table[k] for k in keys if k in table), None)
        if hit is None:
            unmatched += 1
            hit = []
        out.append(list(hit))
    return out, unmatched
