"""Model directory formats: the one home of their names, versions, file names, manifests and
loading, used by the trainers that write them and the searchers that read them.

``gcmr-model`` v1 (generative retriever: CART / AVG)::

    manifest.json      format, version, status (training | complete), method, train_config,
                       loss, backbone (scratch | t5), model_config, index {path, scheme,
                       level_sizes, num_items, fingerprint}, corpus {path, fingerprint, name},
                       data, epochs_done, best_epoch, best_metrics, parameters
    tokenizer.json     the query tokenizer
    model.safetensors  the selected weights (best validation epoch, or the last)
    train_log.jsonl    one line per epoch
    checkpoint/        the last epoch's model, optimizer and counters (for --resume)
    item_codes.npy, item_codebook.safetensors
                       optional compact item vectors of the hybrid rerank (manifest
                       ``compact_vectors``, ``rerank.item_vectors = "compact"``;
                       gcmr.search.compact)

``gcmr-dense`` v1 (dual-tower baseline): the same files, with ``tower_config`` instead of
``model_config``, ``search`` (the default dense backend), ``corpus`` {path, fingerprint,
name, num_items, dim}, ``source_index`` and optionally ``faiss.index`` (``saved_index``).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.artifacts import (
    MANIFEST,
    ArtifactWarning,
    load_tensors,
    read_manifest,
    recover,
    save_tensors,
    verify_checksums,
    write_manifest,
)
from gcmr.errors import ArtifactError

MODEL_FORMAT = "gcmr-model"
MODEL_VERSION = 1
DENSE_FORMAT = "gcmr-dense"
DENSE_VERSION = 1
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAIN_LOG = "train_log.jsonl"
FAISS_FILE = "faiss.index"
# text-space rerank of a model with a pretrained query encoder (gcmr.search.rerank.CaptionVectors)
CAPTION_VECTORS = "caption_vectors.npy"
CAPTION_OFFSETS = "caption_offsets.npy"
# compact item vectors of the hybrid rerank (gcmr compress-vectors; gcmr.search.compact)
ITEM_CODES = "item_codes.npy"
ITEM_CODEBOOK = "item_codebook.safetensors"


def index_fingerprint(index: Any) -> str:
    """What a generative model is bound to: the corpus fingerprint and every identifier."""
    h = hashlib.sha256(index.corpus_fingerprint.encode())
    h.update(np.ascontiguousarray(index.codes, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def manifest_format(model_dir: str | Path) -> str:
    """The ``format`` of a model directory's manifest, read without checking the rest."""
    recover(Path(model_dir))  # an interrupted replacement: put the complete model back first
    path = Path(model_dir) / MANIFEST
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format")
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(f"{path}: missing manifest; is {model_dir} a model directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: corrupted manifest ({exc})") from exc
    return str(fmt)


def read_generative_manifest(model_dir: str | Path) -> dict[str, Any]:
    return read_manifest(model_dir, fmt=MODEL_FORMAT, versions=(MODEL_VERSION,))


def read_dense_manifest(model_dir: str | Path) -> dict[str, Any]:
    return read_manifest(model_dir, fmt=DENSE_FORMAT, versions=(DENSE_VERSION,))


def read_model_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The checked manifest of a generative or a dense model directory (by its format)."""
    fmt = manifest_format(model_dir)
    if fmt == DENSE_FORMAT:
        return read_dense_manifest(model_dir)
    return read_generative_manifest(model_dir)


def read_train_log(model_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of ``train_log.jsonl`` (empty when training wrote none yet)."""
    path = Path(model_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path} line {lineno}: malformed JSON ({exc})") from exc
    return records


def weights_path(model_dir: str | Path, manifest: dict[str, Any], *,
                 verify: bool = True) -> Path:
    """The selected weights of a model directory; refuses a directory that has none yet.

    The one door both loaders go through before they read any file, so it also checks the
    directory: with ``verify``, every file whose sha256 the manifest records (weights,
    tokenizer, faiss index, caption vectors, compact item vectors;
    :func:`gcmr.artifacts.verify_checksums`, about 1 GB/s; models from before checksums
    have none), and it warns
    (:class:`~gcmr.artifacts.ArtifactWarning`) when the manifest says training has not
    completed.
    """
    path = Path(model_dir) / manifest.get("weights", WEIGHTS)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights (training has not finished an epoch yet?)")
    if verify:
        verify_checksums(model_dir, manifest)
    if manifest.get("status") == "training":
        warnings.warn(f"{model_dir}: training has not completed (manifest status 'training', "
                      f"{manifest.get('epochs_done', 0)} epochs done): these are the weights of "
                      f"an unfinished or interrupted run; continue it with `gcmr train ... "
                      f"--resume`", ArtifactWarning, stacklevel=3)
    return path


def load_weights(module: Any, path: str | Path, *, what: str = "the model config") -> None:
    """Load safetensors weights into ``module``; a mismatch names the file."""
    state = load_tensors(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not match {what} ({exc})") from exc


def save_weights(path: str | Path, state: dict[str, Any]) -> None:
    """Write a state dict as safetensors through a temporary file and rename (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_tensors(tmp, state)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_generative(model_dir: str | Path, manifest: dict[str, Any] | None = None, *,
                    verify: bool = True):
    """``(model, tokenizer, manifest)`` of a ``gcmr-model`` directory (model on the CPU, in
    eval mode is the caller's choice); ``verify`` checks the files' recorded sha256."""
    from gcmr.model.factory import empty_model, load_tokenizer

    model_dir = Path(model_dir)
    manifest = manifest or read_generative_manifest(model_dir)
    weights = weights_path(model_dir, manifest, verify=verify)
    tokenizer = load_tokenizer(model_dir, manifest)
    model = empty_model(manifest)
    load_weights(model, weights)
    return model, tokenizer, manifest


def load_dense_tower(model_dir: str | Path, manifest: dict[str, Any] | None = None, *,
                     verify: bool = True):
    """``(tower, tokenizer, manifest)`` of a ``gcmr-dense`` directory (tower on the CPU);
    ``verify`` checks the files' recorded sha256 (the faiss index's too)."""
    from gcmr.model.dense import DenseTower, DenseTowerConfig
    from gcmr.model.tokenizer import QueryTokenizer

    model_dir = Path(model_dir)
    manifest = manifest or read_dense_manifest(model_dir)
    weights = weights_path(model_dir, manifest, verify=verify)
    config = DenseTowerConfig.from_dict(manifest["tower_config"],
                                        where=f"{model_dir / MANIFEST}: tower_config")
    path = model_dir / manifest.get("tokenizer", TOKENIZER)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing query tokenizer")
    tokenizer = QueryTokenizer.load(path)
    tower = DenseTower(config)
    load_weights(tower, weights, what="the tower config")
    return tower, tokenizer, manifest


def corpus_record(corpus: Any, *, dense: bool = False) -> dict[str, Any]:
    """The manifest's ``corpus`` entry: where the corpus was and what it was."""
    record = {"path": str(Path(corpus.path).resolve()), "fingerprint": corpus.fingerprint,
              "name": corpus.meta.name}
    if dense:
        record.update(num_items=len(corpus), dim=corpus.dim)
    return record


def index_record(index: Any, index_path: str | Path) -> dict[str, Any]:
    """The generative manifest's ``index`` entry (``fingerprint`` binds the identifiers)."""
    return {"path": str(Path(index_path).resolve()), "scheme": index.config.scheme,
            "level_sizes": list(index.level_sizes), "num_items": index.num_items,
            "fingerprint": index_fingerprint(index)}


def write_model_manifest(directory: str | Path, *, dense: bool,
                         extra_checksums: tuple[str, ...] = (), **fields: Any) -> dict:
    """Write the manifest of a generative (``dense=False``) or dense model directory, with
    the sha256 of the weight, tokenizer, faiss, caption-vector and compact item-vector files
    present now (the
    trainers rewrite the manifest after each epoch's weights, so the record follows them),
    and of ``extra_checksums`` (relative paths, e.g. the files of a live update's
    ``additions/`` corpus)."""
    fmt, version = (DENSE_FORMAT, DENSE_VERSION) if dense else (MODEL_FORMAT, MODEL_VERSION)
    fields.setdefault("tokenizer", TOKENIZER)
    fields.setdefault("weights", WEIGHTS)
    files = (fields["weights"], fields["tokenizer"], FAISS_FILE, CAPTION_VECTORS,
             CAPTION_OFFSETS, ITEM_CODES, ITEM_CODEBOOK, *extra_checksums)
    return write_manifest(directory, fmt=fmt, version=version, checksum_files=files, **fields)
