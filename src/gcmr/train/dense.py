"""``gcmr train-dense``: the dual-tower baseline, the fair peer of the generative retriever.

Same supervision, same text capacity, scoring instead of generating:

- the same training pairs (:func:`gcmr.train.data.training_texts`: item captions + train
  queries) and the same query tokenizer (:class:`gcmr.model.QueryTokenizer`, trained with the
  same :class:`~gcmr.train.TrainConfig` vocabulary settings);
- the same query encoder (:class:`gcmr.model.dense.DenseTower` wraps the generative model's
  :class:`~gcmr.model.layers.QueryEncoder`), pooled and projected into the frozen item space;
- the same training loop (:func:`gcmr.train.loop.fit`: schedule, clipping, seeding, model
  selection, checkpoints, ``--resume``, crash-safe ``--overwrite``).

Loss: symmetric InfoNCE with in-batch negatives and a learnable temperature (CLIP),
:func:`gcmr.train.losses.info_nce`. AdamW (no weight decay on biases, norms and the
temperature) with the CART schedule.

The model directory (format ``gcmr-dense`` v1, :mod:`gcmr.model.io`): ``manifest.json``
(configs, corpus path + fingerprint), ``model.safetensors`` (the best validation epoch, or the
last without validation), ``tokenizer.json``, ``train_log.jsonl``, ``checkpoint/`` and, with
``save_index``, ``faiss.index``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from gcmr.errors import ArtifactError, ConfigError
from gcmr.model.dense import DenseTower, DenseTowerConfig
from gcmr.model.io import (
    FAISS_FILE,
    TOKENIZER,
    corpus_record,
    read_dense_manifest,
    write_model_manifest,
)
from gcmr.runtime import resolve_device, set_threads
from gcmr.train import loop
from gcmr.train.config import TrainConfig
from gcmr.train.distributed import is_main, main_only, shared_tokenizer
from gcmr.train.loop import TrainResult, pairs_record

__all__ = ["resolve_source", "train_dense"]


def resolve_source(source: str | Path, corpus_path: str | Path | None = None):
    """``source`` is a corpus directory or an index directory (its corpus is used, checked by
    fingerprint). Returns ``(corpus, index_path or None)``."""
    from gcmr.corpus import load_corpus
    from gcmr.ids import load_index_and_corpus

    source = Path(source)
    if (source / "corpus.json").is_file():
        return load_corpus(corpus_path or source), None
    _, corpus = load_index_and_corpus(source, corpus_path)
    return corpus, source


def train_dense(
    source: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    tower_options: dict[str, Any] | None = None,
    search: Any = None,
    corpus_path: str | Path | None = None,
    save_index: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train the dual-tower baseline on a corpus (or an index's corpus) and write ``out``.

    ``config`` is the generative model's :class:`TrainConfig` (epochs, batch size, learning
    rate schedule, data, tokenizer, validation, seed): one budget for both. Fields that only
    mean something for the generative model (omega, method, beams) are ignored.
    ``tower_options`` are :class:`DenseTowerConfig` fields; ``search`` a
    :class:`~gcmr.search.dense.DenseSearchConfig` saved as the model's default backend.
    """
    from gcmr.model import QueryTokenizer
    from gcmr.search.dense import DenseSearchConfig
    from gcmr.train.data import item_vectors, tokenize_pairs, training_texts

    config = config or TrainConfig()
    search = search or DenseSearchConfig()
    if save_index and search.factory is None:
        raise ConfigError("--save-index needs a faiss backend (e.g. --backend faiss:HNSW32); "
                          "exact search has no index to save")
    out = Path(out)
    loop.refuse_existing(out, resume=resume, overwrite=overwrite)
    corpus, index_path = resolve_source(source, corpus_path)
    device = resolve_device(config.device)
    set_threads(config.num_threads)
    started = time.perf_counter()
    texts, rows, n_captions = training_texts(
        corpus, use_captions=config.use_captions, use_train_queries=config.use_train_queries,
        split=config.train_split)
    torch.manual_seed(config.seed)
    with loop.training_dir(out, resume=resume, overwrite=overwrite) as run:
        work = run.path
        if run.resume:
            manifest = read_dense_manifest(work)
            loop.check_resumable(manifest, config, work)
            if manifest.get("corpus", {}).get("fingerprint") != corpus.fingerprint:
                raise ArtifactError(f"{work}: was trained on a different corpus; cannot resume")
            tokenizer = QueryTokenizer.load(work / manifest.get("tokenizer", TOKENIZER))
            tower_config = DenseTowerConfig.from_dict(manifest["tower_config"],
                                                      where=f"{work}: tower_config")
        else:
            tokenizer = QueryTokenizer.train(texts, vocab_size=config.vocab_size,
                                             lowercase=config.lowercase,
                                             max_length=config.max_query_length,
                                             kind=config.tokenizer)
            tokenizer = shared_tokenizer(tokenizer, work / TOKENIZER)
            options = dict(tower_options or {})
            options.setdefault("max_query_length", config.max_query_length)
            options.setdefault("seed", config.seed)
            tower_config = DenseTowerConfig(vocab_size=tokenizer.vocab_size,
                                            item_dim=corpus.dim, **options)
        pairs = tokenize_pairs(tokenizer, texts, rows, n_captions)
        del texts
        tower = DenseTower(tower_config).to(device)
        decay = [p for p in tower.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in tower.parameters() if p.requires_grad and p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        state = loop.resume_state(work, tower, optimizer) if run.resume else loop.new_state()

        def loss_fn(model: DenseTower, idx: torch.Tensor):
            from gcmr.train.losses import info_nce

            ids, mask, batch_rows = pairs.batch(idx, tokenizer.pad_id)
            items = item_vectors(corpus.embeddings, batch_rows).to(device)
            q = model(ids.to(device), mask.to(device))
            loss = info_nce(q, items, batch_rows.to(device), model.logit_scale)
            return loss, {"loss": float(loss.detach())}

        @main_only
        def write(status: str, state: dict[str, Any], **extra: Any) -> None:
            write_model_manifest(
                work, dense=True, status=status, train_config=config.to_dict(),
                tower_config=tower_config.to_dict(), search=search.to_dict(),
                corpus=corpus_record(corpus, dense=True),
                source_index=str(Path(index_path).resolve()) if index_path else None,
                data=pairs_record(pairs, config),
                parameters=sum(p.numel() for p in tower.parameters()),
                epochs_done=state["epoch"], steps=state["global_step"],
                best_epoch=state["best_epoch"], best_metrics=state["best_metrics"],
                seconds=round(time.perf_counter() - started, 3), **extra)

        write("training", state)
        state = loop.fit(tower, optimizer, loss_fn, num_pairs=len(pairs), config=config,
                    workdir=work, device=device, state=state,
                    validate=_validator(config, corpus, tokenizer, work, device),
                    epoch_info=lambda m: {"temperature": round(
                        1.0 / float(m.logit_scale.detach()), 5)},
                    on_epoch=lambda s: write("training", s), label="dense epoch",
                    show_progress=show_progress)
        saved_index = _save_faiss(corpus, search, work) if save_index and is_main() else None
        write("complete", state, saved_index=saved_index)
    return TrainResult(out=out, epochs_run=state["epoch"], best_epoch=state["best_epoch"],
                       best_metrics=state["best_metrics"], history=state["history"],
                       seconds=time.perf_counter() - started, num_pairs=len(pairs))


def _validator(config: TrainConfig, corpus: Any, tokenizer: Any, work: Path,
               device: torch.device):
    """Exact search with the in-training tower through the public evaluation API."""
    split = loop.validation_split(corpus, config)
    if split is None:
        return None
    from gcmr.evaluate.runner import evaluate
    from gcmr.search.dense import DenseRetriever, DenseSearchConfig, ExactBackend

    manifest = {"corpus": {"fingerprint": corpus.fingerprint}}
    backend = ExactBackend(corpus.embeddings, DenseSearchConfig())  # built once per run

    def validate(tower: DenseTower) -> dict[str, float]:
        searcher = DenseRetriever(tower, tokenizer, corpus.embeddings, backend.config, manifest,
                                  path=work, corpus_path=corpus.path, device=device,
                                  backend=backend, item_ids=list(corpus.ids))
        return evaluate(searcher, corpus, split, k=10, max_queries=config.max_val_queries,
                        seed=config.seed)["metrics"]

    return validate


def _save_faiss(corpus: Any, search: Any, work: Path) -> dict[str, Any]:
    from gcmr.search.dense import make_backend
    from gcmr.search.faiss_index import save_faiss_index

    backend = make_backend(corpus.embeddings, search)
    save_faiss_index(backend.index, work / FAISS_FILE)
    return {"backend": search.backend, "file": FAISS_FILE,
            "build_seconds": round(backend.build_seconds, 3)}
