"""Precomputed embeddings: an existing ``.npy`` [N, D] plus a text file of N ids (one a line),
e.g. what ``gcmr embed DIR --out emb.npy`` wrote, or features from another pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gcmr.encoders.base import Encoder
from gcmr.errors import GcmrError


def default_ids_path(npy: str | Path) -> Path:
    """``emb.npy`` -> ``emb.ids.txt`` (the file ``gcmr embed`` writes next to its output)."""
    npy = Path(npy)
    return npy.with_name(npy.stem + ".ids.txt")


class PrecomputedEncoder(Encoder):
    """Looks items up by id; an item matches a line of the id list equal to its id, its media path
    relative to the dataset root, or its file name without extension (first match wins)."""

    has_text = False
    modality = "other"

    def __init__(self, npy: str | Path, ids: str | Path | None = None) -> None:
        npy = Path(npy).expanduser()
        ids_path = Path(ids).expanduser() if ids else default_ids_path(npy)
        if not npy.is_file():
            raise GcmrError(f"{npy}: embeddings file not found")
        if not ids_path.is_file():
            raise GcmrError(f"{ids_path}: id list not found (one id per line, in row order; "
                            f"pass precomputed:EMB.npy:IDS.txt)")
        try:
            self.array = np.load(npy, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise GcmrError(f"{npy}: not a readable .npy array ({exc})") from exc
        if self.array.ndim != 2:
            raise GcmrError(f"{npy}: expected [N, D], got shape {tuple(self.array.shape)}")
        keys = ids_path.read_text(encoding="utf-8").splitlines()
        if keys and keys[-1] == "":
            keys.pop()
        if len(keys) != self.array.shape[0]:
            raise GcmrError(f"{ids_path}: {len(keys)} ids but {npy} has {self.array.shape[0]} rows")
        self.row: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in self.row:
                raise GcmrError(f"{ids_path} line {i + 1}: duplicate id {key!r} "
                                f"(first on line {self.row[key] + 1})")
            self.row[key] = i
        self.dim = int(self.array.shape[1])
        self.name = f"precomputed:{npy}:{ids_path}"

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        missing = [k for k in keys if k not in self.row]
        if missing:
            raise GcmrError(f"{len(missing)} item(s) are not in the precomputed id list, "
                            f"e.g. {missing[:3]}")
        return np.asarray(self.array[[self.row[k] for k in keys]], dtype=np.float32)

    def encode_items(self, ids: Sequence[str], paths: Sequence[str | Path]) -> np.ndarray:
        keys = []
        for item_id, path in zip(ids, paths):
            p = Path(path)
            for key in (item_id, str(path), p.as_posix(), p.stem, p.name):
                if key in self.row:
                    keys.append(key)
                    break
            else:
                keys.append(item_id)  # reported as missing by lookup
        return self.lookup(keys)

    def encode_media(self, paths: Sequence[str | Path]) -> np.ndarray:
        return self.encode_items([Path(p).stem for p in paths], paths)
