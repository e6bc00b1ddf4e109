"""The demo pipeline behind ``gcmr demo``: a synthetic world, validated, CART semantic
identifiers, the generative retriever trained on it, evaluated on the test queries against
the oracle ceiling, and its batched search throughput measured.

```
from gcmr.bench.demo import run_demo
result = run_demo(Path("demo"), items=300, dim=32, epochs=1)
result.metrics["R@1"], result.queries_per_s, result.model_dir
```
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcmr.progress import err_console

# The demo's model and learning rate are the "demo" preset (src/gcmr/presets/demo.json): a
# CPU-sized model, since the library default (d_model 192 / FFN 768, chosen for search speed)
# trains at ~20-60 pairs/s on two CPU cores, too slow for a first run. That one trains at ~200
# pairs/s and keeps the architecture (3 + 3 layers, CART fusion); any model option overrides
# it. Measured (benchmarks/model_size.sh): d_model 64 trains 2x faster but reaches R@1 0.105
# where 128 reaches 0.450, so the demo uses 128 on a smaller world.
DEMO_PRESET = "demo"
# the throughput measurement: concurrent queries per batch and beam width
DEMO_BATCH = 100


class DemoObserver:
    """What :func:`run_demo` reports while it runs. The default prints the stage headings and
    short notes to stderr; override ``index_built`` to show the identifier health tables."""

    def stage(self, title: str) -> None:
        err_console.rule(f"[bold]{title}")

    def note(self, message: str) -> None:
        err_console.print(message)

    def index_built(self, index: Any, path: Path) -> None:
        """Called with the built :class:`~gcmr.ids.SemanticIndex` and the directory it was
        saved to."""


@dataclass
class DemoResult:
    """What one demo run measured, and where its artifacts are."""

    work: Path
    corpus_dir: Path
    index_dir: Path
    model_dir: Path
    metrics: dict[str, float]  # R@1, R@5, R@10, MRR@10 on the test split
    oracle: dict[str, float]  # the world's ceiling per metric ({} when it has none)
    queries: int  # test queries evaluated
    candidates: int  # items ranked
    queries_per_s: float  # batched search throughput (DEMO_BATCH queries, the default search)
    timings: dict[str, float]  # seconds per stage: "synth + validate", "index", "train"
    num_pairs: int  # training pairs
    epochs_run: int
    best_epoch: int
    model_options: dict[str, Any] = field(default_factory=dict)  # the model options used
    search: str = ""  # how the model searched by default, e.g. "hybrid, beam 20"

    @property
    def rows(self) -> list[tuple[str, float, Any, str]]:
        """The metrics table: (metric, value, oracle ceiling or "-", fraction of the oracle)."""
        oracle = self.oracle
        return [(m, v, oracle.get(m, "-"), f"{v / oracle[m]:.1%}" if oracle.get(m) else "-")
                for m, v in self.metrics.items()]


def run_demo(work: str | Path, *, items: int = 2000, dim: int = 1024, epochs: int = 5,
             lr: float | None = None, threads: int = 0, seed: int = 0,
             model_options: dict[str, Any] | None = None,
             preset: str | Path | dict[str, Any] = DEMO_PRESET, show_progress: bool = True,
             observer: DemoObserver | None = None) -> DemoResult:
    """Run the whole pipeline under ``work`` (``corpus/``, ``index/``, ``model/``, replaced if
    they exist) and return what it measured.

    ``preset`` (a name, a JSON file or a :func:`~gcmr.train.config.load_preset` result; default
    the CPU-sized ``demo``) gives the model and the training options; ``model_options`` and
    ``lr`` (default: the preset's) override them, and ``epochs``, ``seed`` and ``threads``
    (torch's CPU thread count, 0 = torch's default) always apply. ``observer`` receives the
    stage headings and notes (default: :class:`DemoObserver`, printed to stderr);
    ``show_progress`` shows progress bars.
    """
    from gcmr.corpus import load_corpus, summarize
    from gcmr.corpus.synth import SynthConfig, synthesize
    from gcmr.evaluate.runner import evaluate
    from gcmr.ids import IndexConfig, build_index
    from gcmr.search.retriever import Retriever
    from gcmr.train import TrainConfig, train
    from gcmr.train.config import load_preset

    observer = observer or DemoObserver()
    if not isinstance(preset, dict):
        preset = load_preset(preset)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    observer.stage(f"1/4 synthetic world: {items:,} items, D = {dim}")
    t0 = time.perf_counter()
    corpus_dir = work / "corpus"
    synthesize(corpus_dir, SynthConfig(num_items=items, seed=seed, dim=dim), overwrite=True)
    corpus = load_corpus(corpus_dir)
    summary = summarize(corpus)
    timings["synth + validate"] = time.perf_counter() - t0
    observer.note(f"valid corpus: {summary['items']:,} items, splits {summary['splits']}")

    observer.stage("2/4 CART semantic identifiers")
    t0 = time.perf_counter()
    # one thread, as `gcmr index` builds by default: the RQ-VAE's multi-threaded CPU training
    # is not bit-reproducible (its weights differ in the last bits from run to run with two
    # threads, and sometimes its codes), one thread is
    index = build_index(corpus, IndexConfig(scheme="cart", seed=seed), show_progress=show_progress,
                        threads=1)
    index_dir = index.save(work / "index", overwrite=True)
    timings["index"] = time.perf_counter() - t0
    observer.index_built(index, index_dir)

    observer.stage("3/4 training the generative retriever")
    t0 = time.perf_counter()
    fields = {**preset.get("train", {}), "epochs": epochs, "seed": seed,
              "num_threads": max(0, threads)}
    if lr is not None:
        fields["lr"] = lr
    config = TrainConfig.from_dict(fields, where="demo training options")
    options = {**preset.get("model", {}), **(model_options or {})}
    shape = ", ".join(f"{k} {v}" for k, v in options.items()) or "the library default"
    observer.note(f"model: {shape}; {epochs} epochs, lr {config.lr:g}")
    model_dir = work / "model"
    result = train(index_dir, model_dir, config=config, model_options=options, overwrite=True,
                   show_progress=show_progress)
    timings["train"] = time.perf_counter() - t0

    observer.stage("4/4 evaluation on the test queries")
    retriever = Retriever.load(model_dir)
    # the model's default search: hybrid (the rerank's candidate beam) for a model with a
    # query head, pure generation at beam max(10, k) otherwise
    report = evaluate(retriever, corpus, "test", k=10)
    qps = measure_throughput(retriever, [q.text for q in corpus.split("test")],
                             batch=DEMO_BATCH, beam=None)
    if retriever.rerank.mode == "hybrid":
        search = f"hybrid, beam {retriever.rerank.candidates}"
    else:
        from gcmr.search.beam import effective_beam

        search = f"generative, beam {effective_beam(None, 10)}"
    return DemoResult(
        work=work, corpus_dir=corpus_dir, index_dir=Path(index_dir), model_dir=model_dir,
        metrics=dict(report["metrics"]), oracle=dict(report["oracle"] or {}),
        queries=report["queries"], candidates=report["candidates"], queries_per_s=qps,
        timings=timings, num_pairs=result.num_pairs, epochs_run=result.epochs_run,
        best_epoch=result.best_epoch, model_options=options, search=search)


def measure_throughput(retriever: Any, texts: list[str], *, batch: int = 100,
                       beam: int | None = None,
                       repeats: int = 3) -> float:
    """Queries per second of batched search (best of ``repeats`` runs over one batch)."""
    texts = (texts * (batch // max(1, len(texts)) + 1))[:batch]
    retriever.search_rows(texts[: min(8, batch)], k=10, beam=beam)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        retriever.search_rows(texts, k=10, beam=beam, batch_size=batch)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best
