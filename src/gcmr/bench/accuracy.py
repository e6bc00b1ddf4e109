"""``gcmr bench accuracy CORPUS``: CART against its ablations and the baselines users would
pick instead, side by side on one corpus, with one training budget for every row.

Rows (CART tables 4, 8, 9 and the GRACE-style identifier baselines):

==================  ===========================================================
``cart``            CART: K-Means coarse + RQ-VAE fine identifiers, fusion decoder,
                    CE + omega * R-Drop
``no-consistency``  omega = 0 (no R-Drop consistency loss)
``no-fusion``       plain cross-attention to the last encoder layer
``no-kmeans``       ``rq`` identifiers: RQ-VAE only, no coarse K-Means token
``no-rqvae``        ``hkmeans`` identifiers: hierarchical K-Means, no RQ-VAE
``atomic``          one arbitrary token per item
``random``          random codes of the same length
``avg``             AVG: aligned voken identifiers, L_gen + L_dis (AVG table 3)
``avg-shared``      AVG with one voken codebook shared by all steps, as in the paper
                    (gcmr's default is one per step)
``avg-no-align``    AVG w/o cross-modal alignment (``align_weight = 0``)
``avg-no-voken-emb`` AVG w/o voken embedding (random init of the identifier embeddings)
``avg-no-dis``      AVG w/o the discriminative loss (``dis_weight = 0``)
``avg-beamB``       the full AVG model searched with beam B in {1, 5, 20, 30} (AVG table 7;
                    beam 10 is the ``avg`` row); a beam narrower than k returns B items
``avg-hybrid``      AVG with the query-vector head, hybrid search (``-gen``: the same model,
                    pure generation)
``avg-minilm``      the same with the frozen offline MiniLM as query encoder, the analogue of
                    AVG's pretrained T5 generator (``-gen``: pure generation)
``dense-exact``     the dual tower (:mod:`gcmr.train.dense`), exact search
``dense-hnsw``      the same dual tower through a faiss HNSW index
``oracle``          the corpus's ceiling (``oracle.json``), when it has one
==================  ===========================================================

``grid`` adds CART with identifier sizes K = codebook size in {64, 128, 256} and identifier
length 4 / 5 / 6 (CART tables 6, 7). Every generative row is trained with the same
:class:`~gcmr.train.TrainConfig` (epochs, batch size, schedule, seed) and the dense tower with
the same one. Indexes and models live under a work directory and are reused when a re-run asks
for exactly the same thing, so an interrupted suite continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.ids.config import LEGACY_FIELDS
from gcmr.model.config import EncoderConfig
from gcmr.progress import err_console

METRICS = ("R@1", "R@5", "R@10", "MRR@10")
# model options the dense tower shares with the generative model: the query encoder's fields
# (EncoderConfig's; vocab_size comes from the tokenizer)
TOWER_MODEL_KEYS = tuple(f.name for f in dataclasses.fields(EncoderConfig)
                         if f.name != "vocab_size")
# TrainConfig fields that change how fast a run goes, not what it computes: a model trained
# with other values is reused
RUNTIME_FIELDS = ("num_threads", "device")


@dataclass(frozen=True)
class RowSpec:
    name: str
    label: str
    kind: str  # generative | dense | caption | oracle
    index: tuple = ()  # IndexConfig changes, as sorted (key, value) pairs
    train: tuple = ()  # TrainConfig changes
    model: tuple = ()  # model option changes
    backend: str = "exact"
    ablation_of: str = ""  # the full row this ablates ("cart" / "avg"): expected below it
    beam: int = 0  # search beam of this row (0 = the suite's); narrower than k returns beam items
    model_of: str = ""  # reuse the model trained for that row (rows that differ only in search)
    rerank: str = ""  # generative search mode: hybrid | none ("" = the model's own)


_AVG = (("scheme", "avg"),)
_HYBRID_TRAIN = (("dense_weight", 1.0),)
_AVG_TRAIN = (("method", "avg"),)
_MINILM_TRAIN = (("dense_weight", 1.0), ("query_encoder", "minilm"))
_CAPVIEW = (("fit_view", "captions"), ("scheme", "cart"))
_JOINT = (("fit_view", "joint"), ("scheme", "cart"))
_SIZED = (("codebook_size", 0), ("num_clusters", 0), ("scheme", "cart"))
# additive identifiers: K-Means + residual K-Means on the text-predictable projection
_ADDITIVE = (("fine_quantizer", "kmeans"), ("num_fine_levels", 2), ("scheme", "cart"),
             ("text_rank", 64))
_ADDITIVE_L3 = (("fine_quantizer", "kmeans"), ("num_fine_levels", 3), ("scheme", "cart"),
                ("text_rank", 64))
_SIZED_JOINT = (("codebook_size", 0), ("fit_view", "joint"), ("num_clusters", 0),
                ("scheme", "cart"))


def _hybrid_pair(name: str, label: str, index: tuple, train: tuple, *, beam: int = 0,
                 model: tuple = (),
                 gen_label: str = "the same, pure generation") -> tuple[RowSpec, RowSpec]:
    """A model with a query head searched two ways: ``name`` (hybrid) and ``name-gen`` (pure
    generation, the same trained model)."""
    return (RowSpec(name, label, "generative", index, train, model, rerank="hybrid", beam=beam),
            RowSpec(f"{name}-gen", gen_label, "generative", index, train, model, rerank="none",
                    model_of=name))
AVG_BEAMS = (1, 5, 20, 30)


ROWS: dict[str, RowSpec] = {r.name: r for r in (
    RowSpec("cart", "CART (full)", "generative", (("scheme", "cart"),)),
    RowSpec("no-consistency", "CART w/o consistency loss (omega = 0)", "generative",
            (("scheme", "cart"),), (("omega", 0.0),), ablation_of="cart"),
    RowSpec("no-fusion", "CART w/o fusion", "generative", (("scheme", "cart"),),
            model=(("fusion", "none"),), ablation_of="cart"),
    RowSpec("no-kmeans", "CART w/o K-Means (rq identifiers)", "generative",
            (("scheme", "rq"),), ablation_of="cart"),
    RowSpec("no-rqvae", "CART w/o RQ-VAE (hkmeans identifiers)", "generative",
            (("scheme", "hkmeans"),), ablation_of="cart"),
    RowSpec("atomic", "atomic identifiers (GRACE-style)", "generative",
            (("scheme", "atomic"),), ablation_of="cart"),
    RowSpec("random", "random identifiers (GRACE-style)", "generative",
            (("scheme", "random"),), ablation_of="cart"),
    RowSpec("avg", "AVG (full)", "generative", _AVG, _AVG_TRAIN),
    RowSpec("avg-shared", "AVG, one codebook shared by all steps (the paper's)", "generative",
            (("scheme", "avg"), ("shared_codebook", True)), _AVG_TRAIN),
    RowSpec("avg-no-align", "AVG w/o cross-modal alignment", "generative",
            (("align_weight", 0.0), ("scheme", "avg")), _AVG_TRAIN, ablation_of="avg"),
    RowSpec("avg-no-voken-emb", "AVG w/o voken embedding", "generative", _AVG,
            (("method", "avg"), ("voken_embedding_init", False)), ablation_of="avg"),
    RowSpec("avg-no-dis", "AVG w/o discriminative loss", "generative", _AVG,
            (("dis_weight", 0.0), ("method", "avg")), ablation_of="avg"),
    *(RowSpec(f"avg-beam{b}", f"AVG beam {b}", "generative", _AVG, _AVG_TRAIN, beam=b,
              model_of="avg")
      for b in AVG_BEAMS),
    *_hybrid_pair("cart-hybrid", "CART + query head, hybrid search (beam 20 + its clusters, "
                  "the model's saved candidate count)", (("scheme", "cart"),), _HYBRID_TRAIN,
                  beam=20, gen_label="CART + query head, pure generation (--rerank none)"),
    *_hybrid_pair("cart-minilm", "CART + frozen MiniLM query encoder, hybrid search "
                  "(--query-encoder minilm)", (("scheme", "cart"),), _MINILM_TRAIN, beam=20,
                  gen_label="CART + frozen MiniLM query encoder, pure generation"),
    *_hybrid_pair("cart-hybrid-capview", "CART + query head, identifiers fitted on caption "
                  "vectors (--fit-view captions)", _CAPVIEW, _HYBRID_TRAIN, beam=20),
    *_hybrid_pair("cart-minilm-capview", "CART + frozen MiniLM encoder, identifiers fitted on "
                  "caption vectors", _CAPVIEW, _MINILM_TRAIN, beam=20),
    *_hybrid_pair("cart-minilm-joint", "CART + frozen MiniLM encoder, identifiers fitted on "
                  "media + caption vectors", _JOINT, _MINILM_TRAIN, beam=20),
    *_hybrid_pair("cart-hybrid-sized", "CART + query head, sizes from N (--clusters 0 "
                  "--codebook-size 0)", _SIZED, _HYBRID_TRAIN),
    *_hybrid_pair("cart-minilm-joint-sized", "CART + frozen MiniLM, joint identifiers, sizes "
                  "from N", _SIZED_JOINT, _MINILM_TRAIN),
    *_hybrid_pair("cart-additive", "CART + query head, additive identifiers (--text-rank 64 "
                  "--fine-quantizer kmeans) + code vectors (--code-vectors add)", _ADDITIVE,
                  _HYBRID_TRAIN, model=(("code_vectors", "add"),)),
    *_hybrid_pair("cart-additive-steer", "CART + query head, additive identifiers + code "
                  "vectors steered by the decoder (--code-vectors steer: the default; 2 fine levels)",
                  _ADDITIVE, _HYBRID_TRAIN, model=(("code_vectors", "steer"),)),
    *_hybrid_pair("cart-additive-steer-l3", "CART + query head, additive identifiers + steer "
                  "code vectors, 3 fine levels (--levels 3: the default now)",
                  _ADDITIVE_L3, _HYBRID_TRAIN,
                  model=(("code_vectors", "steer"),)),
    *_hybrid_pair("cart-additive-ids", "CART + query head, additive identifiers, no code "
                  "vectors", _ADDITIVE, _HYBRID_TRAIN),
    *_hybrid_pair("cart-code-vectors", "CART + query head, CART's own identifiers + code "
                  "vectors", (("scheme", "cart"),), _HYBRID_TRAIN,
                  model=(("code_vectors", "add"),)),
    *_hybrid_pair("avg-hybrid", "AVG + query head, hybrid search (the accuracy issue's "
                  "rerank)", _AVG, (("dense_weight", 1.0), ("method", "avg")),
                  gen_label="AVG + query head, pure generation"),
    *_hybrid_pair("avg-minilm", "AVG + frozen MiniLM query encoder (pretrained generator "
                  "start), hybrid search", _AVG,
                  (("dense_weight", 1.0), ("method", "avg"), ("query_encoder", "minilm")),
                  gen_label="AVG + frozen MiniLM query encoder, pure generation"),
    RowSpec("caption-matcher", "caption matcher (offline MiniLM, no training)", "caption"),
    RowSpec("dense-exact", "dense dual tower, exact search", "dense", backend="exact"),
    RowSpec("dense-hnsw", "dense dual tower, faiss HNSW", "dense", backend="hnsw"),
    RowSpec("oracle", "oracle ceiling", "oracle"),
)}
DEFAULT_ROWS = list(ROWS)


def grid_rows() -> list[RowSpec]:
    """CART tables 6 and 7: K = codebook size in {64, 256} (128 is the full row) at length 4,
    and length 5 / 6 (more fine levels) at K = 128."""
    rows = [RowSpec(f"cart-k{k}", f"CART K = codebook = {k}", "generative",
                    (("codebook_size", k), ("num_clusters", k), ("scheme", "cart")))
            for k in (64, 256)]
    rows += [RowSpec(f"cart-l{length}", f"CART identifier length {length}", "generative",
                     (("num_fine_levels", length - 2), ("scheme", "cart")))
             for length in (5, 6)]
    return rows


@dataclass
class AccuracyConfig(JsonConfig):
    """Settings of the accuracy benchmark (saved in its report)."""

    rows: list[str] = field(default_factory=lambda: list(DEFAULT_ROWS))
    grid: bool = False  # add the identifier size / length grid (long)
    split: str = "test"
    k: int = 10
    beam: int = 10
    restrict: bool = False  # rank only the split's own items (paper protocol)
    max_queries: int = 0  # evaluate a seeded subsample (0 = every query)
    hnsw: str = "HNSW32"
    ef_search: int = 64
    index: dict[str, Any] = field(default_factory=dict)  # IndexConfig fields for every row
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields: the shared budget
    model: dict[str, Any] = field(default_factory=dict)  # model options for every row
    tower: dict[str, Any] = field(default_factory=dict)  # extra dense tower options
    caption_encoder: str = "minilm"  # the caption matcher's sentence encoder

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rows) - set(ROWS))
        if unknown:
            raise ConfigError(f"unknown accuracy rows {unknown}; known: {list(ROWS)}")
        if self.k < 10:
            raise ConfigError(f"k must be >= 10 (R@10 and MRR@10 are reported), got {self.k}")


def _key(*parts: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _log(msg: str, show: bool) -> None:
    if show:
        err_console.print(f"[bench accuracy] {msg}", highlight=False)


def _index_for(corpus, changes: dict[str, Any], work: Path, show: bool):
    """Build (or reuse) the index of ``changes``; returns (path, index, seconds, reused)."""
    from gcmr.ids import IndexConfig, build_index, load_index

    config = IndexConfig.from_dict(changes, where="index options")
    path = work / f"index-{changes.get('scheme', 'cart')}-{_key(config.to_dict(), corpus.fingerprint)}"
    if (path / "manifest.json").is_file():
        try:
            index = load_index(path, corpus=corpus)
            _log(f"reusing {path.name}", show)
            return path, index, float(index.timing.get("total_s", 0.0)), True
        except ArtifactError:
            pass
    _log(f"building {path.name} ({config.scheme})", show)
    index = build_index(corpus, config, show_progress=show)
    index.save(path, overwrite=True)
    return path, index, float(index.timing["total_s"]), False


def _budget(train_config: Any) -> dict[str, Any]:
    """The TrainConfig without the runtime-only fields (what decides the trained weights)."""
    return {k: v for k, v in train_config.to_dict().items() if k not in RUNTIME_FIELDS}


def _complete(model_dir: Path, budget: dict[str, Any]) -> bool:
    """``model_dir`` holds a finished model trained with ``budget``."""
    from gcmr.model.io import read_model_manifest

    try:
        manifest = read_model_manifest(model_dir)
    except ArtifactError:
        return False
    saved = {k: v for k, v in (manifest.get("train_config") or {}).items()
             if k not in RUNTIME_FIELDS}
    return manifest.get("status") == "complete" and saved == budget


def bench_accuracy(corpus_path: str | Path, out: str | Path,
                   config: AccuracyConfig | None = None, *, work: str | Path,
                   command: str | None = None, show_progress: bool = True) -> dict:
    """Train and evaluate every row of ``config`` on ``corpus_path`` and write the
    ``accuracy`` report (JSON, Markdown, PNG) to ``out``. Returns the report document."""
    from gcmr.bench.plots import plot_accuracy
    from gcmr.bench.report import command_line, machine_info, write_report
    from gcmr.corpus import load_corpus
    from gcmr.evaluate.runner import evaluate
    from gcmr.model.io import read_model_manifest, read_train_log
    from gcmr.search import load_searcher
    from gcmr.search.dense import DenseRetriever
    from gcmr.train import TrainConfig, train
    from gcmr.train.dense import train_dense

    config = config or AccuracyConfig()
    started = time.perf_counter()
    machine = machine_info()
    command = command or command_line()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(corpus_path)
    corpus.split(config.split)  # fail early on a missing split
    train_config = TrainConfig.from_dict(config.train, where="train options")
    specs = [ROWS[name] for name in config.rows]
    if config.grid:
        specs += grid_rows()
    max_q = config.max_queries or None
    rows: list[dict[str, Any]] = []
    indexes: dict[str, tuple] = {}
    dense_dir = None
    for spec in specs:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"row": spec.name, "method": spec.label}
        if spec.kind == "oracle":
            oracle = (corpus.oracle or {}).get(config.split)
            if not oracle or config.restrict:
                _log("no oracle for this corpus / pool: row skipped", show_progress)
                continue
            row.update({m: oracle.get(m) for m in METRICS})
            row["identifier"] = "-"
            rows.append(row)
            continue
        if spec.kind == "generative":
            # every row keeps CART's published recipe (RQ-VAE fine levels, no text projection)
            # unless it or the suite asks for another: the committed tables stay reproducible
            changes = {**LEGACY_FIELDS, **config.index, **dict(spec.index)}
            ikey = _key(changes)
            if ikey not in indexes:
                indexes[ikey] = _index_for(corpus, changes, work, show_progress)
            index_path, index, index_s, _ = indexes[ikey]
            # the papers' rows are pure generation whatever the library default (no query
            # head) unless the suite's budget or the row says otherwise
            pure = {} if config.train.get("dense_weight") is not None else {"dense_weight": 0.0}
            tc = TrainConfig.from_dict({**train_config.to_dict(), **pure, **dict(spec.train)},
                                       where=f"train options of row {spec.name}")
            options = {**config.model, **dict(spec.model)}
            name = spec.model_of or spec.name
            model_dir = work / f"model-{name}-{_key(_budget(tc), options, index_path.name)}"
            if _complete(model_dir, _budget(tc)):
                _log(f"reusing {model_dir.name}", show_progress)
            else:
                _log(f"training {spec.name} on {index_path.name}", show_progress)
                train(index_path, model_dir, config=tc, model_options=options, overwrite=True,
                      show_progress=show_progress)
            searcher = load_searcher(model_dir, rerank=spec.rerank or None)
            row["identifier"] = "x".join(str(s) for s in index.level_sizes)
            row["index_s"] = round(index_s, 1)
            beam = spec.beam or config.beam
        elif spec.kind == "caption":
            from gcmr.search.caption_matcher import CaptionMatcher

            _log("encoding every caption for the caption matcher", show_progress)
            searcher = CaptionMatcher(corpus, config.caption_encoder)
            row["identifier"] = "-"
            model_dir = beam = None
        else:  # dense
            tower = {key: config.model[key] for key in TOWER_MODEL_KEYS if key in config.model}
            tower.update(config.tower)
            dense_dir = work / f"dense-{_key(_budget(train_config), tower, corpus.fingerprint)}"
            if _complete(dense_dir, _budget(train_config)):
                _log(f"reusing {dense_dir.name}", show_progress)
            else:
                _log("training the dense dual tower", show_progress)
                train_dense(corpus.path, dense_dir, config=train_config, tower_options=tower,
                            overwrite=True, show_progress=show_progress)
            backend = "exact" if spec.backend == "exact" else f"faiss:{config.hnsw}"
            searcher = DenseRetriever.load(dense_dir, backend=backend, ef_search=config.ef_search)
            row["identifier"] = f"{corpus.dim}-d vector"
            model_dir = dense_dir
            beam = None
        manifest = read_model_manifest(model_dir) if model_dir is not None else {}
        _log(f"evaluating {spec.name}", show_progress)
        result = evaluate(searcher, corpus, config.split, k=config.k, beam=beam,
                          restrict_to_split=config.restrict, max_queries=max_q,
                          beam_only=True)
        row.update({m: round(result["metrics"][m], 4) for m in METRICS})
        row["epochs"] = manifest.get("epochs_done")
        history = read_train_log(model_dir) if model_dir is not None else []
        row["train_s"] = round(sum(h.get("seconds", 0.0) for h in history), 1) if history else None
        # the learning curve: validation R@1 after each epoch (undertrained vs wrong design)
        curve = [h["val"]["R@1"] for h in history if "R@1" in h.get("val", {})]
        row["val_R@1_by_epoch"] = "/".join(f"{v:.2f}" for v in curve) if curve else None
        row["eval_qps"] = result["queries_per_s"]
        if spec.kind == "generative":
            row["level_acc@1"] = level_accuracy(searcher, corpus, index.codes, config.split,
                                                beam=beam)
        row["queries"] = result["queries"]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _log(f"{spec.label}: " + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS), show_progress)
        del searcher
    notes = accuracy_notes(rows, specs)
    curves = [f"{r['method']} {r['val_R@1_by_epoch']}" for r in rows
              if r.get("val_R@1_by_epoch") and r["row"] != "cart-hybrid-gen"]
    if curves:
        notes.append("Learning curves, the validation R@1 after each epoch (a row still rising "
                     "at its last epoch is undertrained; a model with a query head is selected "
                     "on its hybrid search): " + "; ".join(curves) + ".")
    notes.append(f"Pool: {'the split items' if config.restrict else 'every corpus item'} "
                 f"({len(corpus):,} items); split {config.split}"
                 + (f", {max_q:,} sampled queries" if max_q else "")
                 + f"; generative rows: beam {config.beam}.")
    notes.append("One training budget for every row: " + ", ".join(
        f"{k} = {v}" for k, v in train_config.to_dict().items()
        if k in ("epochs", "batch_size", "lr", "warmup_epochs", "max_steps", "seed",
                 "val_split", "select_metric")) + ".")
    if config.model:
        notes.append("Model options for every row (the dense tower shares the encoder ones): "
                     + ", ".join(f"{k} = {v}" for k, v in sorted(config.model.items())) + ".")
    if any(s.beam and s.beam < config.k for s in specs):
        notes.append(f"A row searched with a beam narrower than k = {config.k} returns only "
                     f"beam items (R@k counts those), as in AVG table 7.")
    notes.append("train_s: training time recorded in each model directory (epochs x seconds); "
                 "eval_qps: evaluation speed in this run (batches of 256 queries). level_acc@1: "
                 "fraction of (500 sampled) queries whose top-1 identifier shares its first "
                 "1, 2, ..., L codes with a relevant item (where generation goes wrong).")
    settings = {**config.to_dict(), "corpus": str(corpus.path), "corpus_name": corpus.meta.name,
                "corpus_items": len(corpus), "corpus_dim": corpus.dim,
                "corpus_fingerprint": corpus.fingerprint, "work": str(work),
                "resolved_train_config": train_config.to_dict()}
    doc = write_report(out, "accuracy",
                       title=f"Accuracy on {corpus.meta.name} ({len(corpus):,} items, "
                             f"split {config.split})",
                       columns=["method", *METRICS, "identifier", "level_acc@1", "epochs",
                                "train_s", "eval_qps"],
                       rows=rows, settings=settings, command=command, machine=machine,
                       notes=notes, seconds=time.perf_counter() - started)
    plot_accuracy(rows, Path(out) / "accuracy.png")
    return doc


def level_accuracy(searcher: Any, corpus: Any, codes: Any, split: str, *, beam: int,
                   max_queries: int = 500, seed: int = 0) -> str:
    """How far the top-1 identifier matches the relevant item's identifier: the fraction of
    (up to ``max_queries`` sampled) queries whose top-1 result shares the first 1, 2, ..., L
    codes with a relevant item, as ``"a/b/c/d"``. Shows at which level generation goes wrong
    (e.g. a right coarse cluster but a wrong fine code)."""
    import numpy as np

    queries = corpus.split(split)
    relevant = corpus.relevant_rows(split)
    if len(queries) > max_queries:
        pick = np.sort(np.random.default_rng(seed).choice(len(queries), max_queries,
                                                          replace=False))
        queries = [queries[i] for i in pick]
        relevant = [relevant[i] for i in pick]
    _, rows = searcher.search_rows([q.text for q in queries], k=1, beam=beam)
    top = np.where(rows[:, :1] >= 0, rows[:, :1], -1)[:, 0]
    length = codes.shape[1]
    hits = np.zeros(length)
    for r, rel in zip(top, relevant):
        if r < 0:
            continue
        same = codes[rel] == codes[r]  # [R, L]
        prefix = np.cumprod(same, axis=1).max(axis=0)  # best relevant item per prefix length
        hits += prefix
    return "/".join(f"{h / max(len(queries), 1):.2f}" for h in hits)


def accuracy_notes(rows: list[dict[str, Any]], specs: list[RowSpec]) -> list[str]:
    """The targets, checked against the measured rows, as plain sentences."""
    by = {r["row"]: r for r in rows}
    notes: list[str] = []
    dense = by.get("dense-exact")
    for base, name in (("cart", "CART"), ("avg", "AVG")):
        full = by.get(base)
        if full is None:
            continue
        ablations = [s.name for s in specs if s.ablation_of == base and s.name in by]
        above = [f"{by[a]['method']} ({by[a]['R@1']:.4f})" for a in ablations
                 if by[a]["R@1"] >= full["R@1"]]
        if above:
            notes.append(f"Not every {name} ablation is below full {name} on R@1 "
                         f"({full['R@1']:.4f}): " + ", ".join(above) + " reach it or more.")
        elif ablations:
            notes.append(f"Every {name} ablation row is below full {name} on R@1.")
        if dense is None:
            continue
        wins = [m for m in ("R@1", "MRR@10") if full[m] >= dense[m]]
        loses = [m for m in ("R@1", "MRR@10") if full[m] < dense[m]]
        if not loses:
            notes.append(f"Full {name} >= the dense dual tower (exact) on R@1 and MRR@10 "
                         f"({full['R@1']:.4f} vs {dense['R@1']:.4f}, {full['MRR@10']:.4f} vs "
                         f"{dense['MRR@10']:.4f}).")
        else:
            notes.append(f"The dense dual tower (exact) beats full {name} on {', '.join(loses)} "
                         f"(R@1 {dense['R@1']:.4f} vs {full['R@1']:.4f}, MRR@10 "
                         f"{dense['MRR@10']:.4f} vs {full['MRR@10']:.4f})"
                         + (f"; {name} wins {', '.join(wins)}" if wins else "") + ".")
    notes += hybrid_notes(by)
    return notes


def hybrid_notes(by: dict[str, dict[str, Any]]) -> list[str]:
    """The hybrid search targets (R@1 >= 0.95 x dense and >= 0.80 x oracle, R@10 >= 0.95 x
    oracle, pure generation of the same model >= 0.60 x dense, above the caption matcher),
    each said as met or missed with the measured ratio."""
    notes: list[str] = []
    hybrid, gen = by.get("cart-hybrid"), by.get("cart-hybrid-gen")
    dense, oracle, matcher = by.get("dense-exact"), by.get("oracle"), by.get("caption-matcher")
    checks = []
    if hybrid and dense:
        checks.append(("hybrid CART R@1", hybrid["R@1"], "the dense tower's R@1",
                       dense["R@1"], 0.95))
    if hybrid and oracle:
        checks.append(("hybrid CART R@1", hybrid["R@1"], "the oracle's R@1", oracle["R@1"],
                       0.80))
        checks.append(("hybrid CART R@10", hybrid["R@10"], "the oracle's R@10",
                       oracle["R@10"], 0.95))
    if gen and dense:
        checks.append(("pure generation (same model) R@1", gen["R@1"], "the dense tower's R@1",
                       dense["R@1"], 0.60))
    if hybrid and matcher:
        checks.append(("hybrid CART R@1", hybrid["R@1"], "the caption matcher's R@1",
                       matcher["R@1"], 1.0))
    for what, value, ref_name, ref, target in checks:
        ratio = value / ref if ref else float("inf")
        verdict = "met" if ratio >= target else "missed"
        notes.append(f"Target {verdict}: {what} {value:.4f} = {ratio:.2f} x {ref_name} "
                     f"({ref:.4f}; target >= {target:.2f} x).")
    return notes


def parse_rows(text: str) -> list[str]:
    """``"cart,dense-exact"`` -> row names, checked."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise GcmrError(f"unknown accuracy rows {unknown}; known: {', '.join(ROWS)}")
    return names
