"""Index artifact: save/load round trip, corruption, fingerprint checks, trie vs brute force,
level-tagged tokens."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from gcmr.errors import ArtifactError
from gcmr.ids import SemanticIndex, build_index, load_index


@pytest.fixture(scope="module")
def built(small_corpus, tmp_path_factory):
    from gcmr.ids import IndexConfig

    config = IndexConfig(num_clusters=8, codebook_size=16, latent_dim=8, hidden_dims=[32, 16],
                         epochs=3, batch_size=128, kmeans_epochs=2, restart_interval=2)
    index = build_index(small_corpus, config, show_progress=False)
    path = index.save(tmp_path_factory.mktemp("index") / "idx")
    return index, path


def copy_index(path, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def test_round_trip(built, small_corpus):
    index, path = built
    again = load_index(path, corpus=small_corpus)
    np.testing.assert_array_equal(again.codes, index.codes)
    assert again.level_sizes == index.level_sizes
    assert again.item_ids == index.item_ids
    assert again.config == index.config
    assert again.stats["levels"] == index.stats["levels"]
    for key, value in index.trie.state_dict().items():
        assert torch.equal(again.trie.state_dict()[key], value)
    new = np.random.default_rng(0).normal(size=(25, small_corpus.dim)).astype(np.float32)
    np.testing.assert_array_equal(again.encode(new), index.encode(new))
    np.testing.assert_array_equal(again.encode(small_corpus.embeddings), index.codes[:, :-1])


@pytest.mark.parametrize("scheme", ["rq", "hkmeans", "atomic", "random"])
def test_round_trip_other_schemes(small_corpus, fast_config, tmp_path, scheme):
    index = build_index(small_corpus, fast_config(scheme=scheme), show_progress=False)
    again = load_index(index.save(tmp_path / scheme), corpus=small_corpus)
    np.testing.assert_array_equal(again.codes, index.codes)
    new = np.random.default_rng(1).normal(size=(9, small_corpus.dim)).astype(np.float32)
    np.testing.assert_array_equal(again.encode(new), index.encode(new))


def test_manifest_records_stats_and_fingerprint(built, small_corpus):
    _, path = built
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "gcmr-index" and manifest["version"] == 1
    assert manifest["corpus_fingerprint"] == small_corpus.fingerprint
    assert manifest["scheme"] == "cart" and manifest["config"]["num_clusters"] == 8
    names = [lvl["name"] for lvl in manifest["stats"]["levels"]]
    assert names == ["coarse", "fine1", "fine2", "fine3", "unique"]  # 3 fine levels: additive
    assert {"utilization", "entropy_bits", "dead_codes"} <= set(manifest["stats"]["levels"][1])
    assert "collision_rate" in manifest["stats"]


def test_save_refuses_existing_unless_overwrite(built, tmp_path):
    index, _ = built
    out = index.save(tmp_path / "x")
    with pytest.raises(ArtifactError, match="already exists"):
        index.save(out)
    index.save(out, overwrite=True)
    assert SemanticIndex.load(out).num_items == 400


def test_fingerprint_mismatch_is_refused(built, corpus_of, clustered):
    _, path = built
    other = corpus_of(clustered(400, 24, seed=99), name="other")
    with pytest.raises(ArtifactError, match="different corpus"):
        load_index(path, corpus=other)


@pytest.mark.parametrize("victim", ["ids.npy", "item_ids.json", "trie.safetensors",
                                    "scheme.safetensors", "manifest.json"])
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupted_files(built, tmp_path, victim, damage):
    _, path = built
    dst = copy_index(path, tmp_path)
    if damage == "missing":
        (dst / victim).unlink()
    else:
        (dst / victim).write_bytes(b"\x00garbage\xff" * 3)
    with pytest.raises(ArtifactError, match=victim.replace(".", r"\.")):
        load_index(dst)


def test_inconsistent_shapes_are_refused(built, tmp_path):
    _, path = built
    dst = copy_index(path, tmp_path)
    codes = np.load(dst / "ids.npy")
    np.save(dst / "ids.npy", codes[:-1])
    with pytest.raises(ArtifactError, match="ids.npy: checksum mismatch"):
        load_index(dst)
    # without the checksum (verify=False, or an index from before checksums) the shape and
    # dtype checks still refuse the file
    with pytest.raises(ArtifactError, match="ids.npy"):
        load_index(dst, verify=False)
    np.save(dst / "ids.npy", codes.astype(np.int32))
    with pytest.raises(ArtifactError, match="int64"):
        load_index(dst, verify=False)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = 99
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="version"):
        load_index(dst)


def brute_force_children(codes: np.ndarray) -> dict[tuple, set[int]]:
    """Prefix -> set of next codes, from every identifier's prefixes."""
    children: dict[tuple, set[int]] = defaultdict(set)
    for row in codes.tolist():
        for d in range(len(row)):
            children[tuple(row[:d])].add(row[d])
    return children


def test_trie_transitions_equal_bruteforce_prefix_sets(built):
    index, _ = built
    trie, codes = index.trie, index.codes
    children = brute_force_children(codes)
    # walk the trie breadth-first with batched allowed(): every node's allowed set must equal
    # the brute-force set of its prefix, and every prefix must be reached
    frontier = {(): 0}
    seen = 0
    for level in range(index.length):
        prefixes = list(frontier)
        nodes = torch.tensor([frontier[p] for p in prefixes], dtype=torch.int64)
        toks, tgts, valid = trie.allowed(level, nodes)
        nxt = {}
        for i, prefix in enumerate(prefixes):
            allowed = toks[i][valid[i]].tolist()
            assert allowed == sorted(children[prefix])
            for tok, tgt in zip(allowed, tgts[i][valid[i]].tolist()):
                nxt[prefix + (tok,)] = tgt
        seen += len(prefixes)
        frontier = nxt
    assert seen == len(children)
    # leaves map each complete identifier to its item row
    for ident, row in frontier.items():
        assert tuple(codes[row].tolist()) == ident
    assert sorted(frontier.values()) == list(range(index.num_items))


def test_lookup_and_level_tagged_tokens(built):
    index, _ = built
    assert index.lookup(index.codes).tolist() == list(range(index.num_items))
    # an item whose group is smaller than the largest group: counter = its group size is absent
    counter = index.codes[:, -1]
    small = int(np.flatnonzero(counter < index.level_sizes[-1] - 1)[0])
    group = (index.codes[:, :-1] == index.codes[small, :-1]).all(axis=1)
    absent = index.codes[small:small + 1].copy()
    absent[0, -1] = int(group.sum())
    assert absent[0, -1] < index.level_sizes[-1]
    assert index.lookup(absent).tolist() == [-1]
    offsets = index.token_offsets
    assert offsets == [0] + np.cumsum(index.level_sizes)[:-1].tolist()
    assert index.vocab_size == sum(index.level_sizes)
    tokens = index.to_tokens(index.codes)
    for level in range(index.length):  # each level owns its own token range
        lo, hi = offsets[level], offsets[level] + index.level_sizes[level]
        assert ((tokens[:, level] >= lo) & (tokens[:, level] < hi)).all()
    np.testing.assert_array_equal(index.from_tokens(tokens), index.codes)
