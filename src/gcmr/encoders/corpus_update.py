"""Rewriting an existing corpus with new captions or new embeddings, atomically.

The new corpus is assembled in a temporary directory (unchanged files are hard-linked, or copied
across file systems), validated, and renamed into place, so a crash never leaves a corpus with
half its captions or embeddings of two models. Extra fields of ``corpus.json`` and of each line
of ``items.jsonl`` are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gcmr.artifacts import atomic_dir, write_json
from gcmr.errors import CorpusError, GcmrError

CAPTION_MODES = ("append", "replace")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def read_items_raw(corpus: Path) -> list[dict[str, Any]]:
    """The objects of ``items.jsonl`` as written (extra fields included)."""
    path = corpus / "items.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: missing file")
    items = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path} line {lineno}: malformed JSON ({exc})") from exc
    return items


def merge_captions(old: Sequence[str], new: Sequence[str], mode: str) -> list[str]:
    """``append``: keep the existing captions and add new ones that are not already there
    (case-insensitive); ``replace``: only the new ones."""
    if mode not in CAPTION_MODES:
        raise GcmrError(f"caption mode must be one of {list(CAPTION_MODES)}, got {mode!r}")
    if mode == "replace":
        return [c for c in new if c.strip()]
    seen = {c.strip().lower() for c in old}
    out = list(old)
    for c in new:
        if c.strip() and c.strip().lower() not in seen:
            seen.add(c.strip().lower())
            out.append(c)
    return out


def rewrite_corpus(
    corpus: str | Path,
    *,
    out: str | Path | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    embeddings_file: str | Path | None = None,
    caption_embeddings_file: str | Path | None = None,
    meta_updates: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``corpus`` with replaced pieces to ``out`` (default: in place).

    ``captions``: the full new caption list per item (row order); ``embeddings_file`` /
    ``caption_embeddings_file``: finished ``.npy`` files moved into the corpus;
    ``meta_updates``: fields of ``corpus.json`` to set (e.g. ``embedding_dim``). The result is
    validated with :func:`gcmr.corpus.load_corpus` before it replaces anything.
    """
    from gcmr.corpus import load_corpus

    src = Path(corpus)
    load_corpus(src, check_finite=False)  # refuse to rewrite a broken corpus
    target = Path(out) if out is not None else src
    in_place = target.resolve() == src.resolve()
    replaced = {"corpus.json"}
    if captions is not None:
        replaced.add("items.jsonl")
    if embeddings_file is not None:
        replaced.add("embeddings.npy")
    if caption_embeddings_file is not None:
        replaced.add("caption_embeddings.npy")
    meta = json.loads((src / "corpus.json").read_text(encoding="utf-8"))
    meta.update(meta_updates or {})
    items = read_items_raw(src) if captions is not None else None
    if items is not None and len(items) != len(captions or []):
        raise GcmrError(f"{len(captions or [])} caption lists for {len(items)} items")
    with atomic_dir(target, overwrite=in_place or overwrite) as tmp:
        for entry in src.iterdir():
            if entry.name in replaced or entry.name.startswith("."):
                continue
            if entry.is_dir():
                shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(entry), str(tmp / entry.name))
        if items is not None and captions is not None:
            with (tmp / "items.jsonl").open("w", encoding="utf-8") as fh:
                for obj, caps in zip(items, captions):
                    obj["captions"] = list(caps)
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        for name, path in (("embeddings.npy", embeddings_file),
                           ("caption_embeddings.npy", caption_embeddings_file)):
            if path is not None:
                _move(Path(path), tmp / name)
        write_json(tmp / "corpus.json", meta)
        load_corpus(tmp)  # validate before the swap
    return target


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)
        src.unlink()


def media_root_of(corpus: str | Path, override: str | Path | None = None) -> Path:
    """Where item ``source`` paths are relative to: ``override``, else the ``media_root`` that
    ``gcmr import`` stamped into corpus.json, else the corpus directory."""
    if override is not None:
        return Path(override)
    meta = json.loads((Path(corpus) / "corpus.json").read_text(encoding="utf-8"))
    root = meta.get("media_root")
    return Path(root) if isinstance(root, str) and root else Path(corpus)
