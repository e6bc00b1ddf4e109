"""What the server tells about one item (``GET /items/{id}``) and the one file it may send
for it (``GET /items/{id}/media``: a thumbnail for the search page).

The media rule, so the server never becomes a file server for its disk: an item's ``source``
is sent only when it is a local file that resolves (symlinks and ``..`` followed) inside the
corpus's media folder (the ``media_root`` that ``gcmr import`` stamped into corpus.json, else
the corpus directory itself), has an image suffix, and starts with that image type's
signature. Anything else (a URI, a path outside, a missing file, a text file named
``.png``) is answered like an unknown item: 404.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gcmr.errors import safe_text

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp"}
_SIGNATURES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
               "image/gif": (b"GIF87a", b"GIF89a"), "image/bmp": (b"BM",)}


@dataclass(frozen=True)
class MediaFile:
    path: Path
    media_type: str


def _is_image(path: Path, media_type: str) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    if media_type == "image/webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return head.startswith(_SIGNATURES[media_type])


def resolve_media(source: str | None, root: Path) -> MediaFile | None:
    """The image file ``source`` names when it is safe to send (see the module docstring),
    else None. Relative sources are relative to ``root``."""
    if not source or "://" in source or "\x00" in source:
        return None
    try:
        path = Path(source)
        if not path.is_absolute():
            path = root / path
        real = path.resolve(strict=True)
        base = root.resolve(strict=True)
        inside = real.is_relative_to(base) and real.is_file()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a bad name
        return None
    media_type = IMAGE_TYPES.get(real.suffix.lower())
    if not inside or media_type is None or not _is_image(real, media_type):
        return None
    return MediaFile(real, media_type)


class ItemCatalog:
    """Item id -> row, captions, source, identifier codes, for a loaded searcher; the corpus's
    ``items.jsonl`` is read on first use (not at start-up, where the searcher already read
    what it displays). A searcher without a corpus (a test's fake) gives the display caption
    only; a searcher without an identifier index (a dense model) gives ``identifier: None``."""

    def __init__(self, searcher: Any, describe: Any) -> None:
        self._searcher = searcher
        self._describe = describe
        self._mutex = threading.Lock()
        self._rows: tuple[int, dict[str, int]] | None = None  # (id(item_ids), id -> row)
        self._corpus: dict[str, tuple[list[str], str | None]] | None = None
        self._media_root: Path | None = None

    def keep_corpus_of(self, previous: ItemCatalog | None) -> ItemCatalog:
        """Reuse ``previous``'s reading of the corpus (a live update changes the searcher's
        additions, never its training corpus), so an update does not read ``items.jsonl``
        again."""
        if previous is not None and previous._searcher is self._searcher:
            with previous._mutex:
                self._corpus, self._media_root = previous._corpus, previous._media_root
        return self

    def _row_of(self, item_id: str) -> int | None:
        ids = self._searcher.item_ids
        with self._mutex:
            if self._rows is None or self._rows[0] != id(ids):  # the list was replaced
                self._rows = (id(ids), {name: row for row, name in enumerate(ids)})
            row = self._rows[1].get(item_id)
        index = getattr(self._searcher, "index", None)
        deleted = getattr(index, "deleted", None)
        if row is not None and deleted is not None and bool((deleted == row).any()):
            return None  # deleted live: gone from search, gone here
        return row

    def _corpus_items(self) -> dict[str, tuple[list[str], str | None]]:
        with self._mutex:
            if self._corpus is None:
                self._corpus, self._media_root = self._read_corpus()
            return self._corpus

    def _read_corpus(self) -> tuple[dict[str, tuple[list[str], str | None]], Path | None]:
        corpus = getattr(self._searcher, "corpus_path", None)
        if corpus is None or not (Path(corpus) / "items.jsonl").is_file():
            return {}, None
        from gcmr.corpus import read_items
        from gcmr.encoders.corpus_update import media_root_of

        ids, captions, sources = read_items(Path(corpus) / "items.jsonl")
        try:
            root: Path | None = media_root_of(corpus)
        except (OSError, ValueError):
            root = Path(corpus)
        return ({i: (list(c), s) for i, c, s in zip(ids, captions or [], sources or [])},
                root)

    def describe(self, item_id: str) -> dict[str, Any] | None:
        """``{id, row, captions, source, identifier, media}`` or None for an unknown id;
        ``media`` is the thumbnail's URL path when :func:`resolve_media` allows one."""
        row = self._row_of(item_id)
        if row is None:
            return None
        captions, source = self._corpus_items().get(item_id, (None, None))
        if captions is None:
            shown = self._describe(row)
            captions = [shown] if shown else []
        index = getattr(self._searcher, "index", None)
        codes = getattr(index, "codes", None)
        identifier = [int(c) for c in codes[row]] if codes is not None and row < len(codes) \
            else None
        media = f"/items/{quote(item_id, safe='')}/media" \
            if self.media(item_id) is not None else None
        return {"id": safe_text(item_id), "row": row,
                "captions": [safe_text(c) for c in captions],
                "source": safe_text(source) if source is not None else None,
                "identifier": identifier, "media": media}

    def media(self, item_id: str) -> MediaFile | None:
        """The item's image file when it may be sent (see the module docstring)."""
        if self._row_of(item_id) is None:
            return None
        _, source = self._corpus_items().get(item_id, (None, None))
        if self._media_root is None:
            return None
        return resolve_media(source, self._media_root)
