"""Artifact directories: a JSON manifest plus safetensors weights and plain files, written
atomically (temporary sibling directory, then rename) and checked on load."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gcmr.errors import ArtifactError

MANIFEST = "manifest.json"


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour an artifact depends on (stamped into manifests)."""
    import numpy
    import torch

    import gcmr

    versions = {
        "gcmr": gcmr.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
    }
    for name in ("sklearn", "safetensors", "tokenizers", "faiss"):
        mod = _loaded_module(name)
        if mod is not None:
            versions[name] = getattr(mod, "__version__", "unknown")
    return versions


def _loaded_module(name: str) -> Any:
    import sys

    return sys.modules.get(name)


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it is renamed to ``final``.

    On error the temporary directory is removed and ``final`` is untouched. With
    ``overwrite``, an existing ``final`` is replaced only once the new one is complete.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise ArtifactError(f"{final} already exists (use --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(new: str | Path, final: str | Path) -> None:
    """Move the complete directory ``new`` to ``final``, replacing what is there: the old
    directory is renamed aside, the new one renamed into place, then the old one removed."""
    new, final = Path(new), Path(final)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (sorted keys, indented) via a temporary file and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_manifest(directory: str | Path, *, fmt: str, version: int, **fields: Any) -> dict:
    """Write ``manifest.json`` with format, version, library versions and ``fields``."""
    manifest = {"format": fmt, "version": version, "library_versions": library_versions()}
    manifest.update(fields)
    write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path, *, fmt: str, versions: tuple[int, ...] = (1,)) -> dict:
    """Read and check a manifest; raise :class:`ArtifactError` naming the problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such {fmt} directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path}: missing manifest; is {directory} a {fmt} directory?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupted manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: corrupted manifest (not a JSON object)")
    if manifest.get("format") != fmt:
        raise ArtifactError(
            f"{path}: format is {manifest.get('format')!r}, expected {fmt!r} "
            f"(did you pass the wrong directory?)"
        )
    if manifest.get("version") not in versions:
        raise ArtifactError(
            f"{path}: {fmt} version {manifest.get('version')!r} is not supported by this gcmr "
            f"(supported: {list(versions)})"
        )
    return manifest


def save_tensors(path: str | Path, tensors: dict[str, Any], *, metadata: dict[str, str] | None = None) -> None:
    """Save a dict of torch tensors as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(clean, str(path), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, Any]:
    """Load safetensors weights; a missing or corrupted file raises :class:`ArtifactError`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing weights file")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several error types for bad files
        raise ArtifactError(f"{path}: corrupted weights file ({exc})") from exc
