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
from gcmr.train.distributed import is_main, main_first, main_only, shared_tokenizer
from gcmr.train.loop import (
    TrainResult,
    check_resumable,
    fit,
    new_state,
    pairs_record,
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
                options.setdefault("code_vectors", default_code_vectors(index))
            tokenizer, model = _new_model(config, index, texts, options)
            tokenizer = shared_tokenizer(tokenizer, work / TOKENIZER)
        model = model.to(device)
        backbone = "t5" if config.backbone else "scratch"
        pairs = tokenize_pairs(tokenizer, texts, rows, n_captions)
        del texts
        with main_first():  # under torchrun the other ranks reuse rank 0's cache
            attach_feature_cache(model, pairs, tokenizer, config, show_progress=show_progress)
        if config.method == "avg" and not run.resume:
            from gcmr.train.avg import init_voken_embeddings

            init_voken_embeddings(model, index, enabled=config.voken_embedding_init)
        if not run.resume:
            from gcmr.train.code_vectors import init_code_vectors

            init_code_vectors(model, index, corpus, seed=config.seed)
        optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr,
                                      weight_decay=config.weight_decay)
        state = resume_state(work, model, optimizer) if run.resume else new_state()

        @main_only
        def write(status: str, state: dict[str, Any], rerank: dict | None = None) -> None:
            _write_manifest(work, status=status, config=config, model=model, backbone=backbone,
                            index=index, index_path=index_path, corpus=corpus, pairs=pairs,
                            state=state, rerank=rerank)

        write("training", state)
        state = fit(model, optimizer,
                    cart_or_avg_loss(config, pairs, index, tokenizer, device, corpus=corpus,
                                     state=state),
                    num_pairs=len(pairs), config=config, workdir=work, device=device,
                    state=state, validate=_validator(config, corpus, index, tokenizer, work,
                                                     device),
                    on_epoch=lambda s: write("training", s), show_progress=show_progress)
        rerank = None
        if getattr(model, "has_query_head", False) and is_main():
            from gcmr.model.io import WEIGHTS, load_weights

            load_weights(model, work / WEIGHTS)  # the selected epoch, not the last one
            if model.config.pretrained:
                write_caption_vectors(work, model, pairs, corpus, tokenizer.pad_id, device)
            rerank = choose_rerank(model, tokenizer, index, corpus, config, device, work=work)
        write("complete", state, rerank=rerank)
    return TrainResult(out=out, epochs_run=state["epoch"], best_epoch=state["best_epoch"],
                       best_metrics=state["best_metrics"], history=state["history"],
                       seconds=time.perf_counter() - started, num_pairs=len(pairs))


def cart_or_avg_loss(config: TrainConfig, pairs: Pairs, index: Any, tokenizer: Any,
                     device: torch.device, *, corpus: Any = None,
                     state: dict[str, Any] | None = None):
    """The minibatch loss of ``config.method`` over pair indices (for :func:`fit`); with
    ``config.resolved_dense_weight > 0`` plus the query head's InfoNCE against the corpus
    embeddings.

    AVG's L_dis is on only in the last ``config.dis_epochs`` epochs (AVG's second stage):
    ``state`` is the run state :func:`fit` advances in place (``state["epoch"]`` = epochs
    completed), so a resumed run switches at the same epoch; without it L_dis is always on."""
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

            stage2 = state is None or state["epoch"] >= config.epochs - config.dis_epochs
            loss, parts = avg_loss(model, ids, mask, codes, trie=index.trie,
                                   omega=config.resolved_omega, beam=config.dis_beam,
                                   dis_weight=config.dis_weight if stage2 else 0.0)
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
        logp, rows, cos, relevant, _ = _val_candidates(model, tokenizer, index, corpus,
                                                       config, split, device,
                                                       width=max(config.val_beam, 10))
        hybrid = retrieval_metrics(rank(fuse(cos, logp, 0.0), rows, 10)[1], relevant)
        generative = retrieval_metrics(rows[:, :10], relevant)
        return {**hybrid, **{f"gen_{k}": v for k, v in generative.items()}}

    return validate


def choose_rerank(model: Any, tokenizer: Any, index: Any, corpus: Any, config: TrainConfig,
                  device: torch.device, *, work: Path | None = None) -> dict[str, Any]:
    """The hybrid search settings saved with a model that has a query head: the fusion weight
    of the sequence log-probability that maximizes ``select_metric`` on the validation split
    (0 = cosine only without a validation split). A model with a pretrained query encoder
    also chooses what candidates are scored against (``item_vectors``): the media embeddings
    (query head), the caption vectors in ``work`` (text space), or a blend of both
    (``text_weight`` from :data:`~gcmr.search.rerank.TEXT_WEIGHT_GRID`), by the same metric."""
    from gcmr.evaluate.runner import choose_fusion_weight
    from gcmr.search.rerank import (
        TEXT_WEIGHT_GRID,
        CaptionVectors,
        RerankConfig,
        blend_scores,
        expander_for,
    )

    split = validation_split(corpus, config)
    defaults = RerankConfig()  # the candidate list the search will rerank
    if split is None:
        return {**defaults.to_dict(), "chosen_on": None}
    was_training = model.training
    model.eval()
    logp, rows, cos, relevant, texts = _val_candidates(
        model, tokenizer, index, corpus, config, split, device, width=defaults.candidates,
        expander=expander_for(index.codes, index.level_sizes, defaults),
        max_candidates=defaults.max_candidates)
    cosines = {"embeddings": cos}
    if model.config.pretrained and work is not None:  # the same candidates, scored by text
        text = _rescored(model, tokenizer, texts, rows,
                         CaptionVectors.open(work, index.num_items), device)
        cosines["captions"] = text
        for w in TEXT_WEIGHT_GRID:  # and by both (BlendedVectors)
            cosines[f"blend:{w:g}"] = blend_scores(cos, text, w)
    model.train(was_training)
    choices = {name: choose_fusion_weight(c, logp, rows, relevant, metric=config.select_metric)
               for name, c in cosines.items()}
    # ties go to the media embeddings, then to the captions (the simpler scorers)
    best = max(choices, key=lambda name: (max(choices[name][1].values()), name == "embeddings",
                                          name == "captions"))
    weight, table = choices[best]
    source, _, text_weight = best.partition(":")
    record = {**defaults.replace(logprob_weight=weight, item_vectors=source,
                                 text_weight=float(text_weight or 0.0)).to_dict(),
              "chosen_on": split, "queries": len(relevant), "metric": config.select_metric,
              "by_weight": table}
    if len(choices) > 1:
        record["by_item_vectors"] = {name: max(t.values()) for name, (_, t) in choices.items()}
    return record


def _val_candidates(model: Any, tokenizer: Any, index: Any, corpus: Any, config: TrainConfig,
                    split: str, device: torch.device, *, width: int, expander: Any = None,
                    max_candidates: int = 100):
    """The hybrid candidates of (a seeded subsample of) the validation queries with their
    log-probabilities and cosines to the corpus embeddings: ``(logprobs, rows, cosines,
    relevant, texts)``."""
    from gcmr.evaluate.runner import sample_queries
    from gcmr.search.rerank import ItemVectors
    from gcmr.search.retriever import search_candidates

    texts, relevant = sample_queries(corpus, split, config.max_val_queries, seed=config.seed)
    logp, rows, cos = search_candidates(model, tokenizer, index.trie, texts, k=width,
                                        beam=width, device=device,
                                        item_vectors=ItemVectors(corpus.embeddings),
                                        expander=expander, max_candidates=max_candidates)
    return logp, rows, cos, relevant, texts


@torch.no_grad()
def _rescored(model: Any, tokenizer: Any, texts: list[str], rows: Any, vectors: Any,
              device: torch.device, *, batch_size: int = 256) -> Any:
    """Cosines [Q, C] of candidate ``rows`` against other item ``vectors`` (their own query
    vectors from one encoder pass per batch, batched as the candidate search was): another
    scoring of the same candidates without searching again."""
    import numpy as np

    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer.encode_batch(texts[start:start + batch_size])
        enc = model.encode(ids.to(device), mask.to(device))
        stop = start + ids.shape[0]
        out[start:stop] = vectors.cosines(vectors.query(model, enc), rows[start:stop])
    return out


def default_code_vectors(index: Any) -> str:
    """``ModelConfig.code_vectors`` when not given, for a model with a query head: steer for
    additive identifiers (``IndexConfig.additive``: an item's codes sum to a reconstruction of
    it), none otherwise (on CART's RQ-VAE identifiers code vectors lowered pure generation,
    R@1 0.165 vs 0.1965 in the same run, benchmarks/results/additive/raw_ids)."""
    return "steer" if index.config.additive else "none"


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

    options = dict(model_options)
    options.setdefault("max_query_length", config.max_query_length)
    options.setdefault("seed", config.seed)
    if config.query_encoder:  # a pretrained encoder brings its own tokenizer
        from gcmr.model.pretrained import pretrained_spec
        from gcmr.model.tokenizer import PretrainedQueryTokenizer

        spec = pretrained_spec(config.query_encoder, frozen=not config.finetune_encoder)
        tokenizer = PretrainedQueryTokenizer.from_source(spec["path"],
                                                         max_length=config.max_query_length)
        model = GenerativeRetrievalModel(ModelConfig(
            vocab_size=tokenizer.vocab_size, level_sizes=list(index.level_sizes),
            pretrained=spec, **options))
        model.query_encoder.load_source(spec["path"])
        return tokenizer, model
    tokenizer = QueryTokenizer.train(texts, vocab_size=config.vocab_size,
                                     lowercase=config.lowercase,
                                     max_length=config.max_query_length, kind=config.tokenizer)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size,
                               level_sizes=list(index.level_sizes), **options)
    return tokenizer, GenerativeRetrievalModel(model_config)


def param_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the trainable parameters at ``lr``; a fine-tuned
    pretrained query encoder's own weights at ``encoder_lr`` (``lr_scale``, which the loop's
    schedule multiplies); frozen weights are left out."""
    backbone = getattr(getattr(model, "query_encoder", None), "backbone", None)
    pretrained = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    own = [p for p in model.parameters() if p.requires_grad and id(p) not in pretrained]
    groups = [{"params": own}]
    tuned = [p for p in (backbone.parameters() if backbone is not None else [])
             if p.requires_grad]
    if tuned:
        groups.append({"params": tuned, "lr_scale": config.encoder_lr / config.lr})
    return groups


def attach_feature_cache(model: Any, pairs: Pairs, tokenizer: Any, config: TrainConfig, *,
                         show_progress: bool = True) -> None:
    """A frozen pretrained query encoder reads the training texts' features from a disk cache
    (:class:`gcmr.model.pretrained.FeatureCache`: built once, reused by later runs on the
    same texts and encoder)."""
    encoder = getattr(model, "query_encoder", None)
    if not getattr(encoder, "frozen", False) or not getattr(model.config, "pretrained", None):
        return
    from gcmr.model.pretrained import FeatureCache
    from gcmr.progress import note, progress

    started = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    with progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task("encoder features", total=None, info="")
        cache = FeatureCache.build(
            encoder, pairs.tokens, pairs.lengths, pad_id=tokenizer.pad_id,
            root=config.feature_cache or None,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    encoder.train(was_training)
    encoder.cache = cache
    if show_progress:
        verb = "built" if cache.meta.get("built") else "reused"
        note(f"feature cache {verb}: {len(cache):,} texts, {cache.meta['bytes'] / 2**20:.0f} MB "
             f"at {cache.directory} ({time.perf_counter() - started:.1f} s)")


@torch.no_grad()
def write_caption_vectors(work: Path, model: Any, pairs: Pairs, corpus: Any, pad_id: int,
                          device: torch.device, *, batch_size: int = 256) -> None:
    """Save the items' caption vectors (the pretrained encoder's sentence vectors, float16,
    grouped by item) for text-space hybrid search (:class:`gcmr.search.rerank.CaptionVectors`).
    The caption pairs are the first ``num_caption_pairs`` pairs, in item order."""
    import numpy as np

    from gcmr.model.io import CAPTION_OFFSETS, CAPTION_VECTORS

    encoder = model.query_encoder
    was_training = encoder.training
    encoder.eval()
    n = pairs.num_caption_pairs
    out = np.lib.format.open_memmap(work / f".{CAPTION_VECTORS}.tmp", mode="w+",
                                    dtype=np.float16, shape=(n, encoder.hidden_size))
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        ids, mask, _ = pairs.batch(idx, pad_id)
        _, _, text = encoder.encode_with_text(ids.to(device), mask.to(device))
        out[start:start + len(idx)] = text.cpu().numpy().astype(np.float16)
    out.flush()
    del out
    encoder.train(was_training)
    counts = np.bincount(pairs.rows[:n].numpy(), minlength=len(corpus))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    np.save(work / f".{CAPTION_OFFSETS}.tmp.npy", offsets)
    (work / f".{CAPTION_VECTORS}.tmp").replace(work / CAPTION_VECTORS)
    (work / f".{CAPTION_OFFSETS}.tmp.npy").replace(work / CAPTION_OFFSETS)


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
              **({"dis_epochs": min(config.dis_epochs, config.epochs)}
                 if config.method == "avg" and config.dis_weight > 0 else {}),
              **({"dense_weight": config.resolved_dense_weight}
                 if config.resolved_dense_weight else {})},
        backbone=backbone,
        model_config=model.config.to_dict(),
        index=index_record(index, index_path),
        corpus=corpus_record(corpus),
        data=pairs_record(pairs, config),
        epochs_done=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metrics=state["best_metrics"],
        parameters=sum(p.numel() for p in model.parameters()),
        **({"rerank": rerank} if rerank else {}),
    )
