"""``gcmr train-dense``: the dual-tower baseline, the fair peer of the generative retriever.

Same supervision, same text capacity, scoring instead of generating:

- the same training pairs (:func:`gcmr.train.data.training_texts`: item captions + train
  queries) and the same query tokenizer (:class:`gcmr.model.QueryTokenizer`, trained with the
  same :class:`~gcmr.train.TrainConfig` vocabulary settings);
- the same query encoder architecture: token embedding scaled by sqrt(d) + learned positions,
  the model's :class:`gcmr.model.layers.EncoderLayer` stack (pre-norm), a LayerNorm after
  the last layer, with the same initialization (Xavier-uniform from a seeded generator);
- then pooling (mean over tokens, or the first token) and a learned ``Linear(d, D)`` into
  the item embedding space. Item embeddings are frozen and L2-normalized: the item tower is
  the corpus's multimodal encoder itself, so the corpus's embeddings can be searched directly
  by exact or faiss backends (:mod:`gcmr.search.dense`).

Loss: symmetric InfoNCE with in-batch negatives and a learnable temperature (CLIP):
query -> item cross-entropy over the batch's distinct items, plus item -> query with every
query of that item as a positive (a batch may hold several captions/queries of one item, which
must not be each other's negatives). AdamW with the CART schedule (:func:`lr_at`).

The model directory (format ``gcmr-dense`` v1) is written atomically when training ends:
``manifest.json`` (configs, corpus path + fingerprint, history), ``model.safetensors`` (the
best validation epoch, or the last without validation), ``tokenizer.json``,
``train_log.jsonl`` and, with ``save_index``, ``faiss.index``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError
from gcmr.model.config import ModelConfig
from gcmr.model.layers import EncoderLayer
from gcmr.train.config import TrainConfig

POOLINGS = ("mean", "first")
# the encoder defaults ARE the generative model's (same text capacity unless told otherwise)
_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


@dataclass
class DenseTowerConfig(JsonConfig):
    """Shape of the query tower (saved in the dense model manifest). The encoder fields mean
    what they mean in :class:`gcmr.model.ModelConfig` and default to its defaults."""

    vocab_size: int
    item_dim: int  # D of the corpus embeddings: the tower projects into that space
    d_model: int = _MODEL_DEFAULTS["d_model"]
    n_heads: int = _MODEL_DEFAULTS["n_heads"]
    d_ff: int = _MODEL_DEFAULTS["d_ff"]
    encoder_layers: int = _MODEL_DEFAULTS["encoder_layers"]
    dropout: float = _MODEL_DEFAULTS["dropout"]
    max_query_length: int = _MODEL_DEFAULTS["max_query_length"]
    pooling: str = "mean"  # mean | first
    temperature: float = 0.07  # initial InfoNCE temperature (CLIP's init)
    learn_temperature: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "item_dim", "d_model", "n_heads", "d_ff", "encoder_layers",
                     "max_query_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dense tower option {name} must be >= 1, got "
                                  f"{getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads "
                              f"({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if not 0.0 < self.temperature <= 10.0:
            raise ConfigError(f"temperature must be in (0, 10], got {self.temperature}")


class DenseTower(nn.Module):
    """Query tower: tokens -> encoder (the retriever's encoder architecture) -> pooled ->
    projected into the item space -> L2-normalized [B, D]."""

    max_logit_scale = 100.0  # CLIP clamps exp(log_scale) at 100

    def __init__(self, config: DenseTowerConfig) -> None:
        super().__init__()
        self.config = config
        d, h, f, p = config.d_model, config.n_heads, config.d_ff, config.dropout
        self.embed_scale = math.sqrt(d)
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.max_query_length, d)
        self.encoder = nn.ModuleList(EncoderLayer(d, h, f, p) for _ in range(config.encoder_layers))
        self.final_norm = nn.LayerNorm(d)
        self.projection = nn.Linear(d, config.item_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)),
                                      requires_grad=config.learn_temperature)
        self.drop = nn.Dropout(p)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases from a generator seeded with ``config.seed``
        (as :class:`~gcmr.model.GenerativeRetrievalModel` initializes its encoder)."""
        gen = torch.Generator().manual_seed(self.config.seed)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.xavier_uniform_(module.weight, generator=gen)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        self.log_scale.fill_(math.log(1.0 / self.config.temperature))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_query_length:
            raise ConfigError(f"queries have {t} tokens, the tower takes at most "
                              f"{self.config.max_query_length}")
        x = self.token_embedding(input_ids) * self.embed_scale
        x = self.drop(x + self.position_embedding.weight[:t])
        keep = attention_mask.to(torch.bool)
        mask = keep[:, None, None, :]
        for layer in self.encoder:
            x = layer(x, mask)
        x = self.final_norm(x)
        if self.config.pooling == "first":
            pooled = x[:, 0]
        else:
            w = keep.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        return F.normalize(self.projection(pooled).float(), dim=-1)


def info_nce(queries: torch.Tensor, items: torch.Tensor, rows: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives.

    ``queries`` [B, D] and ``items`` [B, D] normalized (``items[i]`` is the item of pair ``i``),
    ``rows`` [B] item rows. Columns are the batch's distinct items; query -> item is a
    cross-entropy over them, item -> query treats every query of the item as a positive
    (multi-positive log-sum-exp). The loss is the mean of the two directions.
    """
    uniq, inverse = torch.unique(rows, return_inverse=True)
    first = torch.zeros(len(uniq), dtype=torch.long, device=rows.device).scatter_(
        0, inverse, torch.arange(len(rows), device=rows.device))  # one pair index per item
    logits = logit_scale * queries @ items[first].T  # [B, U]
    q2i = F.cross_entropy(logits, inverse)
    lt = logits.T  # [U, B]
    pos = inverse.unsqueeze(0) == torch.arange(len(uniq), device=rows.device).unsqueeze(1)
    i2q = (torch.logsumexp(lt, dim=1) - torch.logsumexp(lt.masked_fill(~pos, float("-inf")),
                                                          dim=1)).mean()
    return 0.5 * (q2i + i2q)


def _item_batch(items: Any, rows: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(items[rows.numpy()], dtype=np.float32))
    return F.normalize(x, dim=-1)


def resolve_source(source: str | Path, corpus_path: str | Path | None = None):
    """``source`` is a corpus directory or an index directory (its corpus is used, checked by
    fingerprint). Returns ``(corpus, index_path or None)``."""
    from gcmr.artifacts import read_manifest
    from gcmr.corpus import load_corpus

    source = Path(source)
    if (source / "corpus.json").is_file():
        return load_corpus(corpus_path or source), None
    manifest = read_manifest(source, fmt="gcmr-index")
    path = Path(corpus_path or manifest.get("corpus_path", ""))
    corpus = load_corpus(path)
    if corpus.fingerprint != manifest.get("corpus_fingerprint"):
        raise ArtifactError(f"index {source} was built from a corpus with fingerprint "
                            f"{manifest.get('corpus_fingerprint')}, but {path} has "
                            f"{corpus.fingerprint}")
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
    overwrite: bool = False,
    show_progress: bool = True,
):
    """Train the dual-tower baseline on a corpus (or an index's corpus) and write ``out``.

    ``config`` is the generative model's :class:`TrainConfig` (epochs, batch size, learning
    rate schedule, data, tokenizer, validation, seed): one budget for both. Fields that only
    mean something for the generative model (omega, method, beams) are ignored.
    ``tower_options`` are :class:`DenseTowerConfig` fields; ``search`` a
    :class:`~gcmr.search.dense.DenseSearchConfig` saved as the model's default backend.
    Returns a :class:`gcmr.train.TrainResult`.
    """
    from gcmr.artifacts import atomic_dir, save_tensors, write_manifest
    from gcmr.model import QueryTokenizer
    from gcmr.progress import err_console, progress
    from gcmr.search.dense import (
        DENSE_FORMAT,
        DENSE_VERSION,
        FAISS_FILE,
        DenseSearchConfig,
        ExactBackend,
        make_backend,
    )
    from gcmr.train.data import tokenize_pairs, training_texts
    from gcmr.train.schedule import lr_at
    from gcmr.train.trainer import TrainResult, _validation_set, resolve_device

    config = config or TrainConfig()
    search = search or DenseSearchConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists (use --overwrite to replace it)")
    corpus, index_path = resolve_source(source, corpus_path)
    device = resolve_device(config.device)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    started = time.perf_counter()
    texts, rows, n_captions = training_texts(
        corpus, use_captions=config.use_captions, use_train_queries=config.use_train_queries,
        split=config.train_split)
    tokenizer = QueryTokenizer.train(texts, vocab_size=config.vocab_size,
                                     lowercase=config.lowercase,
                                     max_length=config.max_query_length)
    pairs = tokenize_pairs(tokenizer, texts, rows, n_captions)
    del texts
    options = dict(tower_options or {})
    options.setdefault("max_query_length", config.max_query_length)
    options.setdefault("seed", config.seed)
    tower_config = DenseTowerConfig(vocab_size=tokenizer.vocab_size, item_dim=corpus.dim,
                                    **options)
    torch.manual_seed(config.seed)
    tower = DenseTower(tower_config).to(device)
    decay = [p for n, p in tower.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in tower.named_parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = (len(pairs) + config.batch_size - 1) // config.batch_size
    schedule = dict(peak=config.lr, floor=config.min_lr,
                    warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
                    total_steps=config.epochs * steps_per_epoch,
                    restart_steps=int(round(config.restart_epochs * steps_per_epoch)),
                    restart_mult=config.restart_mult)
    val_texts, val_relevant = _validation_set(corpus, config)
    val_backend = ExactBackend(corpus.embeddings, DenseSearchConfig()) if val_texts else None
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "metrics": {}, "score": None, "state": None, "bad": 0}
    step = 0
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tokenizer.save(tmp / "tokenizer.json")
        for epoch in range(1, config.epochs + 1):
            if config.max_steps and step >= config.max_steps:
                break
            t0 = time.perf_counter()
            tower.train()
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            torch.manual_seed(config.seed * 1_000_033 + epoch)
            order = torch.randperm(len(pairs), generator=gen)
            total, seen = 0.0, 0
            with progress(disable=not show_progress) as bar:
                task = bar.add_task(f"dense epoch {epoch}/{config.epochs}", total=len(order),
                                    info="")
                for start in range(0, len(order), config.batch_size):
                    if config.max_steps and step >= config.max_steps:
                        break
                    idx = order[start:start + config.batch_size]
                    ids, mask, batch_rows = pairs.batch(idx, tokenizer.pad_id)
                    items = _item_batch(corpus.embeddings, batch_rows).to(device)
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(step, **schedule)
                    q = tower(ids.to(device), mask.to(device))
                    loss = info_nce(q, items, batch_rows.to(device), tower.logit_scale)
                    if not torch.isfinite(loss):
                        raise ConfigError(f"dense training diverged at epoch {epoch}, step "
                                          f"{step} (loss {loss.item()}); lower --lr")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(tower.parameters(), config.grad_clip)
                    optimizer.step()
                    step += 1
                    n = int(batch_rows.shape[0])
                    total += float(loss.detach()) * n
                    seen += n
                    bar.update(task, advance=n, info=f"loss {float(loss.detach()):.3f}")
            seconds = time.perf_counter() - t0
            record: dict[str, Any] = {
                "epoch": epoch, "step": step, "loss": round(total / max(seen, 1), 5),
                "temperature": round(1.0 / float(tower.logit_scale.detach()), 5),
                "lr": lr_at(max(0, step - 1), **schedule), "seconds": round(seconds, 3),
                "pairs_per_s": round(seen / max(seconds, 1e-9), 1)}
            improved = True
            if val_backend is not None:
                metrics = _validate(tower, tokenizer, val_backend, val_texts, val_relevant, device)
                record["val"] = metrics
                score = metrics[config.select_metric]
                improved = best["score"] is None or score > best["score"]
                if not improved:
                    best["bad"] += 1
            if improved:
                best.update(epoch=epoch, metrics=record.get("val", {}),
                            score=record.get("val", {}).get(config.select_metric), bad=0,
                            state={k: v.detach().cpu().clone()
                                   for k, v in tower.state_dict().items()})
            history.append(record)
            with (tmp / "train_log.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            msg = (f"dense epoch {epoch}: loss {record['loss']:.4f}  temperature "
                   f"{record['temperature']:.4f}  {record['pairs_per_s']:,.0f} pairs/s")
            if "val" in record:
                msg += "  val " + "  ".join(f"{k} {v:.4f}" for k, v in record["val"].items())
            if show_progress:
                err_console.print(msg, highlight=False)
            if config.patience and best["bad"] >= config.patience:
                record["early_stop"] = True
                break
        if best["state"] is None:  # max_steps = 0 steps: keep the initial weights
            best["state"] = {k: v.detach().cpu() for k, v in tower.state_dict().items()}
        save_tensors(tmp / "model.safetensors", best["state"])
        saved_index = None
        if save_index:
            if search.factory is None:
                raise ConfigError("--save-index needs a faiss backend (e.g. --backend "
                                  "faiss:HNSW32); exact search has no index to save")
            backend = make_backend(corpus.embeddings, search)
            from gcmr.search.faiss_index import save_faiss_index

            save_faiss_index(backend.index, tmp / FAISS_FILE)
            saved_index = {"backend": search.backend, "file": FAISS_FILE,
                           "build_seconds": round(backend.build_seconds, 3)}
        write_manifest(
            tmp, fmt=DENSE_FORMAT, version=DENSE_VERSION, status="complete",
            train_config=config.to_dict(), tower_config=tower_config.to_dict(),
            search=search.to_dict(), tokenizer="tokenizer.json", weights="model.safetensors",
            corpus={"path": str(corpus.path.resolve()), "fingerprint": corpus.fingerprint,
                    "name": corpus.meta.name, "num_items": len(corpus), "dim": corpus.dim},
            source_index=str(Path(index_path).resolve()) if index_path else None,
            data={"pairs": len(pairs), "caption_pairs": pairs.num_caption_pairs,
                  "query_pairs": pairs.num_query_pairs},
            parameters=sum(p.numel() for p in tower.parameters()),
            epochs_done=len(history), steps=step, best_epoch=best["epoch"],
            best_metrics=best["metrics"], saved_index=saved_index,
            seconds=round(time.perf_counter() - started, 3),
        )
    return TrainResult(out=out, epochs_run=len(history), best_epoch=best["epoch"],
                       best_metrics=best["metrics"], history=history,
                       seconds=time.perf_counter() - started, num_pairs=len(pairs))


@torch.no_grad()
def _validate(tower: DenseTower, tokenizer, backend, texts: list[str],
              relevant: list[np.ndarray], device: torch.device, k: int = 10,
              batch_size: int = 256) -> dict[str, float]:
    """R@1/5/10 and MRR@10 of exact search with the current tower on held-out queries."""
    from gcmr.evaluate.metrics import retrieval_metrics

    was_training = tower.training
    tower.eval()
    ranked = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer.encode_batch(texts[start:start + batch_size])
        q = tower(ids.to(device), mask.to(device)).cpu().numpy()
        ranked.append(backend.search(q, k)[1])
    tower.train(was_training)
    rows = np.concatenate(ranked) if ranked else np.zeros((0, k), dtype=np.int64)
    return {key: round(v, 5) for key, v in retrieval_metrics(rows, relevant).items()}
