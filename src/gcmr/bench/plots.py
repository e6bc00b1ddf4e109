"""PNG plots of the benchmark reports (matplotlib, the ``plots`` extra; Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gcmr.extras import require


def _pyplot():
    matplotlib = require("matplotlib", "plots", purpose="benchmark plots")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict[str, Any]], y: str) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = {}
    for row in rows:
        if row.get(y) is None:
            continue
        xs, ys = out.setdefault(row["method"], ([], []))
        xs.append(row["candidates"])
        ys.append(row[y])
    return {k: tuple(zip(*sorted(zip(*v)))) for k, v in out.items()}  # type: ignore[misc]


def plot_throughput(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Queries/s vs number of candidates (log x), one line per method (CART figure 4)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, (xs, ys) in _series(rows, "queries_per_s").items():
        style = "-o" if name.startswith("CART") else "--s"
        ax.plot(xs, ys, style, label=name)
    return _save_loglog(plt, fig, ax, path, ylabel="queries / s (batches of concurrent queries)",
                        title="Throughput vs corpus size")


def plot_memory(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Bytes to serve vs number of candidates (log-log), one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, (xs, ys) in _series(rows, "total_bytes").items():
        ax.plot(xs, [y / 2**20 for y in ys], "-o", label=name)
    return _save_loglog(plt, fig, ax, path, ylabel="memory to serve (MiB)",
                        title="Serving memory vs corpus size")


def plot_accuracy(rows: list[dict[str, Any]], path: str | Path, *,
                  metrics: tuple[str, ...] = ("R@1", "MRR@10")) -> Path:
    """Grouped horizontal bars of ``metrics`` per row (the accuracy table at a glance)."""
    plt = _pyplot()
    names = [r["method"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.5), dpi=120)
    height = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        values = [r.get(metric) or 0.0 for r in rows]
        ax.barh([i + j * height for i in range(len(rows))], values, height=height, label=metric)
    ax.set_yticks([i + height * (len(metrics) - 1) / 2 for i in range(len(rows))])
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score")
    ax.set_xlim(0, 1)
    ax.set_title("Accuracy on the test split")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(plt, fig, ax, path)


def _save_loglog(plt, fig, ax, path: str | Path, *, ylabel: str, title: str) -> Path:
    """Log-log axes over the number of candidate items, then :func:`_save`."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("candidate items")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return _save(plt, fig, ax, path)


def _save(plt, fig, ax, path: str | Path) -> Path:
    """Legend, tight layout, write the PNG and close the figure."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
