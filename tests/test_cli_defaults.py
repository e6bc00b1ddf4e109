"""Help texts state the library's real defaults (they drifted once: 256 shown, 192 used)."""

from __future__ import annotations

import dataclasses


def test_model_help_defaults_match_model_config() -> None:
    from gcmr.cli.retrieval import MODEL_HELP_DEFAULTS
    from gcmr.model import ModelConfig

    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    assert MODEL_HELP_DEFAULTS == {k: fields[k] for k in MODEL_HELP_DEFAULTS}
