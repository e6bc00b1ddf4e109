"""``gcmr bench throughput`` / ``gcmr bench memory``: speed and serving memory as the number
of candidate items grows (CART figure 4, measured here).

For each size, the synthetic world's first ``n`` items (:mod:`gcmr.bench.world`)
get CART identifiers and a trie (``build_index``, fitted on at most ``max_fit_items`` rows),
and the dense backends are built over the same embeddings (memory-mapped). A model's speed
does not depend on its weights, so both models are randomly initialized with the default
architectures: the generative retriever (:class:`~gcmr.model.GenerativeRetrievalModel`,
beam search constrained by the trie of that size) and the dense query tower
(:class:`~gcmr.train.dense.DenseTower`). Every method's time includes tokenizing the queries.

- throughput: queries/s over batches of ``batch_queries`` concurrent queries (after one
  warm-up batch), and p50 / p99 latency of single queries;
- memory: bytes to serve (CART: model parameters + identifier table + trie; dense: tower
  parameters + item embedding matrix as float32 and/or the faiss index) and build seconds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError
from gcmr.progress import err_console

SCALE_METHODS = ("cart", "cart-hybrid", "dense-exact", "faiss-flat", "faiss-hnsw")
# the committed reports' methods; cart-hybrid (query head + rerank from the memory-mapped
# embeddings) is asked for by name (run_bench.sh hybrid-scale)
DEFAULT_SCALE_METHODS = ("cart", "dense-exact", "faiss-flat", "faiss-hnsw")


@dataclass
class ScaleConfig(JsonConfig):
    """Settings of the scale benchmarks (saved in their reports)."""

    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000])
    dim: int = 512  # item embedding dimension (CLIP ViT-B/32's)
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_SCALE_METHODS))
    beams: list[int] = field(default_factory=lambda: [10, 20])
    k: int = 10
    batch_queries: int = 100  # concurrent queries per batch
    batches: int = 3  # timed batches per method and size (after one warm-up batch)
    single_queries: int = 50  # single-query latency samples
    hnsw: str = "HNSW32"
    ef_search: int = 64
    threads: int = 0  # torch and faiss threads (0 = all cores)
    max_fit_items: int = 100_000  # identifier fitting subsample (encoding covers every item)
    index_max_steps: int = 400  # RQ-VAE optimizer steps
    exact_in_memory_mb: int = 8192  # dense exact keeps the normalized matrix in RAM up to this
    embeddings_dtype: str = "float32"  # of the memory-mapped world (float16 halves the disk)
    tokenizer_items: int = 5000  # the query tokenizer is trained on these items' texts
    vocab_size: int = 8000
    index: dict[str, Any] = field(default_factory=dict)  # more IndexConfig fields (CART ids)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields (default: paper's)

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 10 for s in self.sizes):
            raise ConfigError(f"sizes must be a non-empty list of sizes >= 10, got {self.sizes}")
        self.sizes = sorted(int(s) for s in self.sizes)
        unknown = sorted(set(self.methods) - set(SCALE_METHODS))
        if unknown or not self.methods:
            raise ConfigError(f"unknown scale bench methods {unknown}; known: "
                              f"{list(SCALE_METHODS)}")
        if not self.beams or any(b < 1 for b in self.beams):
            raise ConfigError(f"beams must be >= 1, got {self.beams}")
        for name in ("k", "batch_queries", "batches", "single_queries", "dim", "ef_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def _param_bytes(module: torch.nn.Module) -> int:
    return int(sum(p.numel() * p.element_size() for p in module.parameters()))


def _timed(fn, texts: list[str], config: ScaleConfig) -> dict[str, float]:
    """Warm up, then time ``batches`` batches of ``batch_queries`` texts and single queries."""
    b = config.batch_queries
    fn(texts[:b])  # warm-up
    t0 = time.perf_counter()
    for i in range(config.batches):
        fn(texts[(i + 1) * b:(i + 2) * b])
    batch_s = time.perf_counter() - t0
    lat = []
    for q in texts[-config.single_queries:]:
        t = time.perf_counter()
        fn([q])
        lat.append(time.perf_counter() - t)
    lat_ms = np.asarray(lat) * 1000.0
    return {"queries_per_s": round(config.batches * b / batch_s, 1),
            "batch_ms": round(batch_s / config.batches * 1000.0, 2),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 2)}


def _set_threads(threads: int) -> int:
    import os

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    return n


def bench_scale(out: str | Path, config: ScaleConfig | None = None, *, work: str | Path,
                reports: tuple[str, ...] = ("throughput", "memory"),
                command: str | None = None, show_progress: bool = True) -> dict[str, dict]:
    """Run the scale benchmarks and write the ``throughput`` and/or ``memory`` reports.

    ``work`` holds the generated world embeddings (reused across runs). Returns the report
    documents by name.
    """
    from gcmr.bench.plots import plot_memory, plot_throughput
    from gcmr.bench.report import command_line, machine_info, write_report
    from gcmr.bench.world import ItemsView, sample_queries, world_embeddings, world_texts
    from gcmr.ids import IndexConfig, Trie, build_index
    from gcmr.ids.index import assemble
    from gcmr.model import EncoderConfig, GenerativeRetrievalModel, ModelConfig, QueryTokenizer
    from gcmr.train.trainer import default_code_vectors
    from gcmr.model.dense import DenseTower, DenseTowerConfig
    from gcmr.search.dense import DenseSearchConfig, make_backend
    from gcmr.search.rerank import ItemVectors, RerankConfig, expander_for
    from gcmr.search.retriever import search_rows

    config = config or ScaleConfig()
    unknown = sorted(set(reports) - {"throughput", "memory"})
    if unknown:
        raise ConfigError(f"unknown scale reports {unknown}")
    timing = "throughput" in reports
    started = time.perf_counter()
    threads = _set_threads(config.threads)
    machine = machine_info()
    command = command or command_line()
    work = Path(work)
    faiss_methods = [m for m in config.methods if m.startswith("faiss")]
    if faiss_methods:
        from gcmr.extras import require

        require("faiss", "faiss", purpose="the faiss rows of the scale benchmark")

    def log(msg: str) -> None:
        if show_progress:
            err_console.print(msg, highlight=False)

    emb_all = world_embeddings(work, num_items=config.sizes[-1], dim=config.dim,
                               seed=config.seed, dtype=config.embeddings_dtype,
                               show_progress=show_progress)
    tokenizer = QueryTokenizer.train(
        world_texts(seed=config.seed, num_items=config.tokenizer_items),
        vocab_size=config.vocab_size)
    n_texts = config.batch_queries * (config.batches + 1) + config.single_queries
    texts = sample_queries(seed=config.seed, count=n_texts)
    if len(texts) < n_texts:
        raise ConfigError(f"need {n_texts} query texts, the world gave {len(texts)}")
    # the tower shares the query encoder's fields of config.model (EncoderConfig's)
    encoder_fields = {f.name for f in dataclasses.fields(EncoderConfig)} - {"vocab_size"}
    shared = {k: v for k, v in config.model.items() if k in encoder_fields}
    tower = DenseTower(DenseTowerConfig(vocab_size=tokenizer.vocab_size, item_dim=config.dim,
                                        **{"dropout": 0.0, **shared})).eval()
    tower_bytes = _param_bytes(tower)
    arch = {**{f.name: f.default for f in dataclasses.fields(ModelConfig)
               if f.default is not dataclasses.MISSING}, **config.model}

    @torch.no_grad()
    def encode(batch: list[str]) -> np.ndarray:
        ids, mask = tokenizer.encode_batch(batch)
        return tower(ids, mask).numpy()

    generative = [m for m in config.methods if m in ("cart", "cart-hybrid")]
    if generative:
        # the identifier scheme is fitted once, on at most max_fit_items items (as build_index
        # fits on a subsample); every size then gets its own codes, unique counter and trie
        fit_n = min(config.sizes[-1], config.max_fit_items)
        log(f"[scale] fitting CART identifiers on {fit_n:,} items")
        fitted = build_index(
            ItemsView(emb_all[:fit_n], work, f"world-{config.seed}-{fit_n}"),
            IndexConfig.from_dict({"scheme": "cart", "max_fit_items": config.max_fit_items,
                                   "max_steps": config.index_max_steps, "seed": config.seed,
                                   **config.index}, where="scale index options"),
            show_progress=show_progress)
        fit_s = float(fitted.timing["fit_s"])
    speed_rows: list[dict[str, Any]] = []
    memory_rows: list[dict[str, Any]] = []
    for n in config.sizes:
        items = emb_all[:n]
        matrix_bytes = n * config.dim * 4
        if generative:
            log(f"[scale] {n:,} items: CART identifiers")
            t_ids = time.perf_counter()
            semantic = fitted.scheme.encode(items)
            codes, level_sizes = assemble(semantic, fitted.scheme.semantic_sizes_)
            del semantic
            trie = Trie.build(codes, level_sizes)
            ids_s = time.perf_counter() - t_ids
            trie_bytes = int(sum(t.numel() * t.element_size()
                                 for t in trie.state_dict().values()))
            ids_bytes = int(codes.nbytes)
            for method in generative:
                hybrid = method == "cart-hybrid"
                # a hybrid model gets what training would give it: the query head and the
                # default code vectors of these identifiers
                head = ({"query_dim": config.dim, "code_vectors": default_code_vectors(fitted)}
                        if hybrid else {})
                model = GenerativeRetrievalModel(ModelConfig(
                    vocab_size=tokenizer.vocab_size, level_sizes=list(level_sizes),
                    **{"dropout": 0.0, **head, **config.model})).eval()
                model_bytes = _param_bytes(model)
                name = "CART hybrid" if hybrid else "CART"
                note = "identifiers " + "x".join(str(s) for s in level_sizes)
                if hybrid:
                    note += ("; + the memory-mapped item embeddings, only the candidate rows "
                             "read per batch (page cache, not held by the process); the "
                             f"beam's coarse clusters expand the list to "
                             f"{RerankConfig().max_candidates} candidates")
                memory_rows.append({
                    "method": name, "candidates": n, "model_bytes": model_bytes,
                    "ids_bytes": ids_bytes, "trie_bytes": trie_bytes, "embedding_bytes": 0,
                    "index_bytes": 0, "total_bytes": model_bytes + ids_bytes + trie_bytes,
                    "build_s": round(fit_s + ids_s, 2), "note": note})
                if not timing:
                    continue
                vectors = ItemVectors(items) if hybrid else None
                rerank = RerankConfig()  # the hybrid defaults: expansion to the beam's clusters
                expander = expander_for(codes, level_sizes, rerank) if hybrid else None
                for beam in config.beams:
                    log(f"[scale] {n:,} items: {name} beam {beam}")

                    def run(batch: list[str], beam: int = beam, model: Any = model,
                            trie: Any = trie, vectors: Any = vectors,
                            expander: Any = expander,
                            max_candidates: int = rerank.max_candidates) -> None:
                        search_rows(model, tokenizer, trie, batch, k=config.k, beam=beam,
                                    batch_size=config.batch_queries, item_vectors=vectors,
                                    expander=expander, max_candidates=max_candidates)

                    speed_rows.append({"method": f"{name} (beam {beam})", "candidates": n,
                                       **_timed(run, texts, config)})
                del model
            del trie, codes
        for method in config.methods:
            if method in generative:
                continue
            search = DenseSearchConfig(
                backend={"dense-exact": "exact", "faiss-flat": "faiss:Flat",
                         "faiss-hnsw": f"faiss:{config.hnsw}"}[method],
                ef_search=config.ef_search, in_memory_mb=config.exact_in_memory_mb,
                seed=config.seed)
            label = {"dense-exact": "dense exact", "faiss-flat": "faiss Flat",
                     "faiss-hnsw": f"faiss {config.hnsw}"}[method]
            log(f"[scale] {n:,} items: {label} build")
            backend = make_backend(items, search)
            extra = backend.nbytes
            if method == "dense-exact":
                # in RAM: the normalized float32 matrix; streamed: the memory-mapped file (it
                # must stay in the page cache to serve at the measured speed)
                served = matrix_bytes if backend.in_memory else int(items.nbytes)
                how = "float32 in RAM" if backend.in_memory else \
                    f"streamed from the {items.dtype} memmap"
            else:
                served, how = extra, "faiss index (own copy of the vectors)"
            memory_rows.append({
                "method": label, "candidates": n, "model_bytes": tower_bytes, "ids_bytes": 0,
                "trie_bytes": 0,
                "embedding_bytes": served if method == "dense-exact" else 0,
                "index_bytes": 0 if method == "dense-exact" else extra,
                "total_bytes": tower_bytes + served,
                "build_s": round(backend.build_seconds, 2), "note": how})
            if timing:
                log(f"[scale] {n:,} items: {label} search")

                def run(batch: list[str], backend: Any = backend) -> None:
                    backend.search(encode(batch), config.k)

                speed_rows.append({"method": label, "candidates": n,
                                   **_timed(run, texts, config), "note": how})
            del backend
    seconds = time.perf_counter() - started
    settings = {**config.to_dict(), "threads_used": threads, "work": str(work)}
    docs: dict[str, dict] = {}
    out = Path(out)
    if timing:
        notes = [(f"{config.batch_queries} concurrent queries per batch, {config.batches} "
                  f"timed batches after a warm-up; latency over {config.single_queries} single "
                  f"queries; k = {config.k}; times include tokenization and query encoding."),
                 ("Models are randomly initialized (speed does not depend on weights): the "
                  f"generative retriever (d_model {arch['d_model']}, FFN {arch['d_ff']}, "
                  f"{arch['encoder_layers']} encoder + {arch['decoder_layers']} decoder layers, "
                  f"fusion {arch['fusion']}) and the dense tower with the same encoder "
                  f"(d_model {tower.config.d_model}, {tower.config.encoder_layers} layers) + a "
                  f"projection to {config.dim}-d."),
                 (f"Items: the synthetic world's first N items, {config.dim}-d; CART "
                  f"identifiers fitted on <= {config.max_fit_items:,} of them.")]
        crossover = throughput_crossover(speed_rows)
        if crossover:
            notes.append(crossover)
        docs["throughput"] = write_report(
            out, "throughput", title="Throughput vs number of candidate items",
            columns=["method", "candidates", "queries_per_s", "batch_ms", "p50_ms", "p99_ms",
                     "note"],
            rows=speed_rows, settings=settings, command=command, machine=machine, notes=notes,
            seconds=seconds)
        plot_throughput(speed_rows, out / "throughput.png")
    if "memory" in reports:
        for row in memory_rows:
            row["total"] = _human(row["total_bytes"])
        docs["memory"] = write_report(
            out, "memory", title="Memory to serve and index build time vs number of items",
            columns=["method", "candidates", "total", "model_bytes", "ids_bytes", "trie_bytes",
                     "embedding_bytes", "index_bytes", "build_s", "note"],
            rows=memory_rows, settings=settings, command=command, machine=machine,
            notes=[("CART serves from model + identifier table (int64 [N, L]) + trie; it needs "
                    "no item embeddings at query time. Dense exact serves from the normalized "
                    "float32 embedding matrix in RAM, or streams the memory-mapped file when that "
                    "does not fit (see note); faiss indexes hold their own copy of the vectors "
                    "(Flat) or vectors + graph (HNSW). build_s: CART = identifier fit + encode + "
                    "trie; dense exact = normalizing the matrix into RAM; faiss = train + add. "
                    "The CART identifier scheme (K-Means + RQ-VAE) is fitted once on at most "
                    f"{config.max_fit_items:,} items; each size's build_s is that fit time plus "
                    "encoding its items and building its trie. Training the models is not "
                    "included.")],
            seconds=seconds)
        plot_memory(memory_rows, out / "memory.png")
    return docs


def _human(n: int) -> str:
    from gcmr.bench.report import human_bytes

    return human_bytes(n)


def throughput_crossover(rows: list[dict[str, Any]], *, dense: str = "dense exact") -> str | None:
    """Where each CART row's queries/s first passes ``dense`` (interpolated on log-log axes
    between the measured sizes), as a sentence; None when there is nothing to compare."""
    base = {r["candidates"]: r["queries_per_s"] for r in rows if r["method"] == dense}
    if not base:
        return None
    parts = []
    for name in sorted({r["method"] for r in rows if r["method"].startswith("CART")}):
        pts = sorted((r["candidates"], r["queries_per_s"] / base[r["candidates"]])
                     for r in rows if r["method"] == name and r["candidates"] in base)
        where, prev = None, None
        for n1, r1 in pts:
            if r1 >= 1.0:
                if prev is None:
                    where = f"already at {n1:,} candidates (the smallest size measured)"
                else:  # log-log interpolation: where log(speed ratio) crosses 0
                    n0, r0 = prev
                    f = -np.log(r0) / (np.log(r1) - np.log(r0))
                    n = float(np.exp(np.log(n0) + f * (np.log(n1) - np.log(n0))))
                    where = f"at about {n:,.0f} candidates (between {n0:,} and {n1:,})"
                break
            prev = (n1, r1)
        if where is None:
            ratio = pts[-1][1] if pts else float("nan")
            where = (f"not within the sizes measured (at {pts[-1][0]:,} it runs at "
                     f"{ratio:.2f}x dense exact)") if pts else "not measured"
        parts.append(f"{name} passes {dense} {where}")
    return "Crossover: " + "; ".join(parts) + "."
