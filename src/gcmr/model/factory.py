"""Build or rebuild a retriever model and its query tokenizer from a model manifest.

Two backbones share every interface the losses and beam search use: our from-scratch CART
encoder-decoder (``backbone: "scratch"``) and a pretrained T5 with the identifier tokens
added to its vocabulary (``backbone: "t5"``, AVG table 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gcmr.errors import ArtifactError, ConfigError

BACKBONES = ("scratch", "t5")


def parse_backbone(spec: str) -> tuple[str, str]:
    """``""`` -> ("scratch", ""); ``"t5:PATH_OR_NAME"`` -> ("t5", PATH_OR_NAME)."""
    if not spec:
        return "scratch", ""
    kind, _, source = spec.partition(":")
    if kind != "t5" or not source:
        raise ConfigError(f"backbone must be empty (from-scratch model) or 't5:PATH_OR_NAME', "
                          f"got {spec!r}")
    return kind, source


def empty_model(manifest: dict[str, Any]) -> Any:
    """The architecture named by a manifest, with random weights (load a state dict into it)."""
    backbone = manifest.get("backbone", "scratch")
    if backbone == "t5":
        from gcmr.model.t5_backbone import T5Backbone, T5BackboneConfig

        return T5Backbone.from_config(T5BackboneConfig.from_dict(manifest["model_config"]))
    if backbone != "scratch":
        raise ArtifactError(f"unknown backbone {backbone!r} in the model manifest")
    from gcmr.model import GenerativeRetrievalModel, ModelConfig

    return GenerativeRetrievalModel(ModelConfig.from_dict(manifest["model_config"]))


def load_tokenizer(model_dir: Path, manifest: dict[str, Any]) -> Any:
    path = Path(model_dir) / manifest.get("tokenizer", "tokenizer.json")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing query tokenizer")
    if manifest.get("backbone", "scratch") == "t5":
        from gcmr.model.t5_backbone import T5QueryTokenizer

        return T5QueryTokenizer.load(path)
    from gcmr.model import QueryTokenizer

    return QueryTokenizer.load(path)
