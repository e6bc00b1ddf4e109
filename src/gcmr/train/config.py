"""Training configuration (saved in the model manifest; round-trips through JSON), and the
model + training presets (``gcmr train --preset cpu``).

Torch-free (the CLI reads the defaults for its help texts without loading torch). A field
whose values are a fixed set names them in ``metadata["choices"]``; the CLI offers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcmr.config import PRESETS_DIR, JsonConfig, preset_path
from gcmr.errors import ConfigError

# TrainConfig.min_steps when not given: a 240-item synthetic world with 480 captions (2 steps
# per epoch at batch 256) reached hybrid R@1 0.025 in the CPU preset's 4 epochs (8 steps), 0.825
# in 120 steps, 0.867 with this floor and 0.89 in 400 (a by-hand check of stop 20, not yet a
# committed benchmark); the 5k world (472 steps) and the demo are above the floor
DEFAULT_MIN_STEPS = 200
METHODS = ("cart", "avg")
SELECT_METRICS = ("R@1", "R@5", "R@10", "MRR@10")
TOKENIZERS = ("bpe", "wordpiece")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig(JsonConfig):
    """Options of ``gcmr train``. Defaults follow CART appendix C where it gives them."""

    # cart | avg (AVG adds the discriminative loss)
    method: str = field(default="cart", metadata={"choices": METHODS})
    epochs: int = 20
    # pairs per micro-batch: the global batch of all ranks under torchrun (each rank computes
    # its slice), so the same command trains the same model on any number of GPUs
    batch_size: int = 256
    # micro-batches per optimizer step: a step sees batch_size * grad_accum pairs (exactly a
    # batch of that size for per-pair losses; InfoNCE's in-batch negatives stay per micro-batch)
    grad_accum: int = 1
    lr: float = 1e-3  # peak learning rate after warm-up
    min_lr: float = 1e-5  # floor of the cosine annealing
    warmup_epochs: float = 1.0  # linear warm-up to the peak over the first epochs
    restart_epochs: float = 0.0  # cosine annealing period T_0 in epochs (0 = one cycle to the end)
    restart_mult: float = 2.0  # each restart period is this many times longer (SGDR T_mult)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # weight of the R-Drop consistency loss (CART eq. 8); None = the method's default:
    # 0.15 for CART (paper appendix C), 0 for AVG (the AVG paper has no consistency loss)
    omega: float | None = None
    use_captions: bool = True  # train on item captions (pseudo-queries, caption enhancement)
    use_train_queries: bool = True  # train on queries/train.jsonl
    train_split: str = "train"
    val_split: str | None = "val"  # None disables validation / model selection
    select_metric: str = field(default="MRR@10", metadata={"choices": SELECT_METRICS})
    patience: int = 0  # stop after this many epochs without improvement (0 = never)
    max_val_queries: int = 1000  # validation subsample (seeded) per epoch
    val_beam: int = 10
    vocab_size: int = 8000  # query tokenizer vocabulary
    # bpe: deterministic training; wordpiece: the HF trainer assigns "##" pieces in hash-map
    # order, so two runs on the same texts can differ (huggingface/tokenizers#1794)
    tokenizer: str = field(default="bpe", metadata={"choices": TOKENIZERS})
    lowercase: bool = True
    max_query_length: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    # auto (bf16 on CUDA, off elsewhere) | off | bf16 | fp16
    amp: str = field(default="auto", metadata={"choices": AMP_MODES})
    num_threads: int = 0  # torch CPU threads (0 = torch default)
    max_steps: int = 0  # stop after this many optimizer steps in all (0 = no limit; for tests)
    # a floor on the budget in optimizer steps: when epochs x steps per epoch falls short, every
    # epoch passes over the pairs several times (gcmr.train.loop.passes_per_epoch), so a small
    # corpus is not starved (478 captions at batch 256 are 2 steps per epoch: the CPU preset's
    # 4 epochs would be 8 steps). The epoch count, validation and selection are unchanged.
    # None = DEFAULT_MIN_STEPS; 0 = the epochs alone
    min_steps: int | None = None
    # weight of the query-vector head's InfoNCE loss (joint training for hybrid search: beam
    # candidates reranked by the query vector's cosine to the item embeddings); 0 = no head,
    # pure generation as in the papers; None = the default: 1 for CART with the from-scratch
    # model (measured: hybrid R@1 0.83 vs 0.54 for the same model's pure generation on the
    # demo world), 0 for AVG and the T5 backbone
    dense_weight: float | None = None
    # AVG (method = "avg"): discriminative loss over beam-searched candidates (AVG eqs. 7-10)
    dis_beam: int = 10
    dis_weight: float = 1.0
    # L_dis runs in the last dis_epochs epochs only: AVG trains it as a short second stage
    # after L_gen (5 epochs after 100); a value >= epochs applies it in every epoch. The
    # beam search it needs makes an L_dis step ~4x an L_gen step on a CPU. 2 of 4 epochs:
    # val R@1 0.238 vs 0.192 for 1 on the 5k world (benchmarks/results/avg)
    dis_epochs: int = 2
    voken_embedding_init: bool = True
    # "" = the from-scratch CART encoder-decoder; "t5:PATH_OR_NAME" = a pretrained T5
    # (transformers) with the identifier tokens added to its vocabulary (AVG table 6)
    backbone: str = ""
    # pretrained query encoder in place of the from-scratch one (gcmr.model.pretrained):
    # "" = from scratch (CART); "minilm" = the offline all-MiniLM-L6-v2; or a transformers /
    # sentence-transformers model directory. Frozen by default (features cached once per
    # training text under feature_cache); finetune_encoder trains it at encoder_lr
    query_encoder: str = ""
    finetune_encoder: bool = False
    encoder_lr: float = 5e-5
    feature_cache: str = ""  # cache root ("" = $GCMR_CACHE_DIR or ~/.cache/gcmr)

    def __post_init__(self) -> None:
        if self.query_encoder and self.backbone:
            raise ConfigError("query_encoder and backbone are exclusive: a T5 backbone brings "
                              "its own pretrained encoder")
        if not self.encoder_lr > 0:
            raise ConfigError(f"encoder_lr must be > 0, got {self.encoder_lr}")
        if self.finetune_encoder and not self.query_encoder:
            raise ConfigError("finetune_encoder needs a pretrained query_encoder")
        if self.method not in METHODS:
            raise ConfigError(f"method must be 'cart' or 'avg', got {self.method!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_steps is not None and self.min_steps < 0:
            raise ConfigError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.grad_accum < 1:
            raise ConfigError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.omega is not None and self.omega < 0:
            raise ConfigError(f"omega must be >= 0, got {self.omega}")
        if self.dis_beam < 1:
            raise ConfigError(f"dis_beam must be >= 1, got {self.dis_beam}")
        if self.dense_weight is not None and self.dense_weight < 0:
            raise ConfigError(f"dense_weight must be >= 0, got {self.dense_weight}")
        if self.dense_weight and self.backbone:
            raise ConfigError("dense_weight > 0 needs the from-scratch model (the T5 backbone "
                              "has no query-vector head)")
        if self.dis_weight < 0:
            raise ConfigError(f"dis_weight must be >= 0, got {self.dis_weight}")
        if self.dis_epochs < 1:
            raise ConfigError(f"dis_epochs must be >= 1, got {self.dis_epochs}")
        from gcmr.model.factory import parse_backbone

        parse_backbone(self.backbone)
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric must be R@1, R@5, R@10 or MRR@10, "
                              f"got {self.select_metric!r}")
        if not (self.use_captions or self.use_train_queries):
            raise ConfigError("use_captions and use_train_queries are both off: no training data")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"tokenizer must be 'bpe' or 'wordpiece', got {self.tokenizer!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")

    @property
    def resolved_dense_weight(self) -> float:
        """dense_weight, or the default when it is None: 1 for CART on the from-scratch model
        (hybrid search), 0 for AVG and the T5 backbone (pure generation, as in the papers)."""
        if self.dense_weight is not None:
            return self.dense_weight
        return 1.0 if self.method == "cart" and not self.backbone else 0.0

    @property
    def resolved_min_steps(self) -> int:
        """min_steps, or :data:`DEFAULT_MIN_STEPS` when it is None."""
        return DEFAULT_MIN_STEPS if self.min_steps is None else self.min_steps

    @property
    def resolved_omega(self) -> float:
        """omega, or the method's default when it is None (CART 0.15, AVG 0)."""
        if self.omega is not None:
            return self.omega
        return 0.15 if self.method == "cart" else 0.0


# ModelConfig fields a preset cannot set: they come from the data (tokenizer, index, corpus)
DATA_MODEL_FIELDS = ("vocab_size", "level_sizes", "query_dim")
PRESET_KEYS = ("description", "model", "train")


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Read a model + training preset: a shipped name (``demo``, ``cpu``, ``cuda``; see
    :func:`gcmr.config.preset_names`) or a JSON file ``{"description": str, "model":
    {ModelConfig fields}, "train": {TrainConfig fields}}``.

    Returns ``{"name", "path", "description", "model", "train"}`` where ``model`` and
    ``train`` hold only the fields the file sets (values checked and coerced by the
    dataclasses), so callers can layer them: dataclass defaults < preset < ``--config`` <
    flags. Errors name the file and the field.
    """
    from gcmr.model.config import ModelConfig

    path = preset_path(name_or_path)
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the preset: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a preset is a JSON object {{description, model, train}}")
    unknown = sorted(set(data) - set(PRESET_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a preset has {list(PRESET_KEYS)}")
    if not isinstance(data.get("description"), str) or not data["description"].strip():
        raise ConfigError(f"{where}: field 'description' must be a non-empty string")
    for key in ("model", "train"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{where}: field '{key}' must be an object of "
                              f"{'ModelConfig' if key == 'model' else 'TrainConfig'} fields")
    model, train = dict(data.get("model", {})), dict(data.get("train", {}))
    fixed = sorted(set(model) & set(DATA_MODEL_FIELDS))
    if fixed:
        raise ConfigError(f"{where}: model field(s) {fixed} cannot be preset: they come from "
                          f"the data (tokenizer, index and corpus); train.vocab_size sets the "
                          f"tokenizer's vocabulary")
    checked_model = _checked(ModelConfig, {"vocab_size": 2, "level_sizes": [1], **model},
                             f"{where}: model")
    checked_train = _checked(TrainConfig, train, f"{where}: train")
    name = path.stem if path.parent == PRESETS_DIR else str(path)
    return {"name": name, "path": str(path), "description": data["description"],
            "model": {k: getattr(checked_model, k) for k in model},
            "train": {k: getattr(checked_train, k) for k in train}}


def _checked(cls: type, fields: dict[str, Any], where: str) -> Any:
    """``cls.from_dict(fields)`` with every error prefixed by ``where`` (file and section)."""
    try:
        return cls.from_dict(fields, where=where)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") \
            from None
