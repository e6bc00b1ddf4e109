"""Load benchmark of ``gcmr serve``: concurrent loopback clients against a real uvicorn
server, with and without micro-batching.

For each server setting (``--max-batch`` / ``--max-wait-ms``) a fresh ``gcmr serve``
subprocess is started on a free loopback port, warmed up, then measured twice in the same run:
one client alone, and ``clients`` concurrent clients, each sending ``requests`` single-query
``GET /search`` requests back to back over one keep-alive connection (the standard library's
``http.client``: a light client, so the clients' own CPU disturbs the server little on a
small machine). Reported per phase: requests/s, latency p50 / p90 / p99 / max, errors (any
status but 200, or a failed connection), the mean batch size the server saw (from its
``/metrics``), and the server's RSS (``/proc``) after each phase; the load average before
and after. The server is stopped with SIGTERM and the time its graceful shutdown took is
recorded.

``benchmarks/serve_load.py`` runs it (:func:`main`); :func:`build_tiny_model` makes the small
model it is measured on (a synthetic world, seconds of training: the model's accuracy does
not matter here, its decoding cost does).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

from gcmr.errors import GcmrError


@dataclass(frozen=True)
class LoadConfig:
    """One load run: ``clients`` concurrent clients x ``requests`` requests each (and one
    client alone for the same ``requests``), ``k`` results per query, ``warmup`` requests
    first (not counted)."""

    clients: int = 8
    requests: int = 100
    k: int = 10
    warmup: int = 30
    timeout_s: float = 60.0


@dataclass(frozen=True)
class ServerSetting:
    """The ``gcmr serve`` batching flags of one measured server."""

    label: str
    max_batch: int
    max_wait_ms: float


DEFAULT_SETTINGS = (ServerSetting("batching off", 1, 0.0),
                    ServerSetting("micro-batching", 32, 2.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def wait_ready(port: int, proc: subprocess.Popen, log: Path,
               timeout_s: float = 120.0) -> dict[str, Any]:
    """``/health`` of the server on ``port`` once it answers (GcmrError, with the end of its
    ``log``, if it exits or does not answer within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, body = _get(conn, "/health")
            conn.close()
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
            raise GcmrError(f"gcmr serve did not start on port {port}: {out[-2000:]}")
        time.sleep(0.2)


@contextmanager
def running_server(model_dir: str | Path, setting: ServerSetting, *, log: Path,
                   extra_args: Sequence[str] = ()) -> Iterator[tuple[subprocess.Popen, int,
                                                                     dict[str, Any]]]:
    """``gcmr serve MODEL`` with ``setting``'s flags in a subprocess on a free port, its
    output (uvicorn's access log: a line per request) written to ``log``:
    ``(process, port, health)``; stopped with SIGTERM on exit (``process.shutdown_s`` then
    holds how long the graceful shutdown took)."""
    port = free_port()
    cmd = [sys.executable, "-m", "gcmr", "serve", str(model_dir), "--port", str(port),
           "--max-batch", str(setting.max_batch), "--max-wait-ms", str(setting.max_wait_ms),
           *extra_args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as out:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        health = wait_ready(port, proc, log)
        yield proc, port, health
    finally:
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.shutdown_s = time.perf_counter() - t0  # type: ignore[attr-defined]


def server_memory(pid: int) -> dict[str, float | None]:
    """The process's resident memory now and its peak, in MiB (None off Linux)."""
    out: dict[str, float | None] = {"rss_mib": None, "peak_rss_mib": None}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_mib" if line.startswith("VmRSS") else "peak_rss_mib"
                    out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def batch_stats(port: int) -> dict[str, float]:
    """Batched searches the server ran so far and their queries (``gcmr_batch_size``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, body = _get(conn, "/metrics")
    conn.close()
    values = {"count": 0.0, "sum": 0.0}
    if status != 200:
        return values
    for line in body.decode("utf-8").splitlines():
        for name in values:
            if line.startswith(f"gcmr_batch_size_{name} "):
                values[name] = float(line.split()[1])
    return values


def run_clients(port: int, queries: Sequence[str], *, clients: int, requests: int, k: int,
                timeout_s: float) -> dict[str, Any]:
    """``clients`` threads, each sending ``requests`` single-query GETs back to back over one
    keep-alive connection; throughput, latency percentiles (ms) and errors."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        paths = [f"/search?{urlencode({'q': queries[(c * requests + i) % len(queries)], 'k': k})}"
                 for i in range(requests)]
        start.wait()
        for path in paths:
            t0 = time.perf_counter()
            try:
                status, _ = _get(conn, path)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
            latencies[c].append(time.perf_counter() - t0)
            if status != 200:
                errors[c] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    ms = np.asarray([x for per in latencies for x in per]) * 1000
    total = int(ms.size)
    return {"clients": clients, "requests": total, "errors": int(sum(errors)),
            "seconds": round(seconds, 3), "requests_per_s": round(total / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2)}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def measure_setting(model_dir: str | Path, setting: ServerSetting, queries: Sequence[str],
                    config: LoadConfig, *, log: Path) -> dict[str, Any]:
    """One server setting: warm-up, one client alone, then ``config.clients`` at once (the
    server's output in ``log``)."""
    with running_server(model_dir, setting, log=log) as (proc, port, health):
        run_clients(port, queries, clients=1, requests=config.warmup, k=config.k,
                    timeout_s=config.timeout_s)
        phases = {}
        for name, clients in (("single", 1), ("concurrent", config.clients)):
            before, load0 = batch_stats(port), _loadavg()
            result = run_clients(port, queries, clients=clients, requests=config.requests,
                                 k=config.k, timeout_s=config.timeout_s)
            after = batch_stats(port)
            batches = after["count"] - before["count"]
            result["mean_batch"] = round((after["sum"] - before["sum"]) / batches, 2) \
                if batches else None
            result["load_average_before"], result["load_average_after"] = load0, _loadavg()
            result.update(server_memory(proc.pid))
            phases[name] = result
    single, many = phases["single"], phases["concurrent"]
    return {"setting": asdict(setting), "items": health.get("items"),
            "health_batching": health.get("batching"),
            "single": single, "concurrent": many,
            "speedup_vs_single": round(many["requests_per_s"] / single["requests_per_s"], 2),
            "p99_vs_single": round(many["p99_ms"] / single["p99_ms"], 2),
            "shutdown_s": round(getattr(proc, "shutdown_s", float("nan")), 2)}


TINY_MODEL = {"d_model": 64, "n_heads": 4, "d_ff": 256, "encoder_layers": 2,
              "decoder_layers": 2}


def build_tiny_model(work: str | Path, *, items: int = 1000, dim: int = 64, seed: int = 0,
                     max_steps: int = 30) -> tuple[Path, Path]:
    """A tiny CART model on a synthetic world under ``work`` (``corpus/``, ``index/``,
    ``model/``): :data:`TINY_MODEL` (d_model 64, 2 + 2 layers, a query head: hybrid search
    by default), ``max_steps`` steps of training. Returns ``(model_dir, corpus_dir)``."""
    from gcmr.corpus import load_corpus
    from gcmr.corpus.synth import SynthConfig, synthesize
    from gcmr.ids import IndexConfig, build_index
    from gcmr.train import TrainConfig, train

    work = Path(work)
    corpus_dir = work / "corpus"
    synthesize(corpus_dir, SynthConfig(num_items=items, seed=seed, dim=dim), overwrite=True,
               show_progress=False)
    index = build_index(load_corpus(corpus_dir), IndexConfig(scheme="cart", seed=seed),
                        show_progress=False, threads=1)
    index_dir = index.save(work / "index", overwrite=True)
    config = TrainConfig(epochs=1, seed=seed, batch_size=64, lr=0.002, max_steps=max_steps,
                         val_split=None)
    train(index_dir, work / "model", config=config, model_options=TINY_MODEL, overwrite=True,
          show_progress=False)
    return work / "model", corpus_dir


def bench_serve_load(model_dir: str | Path, queries: Sequence[str], *, logs: Path,
                     settings: Sequence[ServerSetting] = DEFAULT_SETTINGS,
                     config: LoadConfig | None = None) -> list[dict[str, Any]]:
    """Every setting measured in turn (see the module docstring), the servers' output in
    ``logs/server-<max_batch>.log``; one result each."""
    config = config or LoadConfig()
    return [measure_setting(model_dir, setting, queries, config,
                            log=Path(logs) / f"server-{setting.max_batch}.log")
            for setting in settings]


def report_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        for phase in ("single", "concurrent"):
            p = r[phase]
            rows.append({"server": r["setting"]["label"],
                         "max batch": r["setting"]["max_batch"],
                         "max wait ms": r["setting"]["max_wait_ms"],
                         "clients": p["clients"], "requests": p["requests"],
                         "req/s": p["requests_per_s"], "p50 ms": p["p50_ms"],
                         "p99 ms": p["p99_ms"], "max ms": p["max_ms"], "errors": p["errors"],
                         "mean batch": p["mean_batch"], "RSS MiB": p["rss_mib"],
                         "peak RSS MiB": p["peak_rss_mib"],
                         "load avg after": " ".join(map(str, p["load_average_after"] or []))})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/serve_load.py [--out DIR] [--model DIR] ...``"""
    from gcmr.bench.report import command_line, machine_info, write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/gcmr_serve_load"),
                        help="where the tiny model is built (when --model is not given)")
    parser.add_argument("--model", type=Path, help="an existing model directory to serve")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=LoadConfig.clients)
    parser.add_argument("--requests", type=int, default=LoadConfig.requests)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_SETTINGS[1].max_batch)
    parser.add_argument("--max-wait-ms", type=float, default=DEFAULT_SETTINGS[1].max_wait_ms)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    machine = machine_info()  # the load average before the runs (each phase records its own)
    if args.model is None:
        model_dir, corpus_dir = build_tiny_model(args.work, items=args.items)
    else:
        model_dir = args.model
        corpus_dir = Path(json.loads((model_dir / "manifest.json").read_text())["corpus"]["path"])
    from gcmr.corpus import load_corpus

    queries = [q.text for q in load_corpus(corpus_dir).split("test")]
    settings = (DEFAULT_SETTINGS[0],
                ServerSetting("micro-batching", args.max_batch, args.max_wait_ms))
    config = LoadConfig(clients=args.clients, requests=args.requests)
    results = bench_serve_load(model_dir, queries, settings=settings, config=config,
                               logs=args.work)
    on = results[-1]
    notes = [(f"each client sends {config.requests} single-query GET /search?q=...&k={config.k} "
             f"back to back over one keep-alive connection (http.client), the queries being "
             f"the world's test queries; {config.warmup} warm-up requests first"),
             "the clients run on the same machine as the server (loopback), sharing its cores",
             (f"with micro-batching, {on['concurrent']['clients']} clients get "
             f"{on['speedup_vs_single']}x the requests/s of one client in the same run, p99 "
             f"{on['p99_vs_single']}x the single client's; batching off: "
             f"{results[0]['speedup_vs_single']}x, p99 {results[0]['p99_vs_single']}x"),
             "graceful shutdown (SIGTERM) took " + ", ".join(
                 f"{r['shutdown_s']} s ({r['setting']['label']})" for r in results)]
    columns = ["server", "max batch", "max wait ms", "clients", "requests", "req/s", "p50 ms",
               "p99 ms", "max ms", "errors", "mean batch", "RSS MiB", "peak RSS MiB",
               "load avg after"]
    write_report(args.out, "serve_load", title="gcmr serve under load (loopback)",
                 columns=columns, rows=report_rows(results),
                 settings={"load": asdict(config),
                           "servers": [asdict(s) for s in settings],
                           "model": str(model_dir), "items": results[0]["items"],
                           "model_options": None if args.model else TINY_MODEL,
                           "search": "the model's default: hybrid (beam 10 + rerank by its "
                                     "query head)" if args.model is None else "its default"},
                 command=command_line(), machine=machine, notes=notes,
                 seconds=time.perf_counter() - t0, extra={"results": results})
    print((args.out / "serve_load.md").read_text(encoding="utf-8"))
    return 0
