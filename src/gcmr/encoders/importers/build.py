"""Records -> corpus directory: embed the media (resumable), pick the item captions, write the
query splits, and write everything atomically with :class:`gcmr.corpus.CorpusWriter`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gcmr.corpus.format import CorpusWriter
from gcmr.encoders.importers.base import HUMAN_TRAIN, DatasetRecords, relative_source
from gcmr.errors import ArtifactError, ConfigError, GcmrError

IMPORTER_VERSION = 1


def _work(out: Path, kind: str) -> Path:
    # hidden siblings of the output: they survive a crash, so a rerun resumes
    return out.parent / f".{out.name}.{kind}"


def build_corpus(
    data: DatasetRecords,
    out: str | Path,
    *,
    encoder: Any,
    captioner: Any = None,
    captions_file: str | Path | None = None,
    text_encoder: Any = None,
    caption_embeddings: bool = False,
    overwrite: bool = False,
    chunk_size: int = 1024,
    restart: bool = False,
    dtype: str = "float32",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write ``data`` as a corpus at ``out``; returns a summary (items, missing media, queries
    per split, where captions came from).

    ``encoder``: an :class:`~gcmr.encoders.Encoder` for ``data.modality``; ``captioner``: an
    :class:`~gcmr.encoders.captioner.HFCaptioner` (image/video) or ``captions_file`` (any
    modality) for item captions, else human train captions; ``caption_embeddings`` writes
    ``caption_embeddings.npy`` with ``text_encoder`` (default: the encoder's text tower).
    """
    from gcmr.encoders.captioner import caption_items, match_captions, read_captions_file
    from gcmr.encoders.embed import embed_captions_job, embed_items_job, iter_chunks
    from gcmr.encoders.resumable import partial_dir_for

    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists (use --overwrite to replace it)")
    if captioner is not None and captions_file is not None:
        raise ConfigError("pass either a captioner or a captions file, not both")
    if captioner is not None and data.modality == "audio":
        raise ConfigError(f"{data.name} is audio and there is no audio captioner; pass the "
                          f"captions in a file (--captions-file) instead")
    data.check()
    if encoder.modality not in (data.modality, "other"):
        raise ConfigError(f"{data.name} is {data.modality} but encoder {encoder.name!r} embeds "
                          f"{encoder.modality}")
    if caption_embeddings:
        text_encoder = text_encoder or encoder
        if not getattr(text_encoder, "has_text", False):
            raise ConfigError(f"encoder {text_encoder.name!r} has no text tower for "
                              f"caption_embeddings.npy; pass a text encoder (e.g. --text-encoder "
                              f"minilm)")
    records = data.records
    ids = [r.id for r in records]
    paths = [r.path for r in records]
    sources = [relative_source(r.path, data.root) for r in records]

    emb_job = embed_items_job(encoder, ids=ids, paths=paths,
                              partial_dir=partial_dir_for(_work(out, "embeddings")),
                              chunk_size=chunk_size, restart=restart, show_progress=show_progress)
    unmatched = 0
    if captioner is not None:
        captions = caption_items(captioner, ids=ids, paths=paths, modality=data.modality,
                                 partial_dir=partial_dir_for(_work(out, "captions")),
                                 restart=restart, show_progress=show_progress)
        captions_from = f"captioner:{captioner.name}"
    elif captions_file is not None:
        captions, unmatched = match_captions(read_captions_file(captions_file), ids, sources)
        captions = [[" ".join(c.split()) for c in caps if c.strip()] for caps in captions]
        captions_from = f"file:{captions_file}"
    else:
        captions = data.train_captions()
        captions_from = HUMAN_TRAIN
    cap_job = None
    if caption_embeddings:
        cap_job = embed_captions_job(text_encoder, captions,
                                     partial_dir=partial_dir_for(_work(out, "caption-embeddings")),
                                     chunk_size=chunk_size, restart=restart,
                                     show_progress=show_progress)
    queries = data.queries()
    extra = {
        "source_dataset": data.name,
        "media_root": str(data.root.resolve()),
        "missing_media": len(data.missing),
        "captions_from": captions_from,
        "importer": {"version": IMPORTER_VERSION, **data.notes},
    }
    if getattr(encoder, "frames", None):
        extra["video_frames"] = encoder.frames  # frames mean-pooled per video
    if cap_job is not None:
        extra["caption_embedding_model"] = text_encoder.name
    with CorpusWriter(out, name=data.name, modality=data.modality, embedding_dim=encoder.dim,
                      num_items=len(records), embedding_model=encoder.name, dtype=dtype,
                      overwrite=overwrite, extra=extra) as writer:
        row = 0
        for chunk in iter_chunks(emb_job):
            n = len(chunk)
            writer.add_items(ids[row:row + n], captions[row:row + n], chunk, sources[row:row + n])
            row += n
        for split in sorted(queries):
            writer.write_queries(split, queries[split])
        if cap_job is not None:
            writer.write_caption_embeddings(np.concatenate(list(iter_chunks(cap_job)), axis=0))
    emb_job.remove()
    if cap_job is not None:
        cap_job.remove()
    if row != len(records):  # pragma: no cover - iter_chunks guarantees it
        raise GcmrError(f"wrote {row} of {len(records)} items")
    summary = {
        "corpus": str(out),
        "dataset": data.name,
        "modality": data.modality,
        "items": len(records),
        "items_per_split": data.split_counts(),
        "missing_media": len(data.missing),
        "missing_examples": data.missing[:5],
        "queries": {k: len(v) for k, v in sorted(queries.items())},
        "captions_from": captions_from,
        "items_with_captions": sum(1 for c in captions if c),
        "embedding_model": encoder.name,
        "dim": encoder.dim,
    }
    if captions_file is not None:
        summary["items_unmatched_in_captions_file"] = unmatched
    return summary
