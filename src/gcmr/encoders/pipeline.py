"""The library side of ``gcmr embed`` and ``gcmr caption``: embed a folder / file list / corpus,
and (re)caption a corpus, resumably and atomically; sharded across torchrun's ranks or
``--shard i/n`` jobs (:class:`~gcmr.encoders.resumable.Shard`), the merge writing the result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gcmr.encoders.base import Encoder
from gcmr.encoders.captioner import (
    HFCaptioner,
    caption_job,
    collect_captions,
    match_captions,
    read_captions_file,
)
from gcmr.encoders.corpus_update import media_root_of, merge_captions, rewrite_corpus
from gcmr.encoders.embed import (
    DEFAULT_CHUNK,
    assemble,
    embed_captions_job,
    embed_items_job,
    embed_to_file,
)
from gcmr.encoders.media import EXTENSIONS, list_media
from gcmr.encoders.resumable import Shard, merging, partial_dir_for, shard_summary
from gcmr.errors import ConfigError, GcmrError


def is_corpus_dir(path: str | Path) -> bool:
    return (Path(path) / "corpus.json").is_file()


def _work_path(corpus: Path, kind: str) -> Path:
    """A hidden sibling of the corpus for intermediate files (never inside the corpus)."""
    return corpus.parent / f".{corpus.name}.{kind}"


def media_inputs(source: str | Path, *, modality: str | None = None
                 ) -> tuple[list[str], list[Path]]:
    """(ids, paths) for a directory of media (ids = paths relative to it, sorted) or a text file
    with one media path per line (ids = the lines; relative lines are relative to the file)."""
    source = Path(source)
    if source.is_dir():
        paths = list_media(source, modality)
        if not paths:
            exts = sorted(EXTENSIONS[modality]) if modality else "any media extension"
            raise GcmrError(f"{source}: no media files ({exts})")
        return [p.relative_to(source).as_posix() for p in paths], paths
    if source.is_file():
        ids, paths = [], []
        for lineno, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line)
            if not p.is_absolute():
                p = source.parent / p
            if not p.is_file():
                raise GcmrError(f"{source} line {lineno}: {p}: file not found")
            ids.append(line)
            paths.append(p)
        if not ids:
            raise GcmrError(f"{source}: lists no media files")
        return ids, paths
    raise GcmrError(f"{source}: no such directory or file list")


def embed_inputs(encoder: Encoder, source: str | Path, out: str | Path, *,
                 modality: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                 restart: bool = False, show_progress: bool = True,
                 shard: Shard | None = None, merge_only: bool = False) -> dict[str, Any]:
    """Embed a media folder or file list into ``out`` (.npy) + ``out`` ``.ids.txt``."""
    ids, paths = media_inputs(source, modality=modality)
    return embed_to_file(encoder, ids=ids, paths=paths, out=out, chunk_size=chunk_size,
                         restart=restart, show_progress=show_progress, shard=shard,
                         merge_only=merge_only)


def _corpus_items(corpus: Path) -> tuple[list[str], list[str | None], list[list[str]]]:
    from gcmr.corpus import load_corpus

    c = load_corpus(corpus, check_finite=False)
    return list(c.ids), list(c.sources or []), [list(x) for x in c.captions]


def _resolve_sources(corpus: Path, ids: Sequence[str], sources: Sequence[str | None],
                     media_root: str | Path | None) -> list[Path | None]:
    root = media_root_of(corpus, media_root)
    return [None if s is None else (Path(s) if Path(s).is_absolute() else root / s)
            for s in sources]


def embed_corpus(encoder: Encoder, corpus: str | Path, *, target: str = "items",
                 media_root: str | Path | None = None, out: str | Path | None = None,
                 chunk_size: int = DEFAULT_CHUNK, restart: bool = False,
                 show_progress: bool = True, shard: Shard | None = None,
                 merge_only: bool = False) -> dict[str, Any]:
    """Re-embed a corpus: ``target="items"`` embeds each item's media (its ``source``, relative
    to ``media_root``) into ``embeddings.npy``; ``target="captions"`` writes
    ``caption_embeddings.npy`` (mean text embedding of each item's captions). The corpus is
    rewritten atomically (in place, or to ``out``). Sharded: see :func:`embed_to_file`."""
    corpus = Path(corpus)
    shard = Shard.resolve(shard)
    ids, sources, captions = _corpus_items(corpus)
    work = _work_path(corpus, f"{target}-embeddings.npy")
    if target == "items":
        paths = _resolve_sources(corpus, ids, sources, media_root)
        no_source = [i for i, p in zip(ids, paths) if p is None]
        if no_source:
            raise GcmrError(f"{corpus}: {len(no_source)} item(s) have no 'source' (e.g. "
                            f"{no_source[0]!r}); cannot embed their media")
        missing = [str(p) for p in paths if p is not None and not p.is_file()]
        if missing:
            raise GcmrError(f"{len(missing)} media file(s) not found, e.g. {missing[0]} "
                            f"(set --media-root to the folder the sources are relative to)")
        job = embed_items_job(encoder, ids=ids, paths=[p for p in paths if p is not None],
                              partial_dir=partial_dir_for(work), chunk_size=chunk_size,
                              restart=restart, show_progress=show_progress, shard=shard,
                              merge_only=merge_only)
        pieces = {"embeddings_file": work,
                  "meta_updates": {"embedding_dim": encoder.dim,
                                   "embedding_model": encoder.name}}
    elif target == "captions":
        job = embed_captions_job(encoder, captions, partial_dir=partial_dir_for(work),
                                 chunk_size=chunk_size, restart=restart,
                                 show_progress=show_progress, shard=shard,
                                 merge_only=merge_only)
        pieces = {"caption_embeddings_file": work,
                  "meta_updates": {"caption_embedding_model": encoder.name}}
    else:
        raise GcmrError(f"target must be items or captions, got {target!r}")
    summary = {"corpus": str(out or corpus), "target": target, "items": len(ids),
               "dim": encoder.dim, "encoder": encoder.name}
    if not shard.merges and not shard.ranks:
        return shard_summary(job, shard, "npy", **summary)
    with merging(shard) as merge:
        if merge:
            assemble(job, work, dim=encoder.dim, remove_partial=False)
            rewrite_corpus(corpus, out=out, **pieces)
            job.remove()
    return {**summary, **({"ranks": shard.count} if shard.ranks else {})}


def caption_corpus(corpus: str | Path, *, captioner: HFCaptioner | None = None,
                   captions_file: str | Path | None = None, mode: str = "append",
                   media_root: str | Path | None = None, out: str | Path | None = None,
                   chunk_size: int = 256, restart: bool = False,
                   show_progress: bool = True, shard: Shard | None = None,
                   merge_only: bool = False) -> dict[str, Any]:
    """Set every item's ``captions`` from a captioner (image / video media) or a captions file
    (any modality), appending to or replacing the existing ones; atomic rewrite. A captioner's
    work is sharded like :func:`embed_corpus`'s (a captions file is read by the merging
    process alone)."""
    import json

    corpus = Path(corpus)
    if (captioner is None) == (captions_file is None):
        raise GcmrError("pass exactly one of a captioner (--captioner) or a captions file "
                        "(--captions-file)")
    if captioner is None and ((shard is not None and shard.count > 1) or merge_only):
        raise ConfigError("--shard and --merge split a captioner's work; a captions file "
                          "(--captions-file) is read in one run")
    merge_captions([], [], mode)  # validates mode before any work
    shard = Shard.resolve(shard)
    ids, sources, old = _corpus_items(corpus)
    unmatched = 0
    if captioner is not None:
        modality = json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))["modality"]
        if modality not in ("image", "video"):
            raise GcmrError(f"{corpus} is {modality}: there is no {modality} captioner; pass "
                            f"the captions in a file (--captions-file) instead")
        resolved = _resolve_sources(corpus, ids, sources, media_root)
        usable = [i for i, p in enumerate(resolved) if p is not None and p.is_file()]
        usable_paths = [p for p in resolved if p is not None and p.is_file()]
        unmatched = len(ids) - len(usable)
        if not usable:
            raise GcmrError(f"{corpus}: no item has a readable media file (sources relative to "
                            f"{media_root_of(corpus, media_root)}); set --media-root")
        work = _work_path(corpus, "captions")
        job = caption_job(captioner, ids=[ids[i] for i in usable],
                          paths=usable_paths, modality=modality,
                          partial_dir=partial_dir_for(work), chunk_size=chunk_size,
                          restart=restart, show_progress=show_progress, shard=shard,
                          merge_only=merge_only)
        if not shard.merges and not shard.ranks:
            return shard_summary(job, shard, "jsonl", corpus=str(out or corpus),
                                 items=len(ids), captions_from=captioner.name)
        source_name = captioner.name
    else:
        job = None
        source_name = f"file:{captions_file}"
    summary: dict[str, Any] = {"corpus": str(out or corpus), "items": len(ids), "mode": mode,
                               "captions_from": source_name}
    with merging(shard) as merge:
        if not merge:
            return {**summary, "ranks": shard.count, "merged_by": "rank 0"}
        if job is not None:
            new: list[list[str]] = [[] for _ in ids]
            for i, caps in zip(usable, collect_captions(job)):
                new[i] = caps
        else:
            assert captions_file is not None
            new, unmatched = match_captions(read_captions_file(captions_file), ids, sources)
        merged = [merge_captions(o, n, mode) if n or mode == "append" else o
                  for o, n in zip(old, new)]
        rewrite_corpus(corpus, out=out, captions=merged,
                       meta_updates={"captions_from": source_name if mode == "replace"
                                     else _append_source(corpus, source_name)})
        if job is not None:
            job.remove()
    counts = [len(c) for c in merged]
    return {**summary, "items_without_new_captions": unmatched,
            "captions_per_item_mean": sum(counts) / max(1, len(counts)),
            **({"ranks": shard.count} if shard.ranks else {})}


def _append_source(corpus: Path, source: str) -> str:
    import json

    meta = json.loads((corpus / "corpus.json").read_text(encoding="utf-8"))
    old = meta.get("captions_from")
    return source if not old or old == source else f"{old} + {source}"
