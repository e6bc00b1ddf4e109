"""The ``gcmr`` command line: argument parsing only; every verb calls the library.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)`` that adds its verbs with
``set_defaults(func=...)``. Errors a user can cause (:class:`gcmr.GcmrError`) are printed
without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence

import gcmr
from gcmr.errors import GcmrError

# order = order in `gcmr --help`
COMMAND_MODULES = (
    "gcmr.cli.demo",
    "gcmr.cli.data",
    "gcmr.cli.index",
    "gcmr.cli.retrieval",
    "gcmr.cli.updates",
    "gcmr.cli.compact",
    "gcmr.cli.media",
    "gcmr.cli.bench",
    "gcmr.cli.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gcmr",
        description="Generative cross-modal retrieval: text queries retrieve images, audio or "
        "video by generating the item's identifier (CART, AVG).",
    )
    parser.add_argument("--version", action="version", version=f"gcmr {gcmr.__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """gcmr's own warnings (an unfinished model, degenerate data) print as one line
    ``gcmr VERB: warning: ...`` on stderr instead of Python's file:line format; other
    libraries' warnings keep theirs."""
    import warnings

    from gcmr.artifacts import ArtifactWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, ArtifactWarning) or category.__module__.startswith("gcmr"):
            print(f"gcmr {command}: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextlib.contextmanager
def _rank_zero_stdout() -> Iterator[None]:
    """Under torchrun every rank runs the command; only rank 0 prints its results (errors and
    warnings still go to each rank's stderr)."""
    import os

    if os.environ.get("RANK", "0") in ("", "0"):
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with _one_line_warnings(args.command), _rank_zero_stdout():
            result = args.func(args)
    except GcmrError as exc:
        print(f"gcmr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gcmr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
