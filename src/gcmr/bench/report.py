"""What the benchmark reports share: machine information and the report writer.

A report is ``<name>.json`` (format ``gcmr-bench``: rows, settings, the command, the machine)
and ``<name>.md`` (a Markdown table with the command and the machine); the orchestrators
(:mod:`gcmr.bench.accuracy`, :mod:`gcmr.bench.scale`) add ``<name>.png``
(:mod:`gcmr.bench.plots`).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from gcmr.artifacts import library_versions, write_json

BENCH_FORMAT = "gcmr-bench"
BENCH_VERSION = 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads, memory, load and library versions of this run."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import faiss  # so library_versions() records it

        info["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:
        pass
    info["versions"] = library_versions()
    return info


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a report, as a shell line (``gcmr ...`` when run by the CLI)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("gcmr", "__main__.py"):
        argv[0] = "gcmr"
    return shlex.join(argv)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return "-" if value is None else str(value)


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def write_report(out: str | Path, name: str, *, title: str, columns: list[str],
                 rows: list[dict[str, Any]], settings: dict[str, Any], command: str,
                 machine: dict[str, Any], notes: list[str] | None = None,
                 seconds: float | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md``; returns the JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": BENCH_FORMAT, "version": BENCH_VERSION, "bench": name, "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command, "seconds": None if seconds is None else round(seconds, 1),
        "machine": machine, "settings": settings, "columns": columns, "rows": rows,
        "notes": list(notes or []),
    }
    if extra:
        doc.update(extra)
    write_json(out / f"{name}.json", doc)
    versions = machine.get("versions", {})
    md = [f"# {title}", "",
          f"Command: `{command}`", "",
          f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, torch "
          f"{versions.get('torch')} ({machine.get('torch_threads')} threads)"
          + (f", faiss {versions['faiss']}" if "faiss" in versions else "")
          + (f", load average at start {machine['load_average']}" if "load_average" in machine
             else "") + f"; {doc['created']}"
          + (f"; took {doc['seconds']:,.0f} s" if seconds is not None else ""), "",
          markdown_table(columns, rows), ""]
    if notes:
        md += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    (out / f"{name}.md").write_text("\n".join(md), encoding="utf-8")
    return doc
