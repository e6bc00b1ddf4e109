"""Error types. Every error a user can cause is a :class:`GcmrError` with a message that names
the file, line or field at fault; the CLI prints it and exits non-zero without a traceback.

:func:`snippet` and :func:`safe_text` are here, at the bottom of the package, so every layer
(the tokenizer, the search checks, the server) can quote a bad value without echoing it whole.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sized
from typing import Any

SNIPPET_CHARS = 100  # how much of a bad value an error message shows


def snippet(value: Any, limit: int = SNIPPET_CHARS) -> str:
    """A short, printable, UTF-8-safe rendering of ``value`` for an error message: its
    ``repr`` cut to about ``limit`` characters (with the full length noted), lone surrogates
    escaped. Messages never echo a whole request: a 1 MB query or 10,000 of them."""
    import numpy as np

    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxtuple = short.maxset = short.maxdict = 5
    shown = short.repr(value)
    if len(shown) > limit:
        shown = shown[:limit] + "..."
    text = isinstance(value, (str, bytes, bytearray))
    size = value.size if isinstance(value, np.ndarray) else \
        len(value) if isinstance(value, Sized) else 0
    if size > (limit if text else 5):
        unit = "characters" if isinstance(value, str) else "bytes" if text else "items"
        shown += f" ({size:,} {unit})"
    return safe_text(shown)


def safe_text(text: str) -> str:
    """``text`` with anything that cannot be encoded as UTF-8 (lone surrogates) escaped, so
    it can be printed or sent as JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class GcmrError(Exception):
    """Base class of the errors gcmr raises on bad input, configuration or artifacts."""


class CorpusError(GcmrError):
    """A corpus directory violates corpus format v1. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        text = "invalid corpus:\n  - " + "\n  - ".join(shown)
        if more > 0:
            text += f"\n  ... and {more} more problems"
        super().__init__(text)


class ArtifactError(GcmrError):
    """An index, model or result directory is missing, corrupted, of another version, or was
    built from a different corpus."""


class ConfigError(GcmrError):
    """A configuration value is invalid or cannot fit the data."""


class MissingExtraError(GcmrError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
