"""Training configuration (saved in the model manifest; round-trips through JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError


@dataclass
class TrainConfig(JsonConfig):
    """Options of ``gcmr train``. Defaults follow CART appendix C where it gives them."""

    method: str = "cart"  # cart | avg (AVG adds the discriminative loss)
    epochs: int = 20
    batch_size: int = 256
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
    select_metric: str = "MRR@10"  # R@1 | R@5 | R@10 | MRR@10
    patience: int = 0  # stop after this many epochs without improvement (0 = never)
    max_val_queries: int = 1000  # validation subsample (seeded) per epoch
    val_beam: int = 10
    vocab_size: int = 8000  # query tokenizer vocabulary
    # bpe: deterministic training; wordpiece: the HF trainer assigns "##" pieces in hash-map
    # order, so two runs on the same texts can differ (huggingface/tokenizers#1794)
    tokenizer: str = "bpe"
    lowercase: bool = True
    max_query_length: int = 32
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    amp: str = "auto"  # auto (bf16 on CUDA, off elsewhere) | off | bf16 | fp16
    num_threads: int = 0  # torch CPU threads (0 = torch default)
    max_steps: int = 0  # stop after this many optimizer steps in all (0 = no limit; for tests)
    # AVG (method = "avg"): discriminative loss over beam-searched candidates (AVG eqs. 7-10)
    dis_beam: int = 10
    dis_weight: float = 1.0
    voken_embedding_init: bool = True
    # "" = the from-scratch CART encoder-decoder; "t5:PATH_OR_NAME" = a pretrained T5
    # (transformers) with the identifier tokens added to its vocabulary (AVG table 6)
    backbone: str = ""

    def __post_init__(self) -> None:
        if self.method not in ("cart", "avg"):
            raise ConfigError(f"method must be 'cart' or 'avg', got {self.method!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.omega is not None and self.omega < 0:
            raise ConfigError(f"omega must be >= 0, got {self.omega}")
        if self.dis_beam < 1:
            raise ConfigError(f"dis_beam must be >= 1, got {self.dis_beam}")
        if self.dis_weight < 0:
            raise ConfigError(f"dis_weight must be >= 0, got {self.dis_weight}")
        from gcmr.model.factory import parse_backbone

        parse_backbone(self.backbone)
        if self.select_metric not in ("R@1", "R@5", "R@10", "MRR@10"):
            raise ConfigError(f"select_metric must be R@1, R@5, R@10 or MRR@10, "
                              f"got {self.select_metric!r}")
        if not (self.use_captions or self.use_train_queries):
            raise ConfigError("use_captions and use_train_queries are both off: no training data")
        if self.tokenizer not in ("bpe", "wordpiece"):
            raise ConfigError(f"tokenizer must be 'bpe' or 'wordpiece', got {self.tokenizer!r}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")

    @property
    def resolved_omega(self) -> float:
        """omega, or the method's default when it is None (CART 0.15, AVG 0)."""
        if self.omega is not None:
            return self.omega
        return 0.15 if self.method == "cart" else 0.0
