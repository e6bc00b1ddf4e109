"""A short fine-tune after a live add (DSI++-style continual indexing).

Items added with :mod:`gcmr.search.updates` are retrievable at once through their prefixes
(the hybrid rerank finds them by their item vectors), but the decoder has never seen their
identifiers. :func:`finetune_items` trains the model for a few minutes (or steps) on the new
items' captions (-> their identifiers), mixed with replayed old pairs (captions of the items
present before, and the training corpus's train queries), so the old items are not forgotten:
DSI++ (Mehta et al., 2023) shows that indexing new documents alone makes a DSI model forget
the old ones, and that replaying old pairs prevents most of it.

Each epoch of the shared training loop (:func:`gcmr.train.loop.fit`) is every new pair plus
``replay`` times as many old pairs, drawn afresh (seeded) for every epoch from a pool of at
most ``max_replay_pool`` old pairs. The learning rate is constant (``lr``, default half the
training run's peak), so the run can stop at any epoch boundary when the time budget is
spent. The loss is the training run's (:func:`gcmr.train.trainer.cart_or_avg_loss`: CART
or AVG, with the query head's InfoNCE when the model has one). The fine-tuned weights
become the model's next version (:func:`gcmr.search.updates.replace_weights`: atomic).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.errors import ConfigError
from gcmr.search.updates import UpdateResult, replace_weights
from gcmr.train.config import TrainConfig


@dataclass
class FinetuneConfig:
    """How long and how hard to fine-tune on new items."""

    minutes: float = 0.0  # wall-clock budget (0 = none; then ``steps`` must be set)
    steps: int = 0  # optimizer steps (0 = none; then ``minutes`` must be set)
    replay: float = 1.0  # old pairs per new pair in every epoch
    lr: float = 0.0  # 0 = half the training run's peak learning rate
    batch_size: int = 0  # 0 = the training run's
    max_replay_pool: int = 100_000  # old pairs sampled once, then drawn from per epoch
    seed: int = 0

    def validate(self) -> None:
        if self.minutes < 0 or self.steps < 0 or not math.isfinite(self.minutes):
            raise ConfigError("fine-tune minutes and steps must be >= 0")
        if not self.minutes and not self.steps:
            raise ConfigError("a fine-tune needs a budget: minutes > 0 or steps > 0")
        if self.replay < 0 or not math.isfinite(self.replay):
            raise ConfigError(f"fine-tune replay must be >= 0, got {self.replay}")
        if self.lr < 0 or self.batch_size < 0 or self.max_replay_pool < 0:
            raise ConfigError("fine-tune lr, batch_size and max_replay_pool must be >= 0")


def _old_pairs(retriever: Any, new_rows: set[int], config: TrainConfig,
               rng: np.random.Generator, limit: int) -> tuple[list[str], np.ndarray]:
    """Texts and rows of the replayed pairs: captions of the live items present before
    (training corpus and earlier additions) and the training corpus's train queries."""
    from gcmr.corpus import load_corpus
    from gcmr.train.data import training_texts

    live = np.zeros(retriever.index.num_items, dtype=bool)
    live[retriever.index.live_rows()] = True
    live[list(new_rows)] = False
    texts: list[str] = []
    rows: list[int] = []
    base = Path(retriever.corpus_path)
    if (base / "items.jsonl").is_file():
        corpus = load_corpus(base)
        t, r, _ = training_texts(corpus, use_captions=config.use_captions,
                                 use_train_queries=config.use_train_queries,
                                 split=config.train_split)
        keep = live[r]
        texts += [x for x, k in zip(t, keep) if k]
        rows += r[keep].tolist()
    first = retriever.index.num_items - len(retriever.additions)
    for a, caps in enumerate(retriever.additions.captions):
        if live[first + a]:
            texts += caps
            rows += [first + a] * len(caps)
    if len(texts) > limit:
        pick = np.sort(rng.choice(len(texts), limit, replace=False))
        texts = [texts[i] for i in pick]
        rows = [rows[i] for i in pick]
    return texts, np.asarray(rows, dtype=np.int64)


def finetune_items(retriever: Any, item_ids: list[str], config: FinetuneConfig, *,
                   save: bool = True, show_progress: bool = False) -> UpdateResult:
    """Fine-tune ``retriever``'s model on the captions of ``item_ids`` (items already added)
    mixed with replayed old pairs, then swap the weights in as a new version (``save``: in
    the model directory too, atomically)."""
    from gcmr.train.data import tokenize_pairs
    from gcmr.train.loop import fit, new_state
    from gcmr.train.trainer import attach_feature_cache, cart_or_avg_loss, param_groups

    config.validate()
    started = time.perf_counter()
    with retriever.update_lock:
        live = retriever.row_of_id()
        unknown = [i for i in item_ids if i not in live]
        if unknown:
            raise ConfigError(f"cannot fine-tune on unknown item ids {unknown[:5]}")
        first = retriever.index.num_items - len(retriever.additions)
        new_rows = [live[i] for i in item_ids]
        texts: list[str] = []
        rows: list[int] = []
        for row in new_rows:
            caps = retriever.additions.captions[row - first] if row >= first else []
            texts += caps
            rows += [row] * len(caps)
        if not texts:
            raise ConfigError("the items to fine-tune on have no captions")
        train_config = TrainConfig.from_dict(retriever.manifest.get("train_config", {}),
                                             where=f"{retriever.path}: train_config")
        rng = np.random.default_rng(config.seed)
        old_texts, old_rows = _old_pairs(retriever, set(new_rows), train_config, rng,
                                         config.max_replay_pool)
        n_new = len(texts)
        n_replay = min(len(old_texts), round(config.replay * n_new))
        lr = config.lr or train_config.lr / 2
        batch = config.batch_size or train_config.batch_size
        # one epoch per fit() call: the budget (steps, minutes) is checked between epochs
        # (min_steps 0: the fine-tune's budget is its own --finetune-steps / minutes)
        ft = train_config.replace(lr=lr, min_lr=lr, warmup_epochs=0.0, restart_epochs=0.0,
                                  min_steps=0, epochs=1, batch_size=batch, max_steps=config.steps,
                                  val_split=None, patience=0, seed=config.seed)
        device = retriever.device
        tokenizer = retriever.tokenizer
        pairs = tokenize_pairs(tokenizer, texts + old_texts,
                               np.concatenate([np.asarray(rows, dtype=np.int64), old_rows]),
                               n_new)
        model = _copy_model(retriever)
        attach_feature_cache(model, pairs, tokenizer, ft, show_progress=show_progress)
        shim = _CorpusView(retriever)
        if ft.resolved_dense_weight > 0 and shim.embeddings is None:
            raise ConfigError(f"{retriever.corpus_path}: the corpus's embeddings are needed "
                              f"to fine-tune the query head (pass --corpus)")
        inner = cart_or_avg_loss(ft, pairs, retriever.index, tokenizer, device, corpus=shim)
        replay = {"pick": rng.choice(len(old_texts), n_replay, replace=False)
                  if n_replay else np.zeros(0, dtype=np.int64)}

        def loss_fn(m: Any, idx: torch.Tensor):
            idx = idx.numpy()
            mapped = np.where(idx < n_new, idx,
                              n_new + replay["pick"][np.maximum(idx - n_new, 0)]
                              if n_replay else idx)
            return inner(m, torch.from_numpy(mapped.astype(np.int64)))

        def next_epoch(_state: dict[str, Any]) -> None:  # fresh replayed pairs per epoch
            if n_replay:
                replay["pick"] = rng.choice(len(old_texts), n_replay, replace=False)

        optimizer = torch.optim.AdamW(param_groups(model, ft), lr=lr,
                                      weight_decay=ft.weight_decay)
        state = new_state()
        deadline = started + config.minutes * 60 if config.minutes else None
        with tempfile.TemporaryDirectory(prefix="gcmr-finetune-") as work:
            while True:
                state = fit(model, optimizer, loss_fn, num_pairs=n_new + n_replay,
                            config=ft, workdir=Path(work), device=device, state=state,
                            on_epoch=next_epoch, label="fine-tune",
                            show_progress=show_progress)
                if config.steps and state["global_step"] >= config.steps:
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                ft = ft.replace(epochs=state["epoch"] + 1)
        encoder = getattr(model, "query_encoder", None)
        if hasattr(encoder, "cache"):
            encoder.cache = None
        history = state["history"]
        details = {"steps": state["global_step"], "epochs": state["epoch"],
                   "new_pairs": n_new, "replayed_pairs_per_epoch": n_replay,
                   "lr": lr, "batch_size": batch, "items": len(item_ids),
                   "train_seconds": round(time.perf_counter() - started, 2),
                   "loss_first": history[0].get("loss") if history else None,
                   "loss_last": history[-1].get("loss") if history else None}
        return replace_weights(retriever, model.eval(), details=details, save=save)


def _copy_model(retriever: Any) -> Any:
    """A trainable copy of the retriever's model (the retriever keeps serving the old one
    until the fine-tuned weights are swapped in)."""
    from gcmr.model.factory import empty_model

    model = empty_model(retriever.manifest)
    model.load_state_dict(retriever.model.state_dict())
    return model.to(retriever.device)


class _CorpusView:
    """What the training loss reads of a corpus (the item embeddings of every row: the
    training corpus's, then the additions)."""

    def __init__(self, retriever: Any) -> None:
        self.embeddings = retriever.item_matrix()  # None when the corpus is gone
        self.path = retriever.corpus_path
