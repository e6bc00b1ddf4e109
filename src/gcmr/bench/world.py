"""Distractor worlds for the scale benchmarks: item embeddings of the synthetic world at any
size, without writing a corpus (no items.jsonl or queries for millions of items).

The embeddings come from the same generator as ``gcmr synth`` (:class:`gcmr.corpus.synth.World`,
block by block), so item ``i`` of a 1M world is item ``i`` of a 10k world of the same seed:
one memory-mapped file of the largest size serves every smaller size as a prefix. Query texts
and tokenizer training texts are the human queries and captions of the first items.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.errors import ConfigError


@dataclass
class ItemsView:
    """The minimal corpus an identifier scheme needs (``build_index`` duck type):
    ``embeddings`` [N, D], ``ids``, ``path``, ``fingerprint``, empty ``captions``."""

    embeddings: Any
    path: Path
    fingerprint: str

    @property
    def ids(self) -> list[str]:
        from gcmr.corpus.synth import item_id

        return [item_id(i) for i in range(len(self.embeddings))]

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def captions(self) -> list[list[str]]:
        """No caption for any item: the scale suite's items have embeddings only (so no
        text projection)."""
        return [[]] * len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def world_embeddings(work: str | Path, *, num_items: int, dim: int, seed: int = 0,
                     dtype: str = "float32", show_progress: bool = True) -> np.ndarray:
    """A read-only memmap [num_items, dim] of the synthetic world's item embeddings, generated
    once under ``work`` (reused, or extended to a larger size, on later runs)."""
    from gcmr.corpus.synth import BLOCK, World, _scene_block
    from gcmr.progress import progress

    if dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"world_s{seed}_d{dim}_{dtype}.npy"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("complete") and meta.get("num_items", 0) >= num_items:
            return np.load(path, mmap_mode="r")[:num_items]
    world = World(seed=seed, dim=dim)
    out = np.lib.format.open_memmap(path.with_name(path.name + ".tmp.npy"), mode="w+",
                                    dtype=np.dtype(dtype), shape=(num_items, dim))
    n_blocks = math.ceil(num_items / BLOCK)
    with progress(transient=True, disable=not show_progress) as bar:
        task = bar.add_task(f"world {num_items:,} x {dim}", total=num_items, info="")
        for b in range(n_blocks):
            start, stop = b * BLOCK, min(num_items, (b + 1) * BLOCK)
            emb = world.embed_block(seed, b, _scene_block(seed, b))[: stop - start]
            out[start:stop] = emb
            bar.advance(task, stop - start)
    out.flush()
    del out
    path.with_name(path.name + ".tmp.npy").replace(path)
    meta_path.write_text(json.dumps({"num_items": num_items, "dim": dim, "seed": seed,
                                     "dtype": dtype, "complete": True}) + "\n", encoding="utf-8")
    return np.load(path, mmap_mode="r")


def world_texts(*, seed: int, num_items: int, queries_only: bool = False) -> list[str]:
    """The human queries (and, unless ``queries_only``, the captions) of the world's first
    ``num_items`` items, in item order."""
    from gcmr.corpus.synth import SynthConfig, item_captions, item_queries, sample_scenes

    config = SynthConfig(num_items=max(10, num_items), seed=seed, dim=8)
    scenes = sample_scenes(seed, num_items)
    texts: list[str] = []
    for i in range(num_items):
        texts.extend(text for text, _ in item_queries(config, scenes[i], i))
        if not queries_only:
            texts.extend(item_captions(config, scenes[i], i))
    return texts


def sample_queries(*, seed: int, count: int, pool_items: int = 10_000) -> list[str]:
    """``count`` distinct-ish query texts drawn (seeded) from the first ``pool_items`` items."""
    texts = world_texts(seed=seed, num_items=min(pool_items, max(10, count)), queries_only=True)
    rng = np.random.default_rng([seed, 7])
    pick = rng.choice(len(texts), size=min(count, len(texts)), replace=False)
    return [texts[i] for i in pick]
