"""CLI flags derived from the config dataclasses: each config's flags are declared once, here.

A table maps dataclass fields to flags (name and help text). The argparse type, the default
shown in the help and the choices come from the dataclass: the field's type annotation, its
default, ``metadata["choices"]``; a ``bool`` field becomes a switch that sets the opposite of
its default (``--no-captions``). Every flag's argparse default is ``None``, so
:func:`changes_from` returns exactly the flags the user set, which override what lies below
them: dataclass defaults < preset < ``--config`` file < flags.

The config modules are torch-free (:mod:`gcmr.model.config`, :mod:`gcmr.train.config`,
:mod:`gcmr.ids.config`), so ``gcmr --help`` reads the real defaults without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcmr.cli.common import nonneg_float, nonneg_int, positive_int
from gcmr.ids.config import IndexConfig
from gcmr.model.config import DenseTowerConfig, EncoderConfig, ModelConfig
from gcmr.train.config import DEFAULT_MIN_STEPS, TrainConfig


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()  # Option.const of a flag that takes a value


@dataclass(frozen=True)
class Option:
    """One flag of a config field. ``type`` overrides the annotation's (e.g. ``positive_int``
    for an ``int`` that must be >= 1); ``const`` makes a switch that sets the field to that
    value (derived for ``bool`` fields: the opposite of the default). ``help`` may hold
    ``{default}``; otherwise ``(default X)`` is appended unless ``show_default`` is off."""

    field: str
    flag: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    const: Any = _UNSET
    show_default: bool = True
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def switch(self) -> bool:
        """A flag without a value, that sets the field to ``const``."""
        return self.const is not _UNSET


Table = Sequence[Option]


def field_defaults(cls: type) -> dict[str, Any]:
    """``field -> default`` of a dataclass (factories called; required fields left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _base_type(tp: Any) -> Any:
    """``int | None`` -> ``int``; other annotations unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def option_table(cls: type, *options: Option) -> tuple[Option, ...]:
    """Check ``options`` against ``cls`` (every field exists) and resolve the switches of its
    ``bool`` fields: the flag sets the opposite of the field's default."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    defaults = field_defaults(cls)
    out = []
    for option in options:
        if option.field not in fields:
            raise TypeError(f"{cls.__name__} has no field {option.field!r} ({option.flag})")
        if option.const is _UNSET and hints[option.field] is bool:
            option = dataclasses.replace(option, const=not defaults[option.field])
        out.append(option)
    return tuple(out)


# --------------------------------------------------------------------------- the tables

MODEL_OPTIONS: Table = option_table(
    ModelConfig,
    Option("d_model", "--d-model", "transformer width", positive_int),
    Option("n_heads", "--heads", "attention heads", positive_int),
    Option("d_ff", "--ffn", "feed-forward width", positive_int),
    Option("encoder_layers", "--encoder-layers", "encoder layers", positive_int),
    Option("decoder_layers", "--decoder-layers", "decoder layers", positive_int),
    Option("dropout", "--dropout", "dropout", nonneg_float),
    Option("fusion", "--fusion", "decoder fusion: cart (coarse + fine, CART eqs. 2-5) or none "
           "(plain cross-attention to the last encoder layer; the 'w/o fusion' ablation)"),
    Option("code_vectors", "--code-vectors",
           "item-space code vectors (least squares: an item's codes sum to its embedding) "
           "whose dot product with the query vector scores every code, so pure generation "
           "ranks like the query head: steer (the vectors are the code scores, the decoder "
           "moves the query vector per prefix), add (added to the decoder's own output "
           "layer) or none (the papers' decoder). Needs the query head; default steer for "
           "additive identifiers (gcmr index --fine-quantizer kmeans) with a query head, "
           "else none", show_default=False),
)
_ENCODER_FIELDS = frozenset(f.name for f in dataclasses.fields(EncoderConfig))
# the dense query tower: the encoder's flags (EncoderConfig's fields), then its own
ENCODER_OPTIONS: Table = tuple(o for o in MODEL_OPTIONS if o.field in _ENCODER_FIELDS)
TOWER_OPTIONS: Table = option_table(
    DenseTowerConfig,
    *ENCODER_OPTIONS,
    Option("pooling", "--pooling", "token pooling"),
    Option("temperature", "--temperature", "initial InfoNCE temperature", float),
    Option("learn_temperature", "--fixed-temperature", "do not learn the temperature"),
)

TRAIN_OPTIONS: Table = option_table(
    TrainConfig,
    Option("method", "--method", "cart (CE + R-Drop) or avg (CE + discriminative loss over "
           "beam-searched candidates)"),
    Option("epochs", "--epochs", "training epochs", positive_int),
    Option("batch_size", "--batch-size", "pairs per batch (under torchrun: the global batch, "
           "shared among the ranks)", positive_int),
    Option("grad_accum", "--grad-accum", "micro-batches of --batch-size pairs per optimizer "
           "step (a step sees batch-size x K pairs; InfoNCE negatives stay per micro-batch)",
           positive_int, metavar="K"),
    Option("lr", "--lr", "peak learning rate"),
    Option("warmup_epochs", "--warmup-epochs", "linear warm-up epochs", nonneg_float),
    Option("restart_epochs", "--restart-epochs",
           "cosine restart period in epochs (default {default} = a single cosine cycle)",
           nonneg_float),
    Option("omega", "--omega", "R-Drop weight (default 0.15 for cart, 0 for avg; 0 = off)",
           nonneg_float, show_default=False),
    Option("val_split", "--val-split", "query split for model selection"),
    Option("val_split", "--no-val", "no validation; keep the last epoch", const=None),
    Option("select_metric", "--select-metric", "validation metric that selects the epoch"),
    Option("patience", "--patience",
           "early stop after N epochs without improvement (default {default} = never)", int),
    Option("max_val_queries", "--max-val-queries", "validation queries per epoch (seeded "
           "subsample)", positive_int),
    Option("use_captions", "--no-captions",
           "do not train on item captions (ablation of caption enhancement)"),
    Option("use_train_queries", "--no-train-queries", "do not train on queries/train.jsonl"),
    Option("vocab_size", "--vocab-size", "query tokenizer vocabulary", positive_int),
    Option("max_query_length", "--max-query-length", "query tokens kept", positive_int),
    Option("dense_weight", "--dense-weight",
           "weight of the query-vector head's InfoNCE loss: > 0 trains the head that hybrid "
           "search reranks the beam's candidates with, 0 = no head (pure generation, the "
           "papers' CART / AVG); default 1 for CART, 0 for AVG and --backbone t5",
           nonneg_float, show_default=False),
    Option("dis_beam", "--dis-beam", "AVG: beam of the discriminative loss", positive_int),
    Option("dis_weight", "--dis-weight",
           "AVG: weight of the discriminative loss (default {default}; 0 = the 'w/o L_dis' "
           "ablation)", nonneg_float),
    Option("dis_epochs", "--dis-epochs",
           "AVG: the discriminative loss runs in the last N epochs only, AVG's second stage "
           "(default {default}; >= --epochs = every epoch)", positive_int),
    Option("backbone", "--backbone", "'t5:PATH_OR_NAME' = a pretrained T5 (transformers) with "
           "the identifier tokens added (AVG table 6); default: the from-scratch CART "
           "encoder-decoder"),
    Option("query_encoder", "--query-encoder",
           "pretrained query encoder instead of the from-scratch one: minilm (the offline "
           "all-MiniLM-L6-v2) or a transformers / sentence-transformers model directory; its "
           "last --encoder-layers layers feed the fusion decoder, and hybrid search may score "
           "candidates by their captions in its text space (chosen on the val split)",
           show_default=False),
    Option("finetune_encoder", "--finetune-encoder",
           "train the pretrained query encoder too (default: frozen, features cached once)"),
    Option("encoder_lr", "--encoder-lr", "peak learning rate of a fine-tuned query encoder",
           float),
    Option("feature_cache", "--feature-cache",
           "cache directory of frozen encoder features (default $GCMR_CACHE_DIR or "
           "~/.cache/gcmr)", show_default=False),
    Option("voken_embedding_init", "--no-voken-embedding",
           "AVG: random voken embeddings (ablation 'w/o voken embedding')"),
    Option("seed", "--seed", "random seed", int),
    Option("device", "--device", "auto | cpu | cuda | mps"),
    Option("num_threads", "--threads", "torch CPU threads (default {default} = torch's choice)",
           int),
    Option("max_steps", "--max-steps",
           "stop after N optimizer steps (smoke runs; default {default} = no limit)", int),
    Option("min_steps", "--min-steps",
           "train at least N optimizer steps: when --epochs single passes are fewer, each "
           f"epoch passes over the pairs several times (a small corpus; default "
           f"{DEFAULT_MIN_STEPS}; 0 = epochs alone)", nonneg_int, show_default=False),
)

INDEX_OPTIONS: Table = option_table(
    IndexConfig,
    Option("scheme", "--scheme", "identifier scheme: cart, rq, hkmeans, atomic, random, avg, "
           "or one registered by an extension"),
    Option("seed", "--seed", "random seed", int),
    Option("num_clusters", "--clusters",
           "coarse K-Means clusters K (default {default}; 0 = from the number of items, cart)",
           int),
    Option("codebook_size", "--codebook-size",
           "vectors per RQ codebook (default {default}; 0 = from the number of items, cart)",
           int),
    Option("num_fine_levels", "--levels",
           "fine levels M (default 3 for cart with --fine-quantizer kmeans, the default; "
           "2 otherwise, CART's; rq/hkmeans/random use M + 1 levels)",
           positive_int, show_default=False),
    Option("epochs", "--epochs", "RQ-VAE epochs", positive_int),
    Option("max_steps", "--max-steps", "RQ-VAE optimizer step cap (default {default}; 0 = none)",
           int),
    Option("max_fit_items", "--max-fit-items",
           "fit on a seeded subsample of at most this many items", positive_int),
    Option("hkmeans_branching", "--branching",
           "branching factor b of the tree (default {default} = --clusters)", int),
    Option("random_code_size", "--random-code-size",
           "codes per position (default {default} = --codebook-size)", int),
    Option("voken_length", "--vokens", "voken length M (default {default}, AVG table 5)",
           positive_int),
    Option("voken_codebook_size", "--voken-codebook-size",
           "voken codebook entries N (default {default} = from the number of items: "
           "sqrt N as a power of two in [16, 1024], 64 for 5k items; AVG table 4 uses "
           "1024)", int),
    Option("shared_codebook", "--shared-codebook",
           "one codebook shared by all quantization steps, as in the AVG paper (default: one "
           "per step, measured better on the 5k world: see the README's AVG section)"),
    Option("align_weight", "--align-weight",
           "weight of the caption alignment loss (default {default}; 0 = 'w/o alignment')",
           float),
    Option("text_rank", "--text-rank",
           "fit and encode the identifiers on the N directions of the embeddings that the "
           "items' caption text predicts best (TF-IDF + reduced-rank ridge regression), so "
           "they are predictable from text; needs --fit-view embeddings; 0 = off, CART as "
           "published (default: 64 when at least half of the items have captions, else 0)",
           nonneg_int, metavar="N", show_default=False),
    Option("fine_quantizer", "--fine-quantizer",
           "what makes the fine tokens: rqvae (an RQ-VAE on the residual to the centroid, "
           "CART) or kmeans (greedy residual k-means with the K-Means options: additive "
           "codes, centroid + one codeword per level, which code vectors need; no RQ-VAE "
           "is trained)"),
    Option("fit_view", "--fit-view",
           "what the identifiers are fitted on: embeddings (the media embeddings, CART), "
           "captions (each item's caption text vector: identifiers text can predict) or joint "
           "(both)"),
    Option("text_encoder", "--text-encoder",
           "caption text encoder when the corpus has no caption_embeddings.npy: minilm "
           "(default, offline), sentence-transformers:SRC, or a CLIP/CLAP text tower spec "
           "(see gcmr embed --help)", show_default=False),
)

# --------------------------------------------------------------------------- flags


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _help(option: Option, default: Any, suffix: str = "") -> str:
    text = option.help
    shown = _shown(default)
    if "{default}" in text:
        text = text.replace("{default}", shown)
    elif option.show_default and not option.switch and default not in (None, "", _UNSET):
        text = f"{text} (default {shown})"
    return (text + suffix).replace("%", "%%")


def add_options(group: Any, cls: type, table: Table,
                defaults_override: Mapping[str, Any] | None = None, *,
                suffix: Mapping[str, str] | None = None) -> Any:
    """Add ``table``'s flags for config class ``cls`` to ``group`` (a parser or an argument
    group) and return it. ``defaults_override`` (field -> value) changes only the defaults
    the help shows, for a command whose defaults differ from the dataclass's (``gcmr demo``);
    ``suffix`` (field -> text) is appended to a flag's help."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = {**field_defaults(cls), **(defaults_override or {})}
    for option in table:
        if option.field not in fields:
            raise TypeError(f"{cls.__name__} has no field {option.field!r} ({option.flag})")
        tp = _base_type(hints[option.field])
        default = defaults.get(option.field, _UNSET)
        extra = (suffix or {}).get(option.field, "")
        kwargs: dict[str, Any] = {"dest": option.dest, "default": None}
        if option.switch:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = option.type or tp
            choices = fields[option.field].metadata.get("choices")
            if choices:
                kwargs["choices"] = tuple(choices)
            if option.metavar:
                kwargs["metavar"] = option.metavar
        kwargs["help"] = _help(option, default, extra)
        group.add_argument(option.flag, **kwargs)
    return group


def changes_from(args: argparse.Namespace, table: Table) -> dict:
    """``field -> value`` of the flags of ``table`` the user set (a later row wins:
    ``--no-val`` over ``--val-split``)."""
    changes: dict[str, Any] = {}
    for option in table:
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        changes[option.field] = option.const if option.switch else value
    return changes


def flag_names(table: Table) -> dict[str, str]:
    """``field -> flag`` (the first flag of each field), for error messages."""
    names: dict[str, str] = {}
    for option in table:
        names.setdefault(option.field, option.flag)
    return names


def options_for(table: Table, fields: Iterable[str]) -> tuple[Option, ...]:
    """The rows of ``table`` whose field is in ``fields``, in table order."""
    wanted = set(fields)
    return tuple(o for o in table if o.field in wanted)


# --------------------------------------------------------------------------- composed groups


def add_preset_option(group: Any, *, default: str | None = None,
                      overridden_by: str = "--config and the flags") -> None:
    """``--preset NAME|FILE.json`` (:func:`gcmr.train.config.load_preset`)."""
    from gcmr.config import preset_names

    shipped = ", ".join(preset_names())
    tail = f" (default {default})" if default else ""
    group.add_argument("--preset", default=default, metavar="NAME|FILE.json",
                       help=f"model + training preset: a shipped name ({shipped}) or a JSON "
                       f"file; {overridden_by} override it{tail}")


def add_model_group(p: argparse.ArgumentParser, *, title: str = "model",
                    defaults: Mapping[str, Any] | None = None) -> Any:
    """The model-shape flags (ModelConfig); ``defaults`` changes the help's defaults."""
    return add_options(p.add_argument_group(title), ModelConfig, MODEL_OPTIONS, defaults)


AUTO_PRESET = "auto"


def add_train_group(p: argparse.ArgumentParser, *, preset: bool = False,
                    auto: bool = True) -> Any:
    """``--config`` (a TrainConfig JSON), optionally ``--preset`` (with ``auto``, default
    ``auto``: the preset of the device, :func:`device_preset`), and the TrainConfig flags."""
    g = p.add_argument_group("training")
    if preset and not auto:
        add_preset_option(g)
    elif preset:
        add_preset_option(g, default=AUTO_PRESET)
        g.description = ("--preset auto (the default) applies the preset of the training "
                         "device: cpu on a CPU (a model and budget that train a 5,000-item "
                         "corpus in minutes), cuda on a CUDA GPU; --preset none = the library "
                         "defaults alone")
    g.add_argument("--config", type=Path, help="TrainConfig JSON file: the fields it holds "
                   "override the preset; flags override it")
    return add_options(g, TrainConfig, TRAIN_OPTIONS)


def device_preset(device: str = "auto") -> str:
    """The shipped preset of a training device: ``cuda`` where ``device`` resolves to a CUDA
    GPU, else ``cpu``."""
    from gcmr.runtime import resolve_device

    return "cuda" if resolve_device(device).type == "cuda" else "cpu"


def load_preset_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The preset named by ``--preset`` (None without one, or for ``none``); ``auto`` is the
    training device's (:func:`device_preset`, the device from ``--device``)."""
    name = getattr(args, "preset", None)
    if not name or name == "none":
        return None
    from gcmr.train.config import load_preset

    if name == AUTO_PRESET:
        name = device_preset(getattr(args, "device", None) or "auto")
    return load_preset(name)


def train_config(args: argparse.Namespace, preset: Mapping[str, Any] | None = None
                 ) -> TrainConfig:
    """TrainConfig of defaults < ``preset["train"]`` < ``--config`` file < flags."""
    from gcmr.config import config_file_fields

    fields = dict((preset or {}).get("train", {}))
    if getattr(args, "config", None) is not None:
        fields.update(config_file_fields(TrainConfig, args.config))
    fields.update(changes_from(args, TRAIN_OPTIONS))
    return TrainConfig.from_dict(fields, where="training options")


def model_options(args: argparse.Namespace, preset: Mapping[str, Any] | None = None) -> dict:
    """ModelConfig fields of ``preset["model"]`` < flags (the rest are the defaults)."""
    return {**(preset or {}).get("model", {}), **changes_from(args, MODEL_OPTIONS)}


def tower_options(args: argparse.Namespace, preset: Mapping[str, Any] | None = None) -> dict:
    """DenseTowerConfig fields: the encoder fields of ``preset["model"]`` < flags."""
    model = (preset or {}).get("model", {})
    return {**{k: v for k, v in model.items() if k in _ENCODER_FIELDS},
            **changes_from(args, TOWER_OPTIONS)}
