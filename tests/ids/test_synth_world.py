"""CART defaults on the synthetic world keep their codebooks healthy (issue 2, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from gcmr.corpus import load_corpus
from gcmr.ids import IndexConfig, build_index


@pytest.mark.slow
def test_cart_defaults_on_synthetic_world(tmp_path):
    from gcmr.corpus.synth import SynthConfig, synthesize

    synthesize(tmp_path / "world", SynthConfig(num_items=4000, seed=0, dim=256),
               show_progress=False)
    corpus = load_corpus(tmp_path / "world", load_captions=False)
    index = build_index(corpus, IndexConfig(), show_progress=False, threads=1)
    levels = {lvl["name"]: lvl for lvl in index.stats["levels"]}
    assert index.level_sizes[:3] == [128, 128, 128]
    for name in ("fine1", "fine2"):  # healthy RQ codebooks: >= 90% of the codes in use
        assert levels[name]["utilization"] >= 0.9, levels[name]
    assert index.stats["collision_rate"] < 0.05
    assert len(np.unique(index.codes, axis=0)) == len(corpus)
