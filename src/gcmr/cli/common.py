"""Shared CLI helpers: output tables and JSON, common argument types."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from gcmr.progress import console


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a number >= {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0)


def bounded_int(high: int):
    """An argparse type: a whole number in ``[1, high]``, the bound named in the refusal (so
    ``-k 1000000000`` is an error before anything is allocated)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"expected a number in [1, {high}], got {value}")
        return value

    parse.__name__ = f"int_at_most_{high}"
    return parse


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table; floats are shown with 4 decimals."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def report_eval(result: dict[str, Any], out: Any, *, title: str, as_json: bool) -> None:
    """Write an evaluation result to ``out`` and print it (JSON, or a table of each metric
    beside the oracle ceiling and the fraction of it reached)."""
    import sys

    from gcmr.artifacts import write_json

    write_json(out, result)
    if as_json:
        print_json(result)
        return
    oracle = result["oracle"] or {}
    rows = [(m, v, oracle.get(m, "-"), (f"{v / oracle[m]:.1%}" if oracle.get(m) else "-"))
            for m, v in result["metrics"].items()]
    print_table(f"{title} ({result['queries']:,} queries, {result['candidates']:,} "
                f"candidates, {result['queries_per_s']:,.0f} queries/s)",
                ("metric", "value", "oracle", "of oracle"), rows)
    print(f"results written to {out}", file=sys.stderr)
