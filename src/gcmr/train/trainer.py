"""``gcmr train``: fit the seq2seq retriever on (query, identifier) pairs.

Loss (CART eq. 8): token cross-entropy + omega * R-Drop KL between two dropout passes of the
same batch (one concatenated forward). AdamW, linear warm-up then cosine annealing with warm
restarts (CART appendix C), gradient clipping, bf16 autocast on CUDA.

The model directory is written as training goes: ``manifest.json`` (status, configs, the index
and corpus fingerprints), ``tokenizer.json``, ``model.safetensors`` (the selected weights:
best validation epoch, or the last epoch without validation), ``train_log.jsonl`` (one line
per epoch) and ``checkpoint/`` (last epoch: model, optimizer, counters) for ``--resume``. Each
file is replaced atomically. Training is deterministic on CPU for a seed: data order and
dropout are seeded per epoch, so resuming after epoch e gives the same weights as not stopping.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.artifacts import read_manifest, save_tensors, write_manifest
from gcmr.corpus import Corpus, load_corpus
from gcmr.errors import ArtifactError, ConfigError
from gcmr.evaluate.metrics import retrieval_metrics
from gcmr.progress import note, progress
from gcmr.train.checkpoint import load_checkpoint, load_optimizer, save_checkpoint
from gcmr.train.config import TrainConfig
from gcmr.train.data import Pairs, tokenize_pairs, training_texts
from gcmr.train.schedule import lr_at

MODEL_FORMAT = "gcmr-model"
MODEL_VERSION = 1
# TrainConfig fields that may change between the run that wrote a checkpoint and --resume
RESUMABLE_CHANGES = {"epochs", "max_steps", "patience", "device", "num_threads"}


@dataclass
class TrainResult:
    out: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    num_pairs: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def _autocast(config: TrainConfig, device: torch.device):
    mode = config.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "off"
    if mode == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type,
                          dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def load_index_and_corpus(index_path: str | Path, corpus_path: str | Path | None = None,
                          *, load_captions: bool = True):
    """Load an index and the corpus it was built from; refuse a fingerprint mismatch."""
    from gcmr.ids import load_index

    index = load_index(index_path)
    path = Path(corpus_path) if corpus_path else Path(index.corpus_path)
    if not path.is_absolute() and not path.exists():
        path = Path(index_path) / path
    corpus = load_corpus(path, load_captions=load_captions)
    if corpus.fingerprint != index.corpus_fingerprint:
        raise ArtifactError(
            f"index {index_path} was built from a corpus with fingerprint "
            f"{index.corpus_fingerprint}, but {path} has fingerprint {corpus.fingerprint}; "
            f"rebuild the index with `gcmr index {path} ...`"
        )
    return index, corpus


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


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
    index, corpus = load_index_and_corpus(index_path, corpus_path)
    device = resolve_device(config.device)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)

    texts, rows, n_captions = training_texts(
        corpus, use_captions=config.use_captions, use_train_queries=config.use_train_queries,
        split=config.train_split)
    _seed_everything(config.seed)
    if resume:
        manifest = _check_resume(out, config, index)
        tokenizer = load_tokenizer(out, manifest)
        model = empty_model(manifest)
    else:
        _prepare_out(out, overwrite=overwrite)
        tokenizer, model = _new_model(config, index, texts, model_options or {})
        tokenizer.save(out / "tokenizer.json")
    model = model.to(device)
    backbone = "t5" if config.backbone else "scratch"
    pairs = tokenize_pairs(tokenizer, texts, rows, n_captions)
    del texts
    if config.method == "avg" and not resume:
        from gcmr.train.avg import init_voken_embeddings

        init_voken_embeddings(model, index, enabled=config.voken_embedding_init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = (len(pairs) + config.batch_size - 1) // config.batch_size
    schedule = dict(
        peak=config.lr, floor=config.min_lr,
        warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
        total_steps=config.epochs * steps_per_epoch,
        restart_steps=int(round(config.restart_epochs * steps_per_epoch)),
        restart_mult=config.restart_mult,
    )
    state: dict[str, Any] = {"epoch": 0, "global_step": 0, "best_epoch": 0, "best_metrics": {},
                             "best_score": None, "bad_epochs": 0, "history": []}
    if resume:
        model_t, opt_t, saved = load_checkpoint(out)
        try:
            model.load_state_dict(model_t)
        except RuntimeError as exc:
            raise ArtifactError(f"{out / 'checkpoint'}: weights do not match the model ({exc})") from exc
        load_optimizer(optimizer, opt_t, saved.pop("optimizer"))
        state.update(saved)
        if state["epoch"] >= config.epochs:
            note(f"{out} already finished {state['epoch']} epochs (epochs = {config.epochs}); "
                 f"raise --epochs to train further")
    _write_model_manifest(out, status="training", config=config, model=model, backbone=backbone,
                          index=index, index_path=index_path, corpus=corpus, pairs=pairs, state=state)

    val_texts, val_relevant = _validation_set(corpus, config)
    log_path = out / "train_log.jsonl"
    started = time.perf_counter()
    stop = False
    while state["epoch"] < config.epochs and not stop:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        losses, seen = _run_epoch(model, optimizer, pairs, index, tokenizer, config, schedule,
                                  state, epoch, device, show_progress)
        seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"epoch": epoch, "step": state["global_step"], **losses,
                                  "lr": lr_at(max(0, state["global_step"] - 1), **schedule),
                                  "seconds": round(seconds, 3),
                                  "pairs": seen,  # fewer than all when max_steps stops early
                                  "pairs_per_s": round(seen / max(seconds, 1e-9), 1)}
        improved = True
        if val_texts:
            metrics = validate(model, tokenizer, index.trie, val_texts, val_relevant,
                               beam=config.val_beam, device=device)
            record["val"] = metrics
            score = metrics[config.select_metric]
            improved = state["best_score"] is None or score > state["best_score"]
            if improved:
                state.update(best_score=score, best_epoch=epoch, best_metrics=metrics, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
                if config.patience and state["bad_epochs"] >= config.patience:
                    stop = True
                    record["early_stop"] = True
        else:
            state.update(best_epoch=epoch)
        if improved:
            _save_weights(out / "model.safetensors", model)
        state["epoch"] = epoch
        state["history"].append(record)
        if config.max_steps and state["global_step"] >= config.max_steps:
            stop = True
        with log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        save_checkpoint(out, model=model, optimizer=optimizer, state=state)
        if show_progress:
            _print_epoch(record, config)
    _write_model_manifest(out, status="complete", config=config, model=model, backbone=backbone,
                          index=index, index_path=index_path, corpus=corpus, pairs=pairs, state=state)
    return TrainResult(out=out, epochs_run=state["epoch"], best_epoch=state["best_epoch"],
                       best_metrics=state["best_metrics"], history=state["history"],
                       seconds=time.perf_counter() - started, num_pairs=len(pairs))


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


def _run_epoch(model, optimizer, pairs: Pairs, index, tokenizer, config: TrainConfig,
               schedule: dict, state: dict, epoch: int, device: torch.device,
               show_progress: bool) -> tuple[dict[str, float], int]:
    """One epoch; returns the mean loss parts and the number of pairs trained on."""
    from gcmr.train.losses import cart_loss

    model.train()
    # data order and dropout depend only on (seed, epoch): resuming reproduces them
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    torch.manual_seed(config.seed * 1_000_033 + epoch)
    order = torch.randperm(len(pairs), generator=generator)
    codes_all = torch.as_tensor(index.codes, dtype=torch.long)
    totals: dict[str, float] = {}
    seen = 0
    t0 = time.perf_counter()
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=len(order), info="")
        for start in range(0, len(order), config.batch_size):
            if config.max_steps and state["global_step"] >= config.max_steps:
                break
            idx = order[start:start + config.batch_size]
            ids, mask, rows = pairs.batch(idx, tokenizer.pad_id)
            codes = codes_all[rows]
            ids, mask, codes = ids.to(device), mask.to(device), codes.to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state["global_step"], **schedule)
            with _autocast(config, device):
                if config.method == "avg":
                    from gcmr.train.avg import avg_loss

                    loss, parts = avg_loss(model, ids, mask, codes, trie=index.trie,
                                           omega=config.resolved_omega, beam=config.dis_beam,
                                           dis_weight=config.dis_weight)
                else:
                    loss, parts = cart_loss(model, ids, mask, codes, omega=config.resolved_omega)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at epoch {epoch}, step "
                                  f"{state['global_step']} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state["global_step"] += 1
            n = int(rows.shape[0])
            seen += n
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value) * n
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=n, info=f"loss {parts['loss']:.3f}  {rate:,.0f} pairs/s")
    return {k: round(v / max(seen, 1), 5) for k, v in totals.items()}, seen


def _validation_set(corpus: Corpus, config: TrainConfig) -> tuple[list[str], list[np.ndarray]]:
    if not config.val_split:
        return [], []
    if config.val_split not in corpus.queries:
        note(f"{corpus.path} has no '{config.val_split}' split: no validation, the last epoch "
             f"is kept")
        return [], []
    queries = corpus.split(config.val_split)
    relevant = corpus.relevant_rows(config.val_split)
    if len(queries) > config.max_val_queries:
        pick = np.random.default_rng(config.seed).choice(len(queries), config.max_val_queries,
                                                         replace=False)
        pick.sort()
        queries = [queries[i] for i in pick]
        relevant = [relevant[i] for i in pick]
    return [q.text for q in queries], relevant


@torch.no_grad()
def validate(model, tokenizer, trie, texts: list[str], relevant: list[np.ndarray], *,
             beam: int, device: torch.device, k: int = 10) -> dict[str, float]:
    """R@1/5/10 and MRR@10 of constrained beam search on held-out queries."""
    from gcmr.search.retriever import search_rows

    was_training = model.training
    model.eval()
    _, rows = search_rows(model, tokenizer, trie, texts, k=k, beam=beam, device=device)
    model.train(was_training)
    return {key: round(v, 5) for key, v in retrieval_metrics(rows, relevant).items()}


def _save_weights(path: Path, model: torch.nn.Module) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_tensors(tmp, model.state_dict())
    os.replace(tmp, path)


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise ArtifactError(f"{out} already exists (use --resume to continue training it, "
                                f"or --overwrite to start over)")
        if not (out / "manifest.json").exists() and any(out.iterdir()):
            raise ArtifactError(f"{out} exists and is not a gcmr model directory; refusing to "
                                f"overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _check_resume(out: Path, config: TrainConfig, index) -> dict:
    manifest = read_manifest(out, fmt=MODEL_FORMAT, versions=(MODEL_VERSION,))
    old = manifest.get("train_config", {})
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RESUMABLE_CHANGES and old.get(k) != v)
    if changed:
        raise ConfigError(f"{out}: cannot resume with different settings {changed} "
                          f"(only {sorted(RESUMABLE_CHANGES)} may change)")
    if manifest.get("index", {}).get("fingerprint") != _index_fingerprint(index):
        raise ArtifactError(f"{out}: was trained on a different index; cannot resume")
    return manifest


def _index_fingerprint(index) -> str:
    import hashlib

    h = hashlib.sha256(index.corpus_fingerprint.encode())
    h.update(np.ascontiguousarray(index.codes, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def _write_model_manifest(out: Path, *, status: str, config: TrainConfig, model, backbone: str,
                          index, index_path, corpus: Corpus, pairs: Pairs, state: dict) -> None:
    write_manifest(
        out, fmt=MODEL_FORMAT, version=MODEL_VERSION,
        status=status,
        method=config.method,
        train_config=config.to_dict(),
        loss={"omega": config.resolved_omega,
              "dis_weight": config.dis_weight if config.method == "avg" else 0.0},
        backbone=backbone,
        model_config=model.config.to_dict(),
        tokenizer="tokenizer.json",
        weights="model.safetensors",
        index={"path": str(Path(index_path).resolve()), "scheme": index.config.scheme,
               "level_sizes": list(index.level_sizes), "num_items": index.num_items,
               "fingerprint": _index_fingerprint(index)},
        corpus={"path": str(corpus.path.resolve()), "fingerprint": corpus.fingerprint,
                "name": corpus.meta.name},
        data={"pairs": len(pairs), "caption_pairs": pairs.num_caption_pairs,
              "query_pairs": pairs.num_query_pairs},
        epochs_done=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metrics=state["best_metrics"],
        parameters=sum(p.numel() for p in model.parameters()),
    )


def _print_epoch(record: dict, config: TrainConfig) -> None:
    from gcmr.progress import err_console

    val = record.get("val")
    msg = (f"epoch {record['epoch']}: loss {record.get('loss', float('nan')):.4f}  "
           f"{record['pairs_per_s']:,.0f} pairs/s  {record['seconds']:.1f}s")
    if val:
        msg += "  val " + "  ".join(f"{k} {v:.4f}" for k, v in val.items())
    err_console.print(msg, highlight=False)
