"""Lazy imports of optional dependencies, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from gcmr.errors import MissingExtraError


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``gcmr[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingExtraError(
            f"the optional dependency '{module}' is not installed{why}: "
            f"pip install 'gcmr[{extra}]'  ({exc})"
        ) from exc
