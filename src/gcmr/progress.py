"""Progress bars and tables on stderr/stdout through rich."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


def progress(*, transient: bool = False, disable: bool = False) -> Progress:
    """A rich progress bar on stderr: description, bar, n/total, elapsed, remaining, extra info."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=transient,
        disable=disable,
    )


def note(message: str) -> None:
    """Print an informational note (e.g. a size that was adapted to the data) on stderr."""
    err_console.print(f"[yellow]note:[/yellow] {message}", highlight=False)
