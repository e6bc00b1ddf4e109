"""Artifact directories: a JSON manifest plus safetensors weights and plain files, written
atomically (temporary sibling directory, then rename) and checked on load.

Crash safety. :func:`atomic_dir` writes a new artifact in a hidden sibling
``.<name>.tmp-*`` and swaps it into place with :func:`replace_dir`. On Linux the swap is one
``renameat2(RENAME_EXCHANGE)`` call: the final path never disappears, not even for an
instant. Where that call is unsupported, the swap is two renames (old aside to
``.<name>.old-<time>-<id>``, new into place) under an exclusive lock on the parent directory;
a kill between them leaves the final path missing, which :func:`recover` repairs. Replaced
directories are renamed to ``.<name>.trash-*`` before they are deleted, so a partly deleted
directory is never mistaken for a complete one. :func:`recover` runs at the start of every
:func:`atomic_dir` and of every :func:`read_manifest`, so the next write or load of an
artifact finds it whole.

Checksums. :func:`write_manifest` records the sha256 of the weight and id files it is told
about (manifest field ``sha256``: ``{file name: hex digest}``), and :func:`verify_checksums`
refuses a file whose content changed. Artifacts written before checksums existed have no
``sha256`` field and load without verification.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gcmr.errors import ArtifactError

MANIFEST = "manifest.json"
CHECKSUMS = "sha256"  # manifest field: {file name relative to the artifact: sha256 hex digest}
HASH_BLOCK = 1 << 20  # bytes read per update when hashing a file


class ArtifactWarning(UserWarning):
    """An artifact loads but may not be what the user expects (e.g. training not complete)."""


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
    return sys.modules.get(name)


# ----------------------------------------------------------------------------- atomic directories


def read_npy(path: Path, *, where: str | None = None, missing: str = "no such file",
             error: type[Exception] | None = None) -> Any:
    """A user-given ``.npy`` array, never unpickled: ``error`` (default
    :class:`~gcmr.errors.GcmrError`) naming ``where`` (default the path) when the file is
    missing (``missing`` says how) or numpy cannot read it."""
    import numpy as np

    from gcmr.errors import GcmrError

    error = error or GcmrError
    where = where or str(path)
    if not path.is_file():
        raise error(f"{where}: {missing}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise error(f"{where}: not a readable .npy array ({exc})") from exc


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it is swapped in as ``final``.

    Leftovers of an earlier interrupted write of ``final`` are recovered first
    (:func:`recover`). On error the temporary directory is removed and ``final`` is
    untouched. With ``overwrite``, an existing ``final`` is replaced only once the new one is
    complete, and stays loadable until then. The temporary directory is locked (``flock``)
    while it is written, so :func:`recover` in another process never removes it.
    """
    final = Path(final)
    recover(final)
    if final.exists() and not overwrite:
        raise ArtifactError(f"{final} already exists (use --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _locked_tmp(final)
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, final)
    finally:
        if fd is not None:
            os.close(fd)


def replace_dir(new: str | Path, final: str | Path) -> None:
    """Move the complete directory ``new`` to ``final``, replacing what is there.

    The swap is atomic where the OS can exchange two paths (Linux ``renameat2``), else two
    renames (old aside, new into place) under a lock on the parent directory; if the second
    rename fails the old directory is put back. The replaced directory is renamed to a
    ``.trash-*`` name, then deleted.
    """
    new, final = Path(new), Path(final)
    with _dir_lock(final.parent):
        if not os.path.lexists(final):
            os.replace(new, final)
            return
        if _exchange_paths(new, final):
            replaced = new  # after the exchange, ``new`` names the old directory
        else:
            replaced = final.parent / f".{final.name}.old-{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
            os.replace(final, replaced)
            try:
                os.replace(new, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.replace(replaced, final)
                raise
        trash = _to_trash(replaced, final)
    _delete(trash)


def recover(final: str | Path) -> None:
    """Repair what an interrupted :func:`atomic_dir` / :func:`replace_dir` left beside ``final``.

    The commit point of a write is the rename that puts the new directory at ``final``, so
    recovery rolls back, never forward:

    - ``final`` missing and ``.<name>.old-*`` present (killed between the two renames of the
      non-atomic swap): the newest old directory is put back. An old directory is always a
      complete former ``final`` (replaced ones are renamed to ``.trash-*`` before deletion).
    - other ``.old-*`` and every ``.trash-*``: removed.
    - ``.<name>.tmp-*``: removed when no live writer holds its lock. A temporary directory is
      never promoted, even one whose manifest looks complete: the command that wrote it did
      not finish (it never reported success), some writers add files after the manifest
      (checkpoints and corpora have none), and rolling back gives one well-defined state,
      the one before the command, which a rerun then replaces.

    Best effort and cheap when there is nothing to do (one listing of the parent directory):
    a read-only parent or a file that cannot be removed is left alone. Raises
    :class:`ArtifactError` only when ``final`` is missing and its old copy cannot be put back.
    """
    final = Path(final)
    try:
        if not _leftovers(final):
            return
    except OSError:
        return
    with _dir_lock(final.parent):
        try:
            found = _leftovers(final)
        except OSError:
            return
        olds = sorted((p for kind, p in found if kind == "old"), key=_old_time)
        if olds and not os.path.lexists(final):
            newest = olds.pop()
            try:
                os.replace(newest, final)
            except OSError as exc:
                raise ArtifactError(f"{final} is missing and its previous version {newest} "
                                    f"could not be put back ({exc}); move it back by hand"
                                    ) from exc
        doomed = olds + [p for kind, p in found if kind == "trash"]
        doomed += [p for kind, p in found if kind == "tmp" and _abandoned(p)]
        trash = []
        for path in doomed:
            with contextlib.suppress(OSError):
                trash.append(_to_trash(path, final))
    for path in trash:
        _delete(path)


def _leftover_patterns(name: str) -> dict[str, re.Pattern[str]]:
    stem = re.escape(f".{name}.")
    return {"old": re.compile(stem + r"old-[0-9a-f]+(?:-[0-9a-f]+)?"),
            "tmp": re.compile(stem + r"tmp-[A-Za-z0-9_]+"),
            "trash": re.compile(stem + r"trash-[0-9a-f]+")}


def _leftovers(final: Path) -> list[tuple[str, Path]]:
    """``(kind, path)`` of the hidden siblings an interrupted write of ``final`` may leave."""
    patterns = _leftover_patterns(final.name)
    prefix = f".{final.name}."
    found = []
    with os.scandir(final.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(prefix):
                continue
            for kind, pattern in patterns.items():
                if pattern.fullmatch(entry.name):
                    found.append((kind, Path(entry.path)))
    return found


def _old_time(path: Path) -> tuple[int, int]:
    """Sort key of an old directory: the time in its name (0 for gcmr 0.1's names), then
    its inode change time."""
    parts = path.name.rsplit(".old-", 1)[-1].split("-")
    stamp = int(parts[0], 16) if len(parts) == 2 else 0
    try:
        changed = path.stat().st_ctime_ns
    except OSError:
        changed = 0
    return stamp, changed


def _to_trash(path: Path, final: Path) -> Path:
    """Rename ``path`` to a ``.<name>.trash-*`` sibling of ``final`` (atomic), so that a kill
    while deleting it never leaves a partial directory under another name."""
    trash = final.parent / f".{final.name}.trash-{uuid.uuid4().hex[:12]}"
    os.replace(path, trash)
    return trash


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


# --- locks: flock on directories (Linux, macOS); without fcntl there is no locking and
# --- recover() leaves temporary directories alone, since it cannot tell a live writer


def _flock(path: Path, *, blocking: bool) -> int | None:
    """An open descriptor of ``path`` holding an exclusive flock, or None when flock is
    unavailable. Raises BlockingIOError when ``blocking`` is False and the lock is held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (serializes swaps and recoveries of its
    entries across processes); no lock where the directory cannot be opened."""
    try:
        fd = _flock(directory, blocking=True)
    except OSError:
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _abandoned(tmp: Path) -> bool:
    """Whether no live writer holds the lock of the temporary directory ``tmp`` (a killed
    writer's lock is released by the kernel)."""
    try:
        fd = _flock(tmp, blocking=False)
    except OSError:  # BlockingIOError: a live writer; other errors: leave it alone
        return False
    if fd is None:  # pragma: no cover - no flock: cannot tell a live writer
        return False
    os.close(fd)
    return True


def _locked_tmp(final: Path) -> tuple[Path, int | None]:
    """A new temporary sibling of ``final`` and the descriptor that holds its lock. Retries
    when a concurrent :func:`recover` removed it before it was locked."""
    for _ in range(100):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            fd = _flock(tmp, blocking=True)
        except FileNotFoundError:
            continue
        if fd is None:  # pragma: no cover - no flock
            return tmp, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise ArtifactError(f"{final.parent}: could not create a temporary directory for {final.name}")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", -1)}


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange_paths(a: Path, b: Path) -> bool:
    """Atomically exchange two existing paths; False where the OS or file system cannot
    (then the caller falls back to two renames)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


# ----------------------------------------------------------------------------- JSON and manifests


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


def write_manifest(directory: str | Path, *, fmt: str, version: int,
                   checksum_files: Iterable[str] = (), **fields: Any) -> dict:
    """Write ``manifest.json`` with format, version, library versions and ``fields``.

    ``checksum_files`` names files of ``directory`` (relative) whose sha256 is recorded in the
    manifest's ``sha256`` field for :func:`verify_checksums`; write them before the manifest.
    Names of files that do not exist are skipped.
    """
    directory = Path(directory)
    manifest = {"format": fmt, "version": version, "library_versions": library_versions()}
    manifest.update(fields)
    checksums = file_checksums(directory, checksum_files)
    if checksums:
        manifest[CHECKSUMS] = checksums
    write_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | Path, *, fmt: str, versions: tuple[int, ...] = (1,)) -> dict:
    """Read and check a manifest (after :func:`recover` of the directory); raise
    :class:`ArtifactError` naming the problem."""
    directory = Path(directory)
    recover(directory)
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


# ----------------------------------------------------------------------------- checksums


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in blocks of ``HASH_BLOCK`` bytes (memory stays bounded)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(directory: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of the named files of ``directory`` that exist (in name order)."""
    directory = Path(directory)
    return {name: sha256_file(directory / name) for name in sorted(set(names))
            if (directory / name).is_file()}


def verify_checksums(directory: str | Path, manifest: dict[str, Any],
                     names: Iterable[str] | None = None) -> None:
    """Refuse a file of ``directory`` whose sha256 differs from the manifest's record.

    Checks ``names`` (default every file the manifest's ``sha256`` field lists). A manifest
    without the field (written before checksums existed) verifies nothing; a recorded file
    that is missing is left to the loader, which names it in its own message.

    Cost: sha256 reads every byte once. Measured with hashlib (OpenSSL) on the 2-core
    development machine: about 1.3 GB/s from memory and 1.2 GB/s for a 256 MiB file from the
    page cache, so a 1 GB model adds about 0.8 s to its load (once per load, not per
    search). Loaders take ``verify=False`` (CLI ``--no-verify``) for huge files on a trusted
    disk.
    """
    directory = Path(directory)
    recorded = manifest.get(CHECKSUMS)
    if not isinstance(recorded, dict):
        return
    for name in sorted(recorded if names is None else set(names) & set(recorded)):
        path = directory / name
        if not path.is_file():
            continue
        actual = sha256_file(path)
        if actual != recorded[name]:
            hint = ""
            if manifest.get("status") == "training":
                hint = ("; training had not completed (manifest status 'training'), so the "
                        "run may have been stopped between writing this file and the "
                        "manifest: continue it with --resume")
            raise ArtifactError(
                f"{path}: checksum mismatch, the file was modified or corrupted (sha256 "
                f"{actual[:16]}..., the manifest records {str(recorded[name])[:16]}...){hint}")


# ----------------------------------------------------------------------------- tensors


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
