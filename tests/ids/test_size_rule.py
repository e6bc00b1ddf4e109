"""The codebook size rule (num_clusters / codebook_size 0 = sizes from the number of items)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcmr.corpus import load_corpus
from gcmr.errors import ConfigError
from gcmr.ids import IndexConfig, build_index, load_index
from gcmr.ids.schemes import sizes_for


@pytest.mark.parametrize(("n", "levels", "expected"), [
    (5_000, 2, (64, 16)), (100_000, 2, (256, 32)), (1_000_000, 2, (1024, 64)),
    (10_000_000, 2, (1024, 256)), (40, 2, (16, 4)), (1, 2, (16, 4)), (5_000, 3, (64, 8)),
    (10**9, 1, (1024, 256)),
])
def test_sizes_follow_n(n: int, levels: int, expected: tuple[int, int]) -> None:
    k, c = sizes_for(n, levels)
    assert (k, c) == expected
    assert k & (k - 1) == 0 and c & (c - 1) == 0  # powers of two


def test_rule_sizes_grow_with_n_and_leave_room() -> None:
    previous = (0, 0)
    for n in (1_000, 5_000, 20_000, 100_000, 1_000_000, 10_000_000):
        k, c = sizes_for(n, 2)
        assert k >= previous[0] and c >= previous[1]
        assert k * c * c >= 2 * n  # room for twice the items before the counter
        previous = (k, c)


def test_index_records_the_rule(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_corpus)
    config = IndexConfig(num_clusters=0, codebook_size=0, latent_dim=8, hidden_dims=[16],
                         epochs=2, max_steps=10, batch_size=16)
    index = build_index(corpus, config, show_progress=False)
    saved = load_index(index.save(tmp_path / "idx"))
    rule = saved.stats["fit"]["size_rule"]
    assert rule["num_items"] == 40 and (rule["num_clusters"], rule["codebook_size"]) == (16, 4)
    # the sizes used are the rule's (they fit 40 items: two rows per entry) and the manifest
    # holds them instead of the 0s
    assert saved.config.num_clusters == 16 and saved.config.codebook_size == 4
    assert saved.level_sizes[:3] == [16, 4, 4]
    # one size given, the other from the rule
    mixed = build_index(corpus, config.replace(num_clusters=4), show_progress=False)
    assert mixed.level_sizes[:3] == [4, 4, 4]


def test_zero_sizes_only_for_cart() -> None:
    IndexConfig(num_clusters=0)
    with pytest.raises(ConfigError, match="cart only"):
        IndexConfig(scheme="rq", codebook_size=0)
    with pytest.raises(ConfigError, match="num_clusters"):
        IndexConfig(num_clusters=-1)
