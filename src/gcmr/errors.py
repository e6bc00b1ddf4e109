"""Error types. Every error a user can cause is a :class:`GcmrError` with a message that names
the file, line or field at fault; the CLI prints it and exits non-zero without a traceback."""

from __future__ import annotations


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
