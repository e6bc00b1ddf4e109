"""``gcmr train``: fit the seq2seq retriever on (query, identifier) pairs.

Loss: CART (eq. 8) token cross-entropy + omega * R-Drop KL between two dropout passes of the
same batch (one concatenated forward), or AVG's ``L_gen + dis_weight * L_dis`` (eqs. 7-10,
:mod:`gcmr.train.avg`). The optimization itself is the shared loop
(:func:`gcmr.train.loop.fit`): AdamW, linear warm-up then cosine annealing with warm restarts
(CART appendix C), gradient clipping, bf16 autocast on CUDA, per-epoch seeding.

The model directory (format :mod:`gcmr.model.io`) is written as training goes:
``manifest.json`` (status, configs, the index and corpus fingerprints), ``tokenizer.json``,
``model.safetensors`` (the selected weights), ``train_log.jsonl`` and ``checkpoint/`` for
``--resume``; with ``--overwrite`` all of it goes to a staging directory that replaces the old
model only when training is complete (:func:`gcmr.train.loop.training_dir`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from gcmr.errors import ArtifactError, ConfigError
from gcmr.ids import load_index_and_corpus
from gcmr.model.io import (
    TOKENIZER,
    corpus_record,
    index_fingerprint,
    index_record,
    read_generative_manifest,
    write_model_manifest,
)
from gcmr.runtime import resolve_device, set_threads
from gcmr.train.config import TrainConfig
from gcmr.train.data import Pairs, tokenize_pairs, training_texts
from gcmr.train.loop import (
    TrainResult,
    check_resumable,
    fit,
    new_state,
    refuse_existing,
    resume_state,
    training_dir,
    validation_split,
)

__all__ = ["TrainResult", "train"]


def train(
    index_path: str | Path,
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    model_options: dict[str, Any] | None = None,
    corpus_path: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train a retriever on the index at ``index_path``, writing the model directory ``out``."""
    from gcmr.model.factory import empty_model, load_tokenizer

    out = Path(out)
    config = config or TrainConfig()
    refuse_existing(out, resume=resume, overwrite=overwrite)
    index, corpus = load_index_and_corpus(index_path, corpus_path)
    device = resolve_device(config.device)
    set_threads(config.num_threads)
    texts, rows, n_captions = training_texts(
        corpus, use_captions=config.use_captions, use_train_queries=config.use_train_queries,
        split=config.train_split)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    with training_dir(out, resume=resume, overwrite=overwrite) as run:
        work = run.path
        if run.resume:
            manifest = read_generative_manifest(work)
            check_resumable(manifest, config, work)
            if manifest.get("index", {}).get("fingerprint") != index_fingerprint(index):
                raise ArtifactError(f"{work}: was trained on a different index; cannot resume")
            tokenizer = load_tokenizer(work, manifest)
            model = empty_model(manifest)
        else:
            options = dict(model_options or {})
            if config.resolved_dense_weight > 0:
                options.setdefault("query_dim", corpus.dim)
            tokenizer, model = _new_model(config, index, texts, options)
            tokenizer.save(work / TOKENIZER)
        model = model.to(device)
        backbone = "t5" if config.backbone else "scratch"
        pairs = tokenize_pairs(tokenizer, texts, rows, n_captions)
        del texts
        if config.method == "avg" and not run.resume:
            from gcmr.train.avg import init_voken_embeddings

            init_voken_embeddings(model, index, enabled=config.voken_embedding_init)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
        state = resume_state(work, model, optimizer) if run.resume else new_state()

        def write(status: str, state: dict[str, Any], rerank: dict | None = None) -> None:
            _write_manifest(work, status=status, config=config, model=model, backbone=backbone,
                            index=index, index_path=index_path, corpus=corpus, pairs=pairs,
                            state=state, rerank=rerank)

        write("training", state)
        state = fit(model, optimizer,
                    cart_or_avg_loss(config, pairs, index, tokenizer, device, corpus=corpus),
                    num_pairs=len(pairs), config=config, workdir=work, device=device,
                    state=state, validate=_validator(config, corpus, index, tokenizer, work,
                                                     device),
                    on_epoch=lambda s: write("training", s), show_progress=show_progress)
        rerank = None
        if getattr(model, "has_query_head", False):
            from gcmr.model.io import WEIGHTS, load_weights

            load_weights(model, work / WEIGHTS)  # the selected epoch, not the last one
            rerank = choose_rerank(model, tokenizer, index, corpus, config, device)
        write("complete", state, rerank=rerank)
    return TrainResult(out=out, epochs_run=state["epoch"], best_epoch=state["best_epoch"],
                       best_metrics=state["best_metrics"], history=state["history"],
                       seconds=time.perf_counter() - started, num_pairs=len(pairs))


def cart_or_avg_loss(config: TrainConfig, pairs: Pairs, index: Any, tokenizer: Any,
                     device: torch.device, *, corpus: Any = None):
    """The minibatch loss of ``config.method`` over pair indices (for :func:`fit`); with
    ``config.resolved_dense_weight > 0`` plus the query head's InfoNCE against the corpus
    embeddings."""
    from gcmr.train.data import item_vectors
    from gcmr.train.losses import cart_loss

    codes_all = torch.as_tensor(index.codes, dtype=torch.long)

    dense = config.resolved_dense_weight

    def loss_fn(model: Any, idx: torch.Tensor):
        ids, mask, rows = pairs.batch(idx, tokenizer.pad_id)
        codes = codes_all[rows]
        ids, mask, codes = ids.to(device), mask.to(device), codes.to(device)
        items = item_vectors(corpus.embeddings, rows).to(device) if dense > 0 else None
        rows = rows.to(device)
        if config.method == "avg":
            from gcmr.train.avg import avg_loss
            from gcmr.train.losses import info_nce

            loss, parts = avg_loss(model, ids, mask, codes, trie=index.trie,
                                   omega=config.resolved_omega, beam=config.dis_beam,
                                   dis_weight=config.dis_weight)
            if dense > 0:  # the query head, on its own encoder pass
                nce = info_nce(model.query_vectors(model.encode(ids, mask)), items, rows,
                               model.logit_scale)
                loss = loss + dense * nce
                parts.update(nce=float(nce.detach()), loss=float(loss.detach()))
            return loss, parts
        return cart_loss(model, ids, mask, codes, omega=config.resolved_omega, items=items,
                         rows=rows, dense_weight=dense)

    return loss_fn


def _validator(config: TrainConfig, corpus: Any, index: Any, tokenizer: Any, work: Path,
               device: torch.device):
    """Model selection through the public evaluation API: the in-training model behind a
    :class:`~gcmr.search.retriever.Retriever`, scored by :func:`gcmr.evaluate.runner.evaluate`
    on (a seeded subsample of) the validation split. A model with a query-vector head is
    selected on its hybrid search (cosine rerank of the beam's candidates, weight 0); its
    pure-generation metrics are logged beside them as ``gen_<metric>``, from the same search."""
    split = validation_split(corpus, config)
    if split is None:
        return None
    from gcmr.evaluate.metrics import retrieval_metrics
    from gcmr.evaluate.runner import evaluate
    from gcmr.search.rerank import fuse, rank
    from gcmr.search.retriever import Retriever

    def validate(model: Any) -> dict[str, float]:
        if not getattr(model, "has_query_head", False):
            searcher = Retriever(model, tokenizer, index, {}, path=work, device=device)
            return evaluate(searcher, corpus, split, k=10, beam=config.val_beam,
                            max_queries=config.max_val_queries, seed=config.seed)["metrics"]
        logp, rows, cos, relevant = _val_candidates(model, tokenizer, index, corpus, config,
                                                    split, device,
                                                    width=max(config.val_beam, 10))
        hybrid = retrieval_metrics(rank(fuse(cos, logp, 0.0), rows, 10)[1], relevant)
        generative = retrieval_metrics(rows[:, :10], relevant)
        return {**hybrid, **{f"gen_{k}": v for k, v in generative.items()}}

    return validate


def choose_rerank(model: Any, tokenizer: Any, index: Any, corpus: Any, config: TrainConfig,
                  device: torch.device) -> dict[str, Any]:
    """The hybrid search settings saved with a model that has a query head: the fusion weight
    of the sequence log-probability that maximizes ``select_metric`` on the validation split
    (0 = cosine only without a validation split)."""
    from gcmr.evaluate.runner import choose_fusion_weight
    from gcmr.search.rerank import RerankConfig, expander_for

    split = validation_split(corpus, config)
    defaults = RerankConfig()  # the candidate list the search will rerank
    if split is None:
        return {**defaults.to_dict(), "chosen_on": None}
    was_training = model.training
    model.eval()
    logp, rows, cos, relevant = _val_candidates(
        model, tokenizer, index, corpus, config, split, device, width=defaults.candidates,
        expander=expander_for(index.codes, index.level_sizes, defaults),
        max_candidates=defaults.max_candidates)
    model.train(was_training)
    weight, table = choose_fusion_weight(cos, logp, rows, relevant, metric=config.select_metric)
    return {**defaults.replace(logprob_weight=weight).to_dict(), "chosen_on": split,
            "queries": len(relevant), "metric": config.select_metric, "by_weight": table}


def _val_candidates(model: Any, tokenizer: Any, index: Any, corpus: Any, config: TrainConfig,
                    split: str, device: torch.device, *, width: int, expander: Any = None,
                    max_candidates: int = 100):
    """The hybrid candidates of (a seeded subsample of) the validation queries with their
    log-probabilities and cosines: ``(logprobs, rows, cosines, relevant)``."""
    from gcmr.evaluate.runner import sample_queries
    from gcmr.search.rerank import ItemVectors
    from gcmr.search.retriever import search_candidates

    texts, relevant = sample_queries(corpus, split, config.max_val_queries, seed=config.seed)
    logp, rows, cos = search_candidates(model, tokenizer, index.trie, texts, k=width,
                                        beam=width, device=device,
                                        item_vectors=ItemVectors(corpus.embeddings),
                                        expander=expander, max_candidates=max_candidates)
    return logp, rows, cos, relevant


def _new_model(config: TrainConfig, index, texts: list[str], model_options: dict[str, Any]):
    """A fresh (tokenizer, model): our tokenizer + from-scratch model, or a pretrained T5."""
    from gcmr.model.factory import parse_backbone

    kind, source = parse_backbone(config.backbone)
    if kind == "t5":
        from gcmr.model.t5_backbone import T5Backbone, T5QueryTokenizer

        if model_options:
            raise ConfigError(f"model options {sorted(model_options)} do not apply to a "
                              f"pretrained T5 backbone")
        tokenizer = T5QueryTokenizer.from_source(source, max_length=config.max_query_length)
        model = T5Backbone.from_pretrained(source, list(index.level_sizes),
                                           max_query_length=config.max_query_length,
                                           seed=config.seed)
        return tokenizer, model
    from gcmr.model import GenerativeRetrievalModel, ModelConfig, QueryTokenizer

    tokenizer = QueryTokenizer.train(texts, vocab_size=config.vocab_size,
                                     lowercase=config.lowercase,
                                     max_length=config.max_query_length, kind=config.tokenizer)
    options = dict(model_options)
    options.setdefault("max_query_length", config.max_query_length)
    options.setdefault("seed", config.seed)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size,
                               level_sizes=list(index.level_sizes), **options)
    return tokenizer, GenerativeRetrievalModel(model_config)


def _write_manifest(out: Path, *, status: str, config: TrainConfig, model, backbone: str,
                    index, index_path, corpus, pairs: Pairs, state: dict,
                    rerank: dict | None = None) -> None:
    write_model_manifest(
        out, dense=False,
        status=status,
        method=config.method,
        train_config=config.to_dict(),
        loss={"omega": config.resolved_omega,
              "dis_weight": config.dis_weight if config.method == "avg" else 0.0,
              **({"dense_weight": config.resolved_dense_weight}
                 if config.resolved_dense_weight else {})},
        backbone=backbone,
        model_config=model.config.to_dict(),
        index=index_record(index, index_path),
        corpus=corpus_record(corpus),
        data={"pairs": len(pairs), "caption_pairs": pairs.num_caption_pairs,
              "query_pairs": pairs.num_query_pairs},
        epochs_done=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metrics=state["best_metrics"],
        parameters=sum(p.numel() for p in model.parameters()),
        **({"rerank": rerank} if rerank else {}),
    )
