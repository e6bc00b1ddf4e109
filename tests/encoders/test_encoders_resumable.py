"""Resumable chunked embedding: a crash mid-way resumes from the finished chunks, a partial
directory made by another encoder or item list is refused, and the result equals an
uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gcmr.encoders.base import Encoder, l2_normalize
from gcmr.encoders.embed import embed_captions_job, embed_to_file
from gcmr.encoders.resumable import ChunkedJob, partial_dir_for
from gcmr.errors import GcmrError


class CountingEncoder(Encoder):
    """Deterministic fake media encoder: vector = hash of the path; can crash after N calls."""

    modality = "image"
    has_text = True

    def __init__(self, name: str = "fake", dim: int = 6, fail_after: int | None = None) -> None:
        self.name, self.dim, self.batch_size = name, dim, 3
        self.fail_after = fail_after
        self.seen: list[str] = []

    def _vec(self, key: str) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(key)) % (2**32))
        return rng.normal(size=self.dim)

    def encode_media(self, paths):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.seen.extend(str(p) for p in paths)
        return l2_normalize(np.stack([self._vec(str(p)) for p in paths]))

    def encode_text(self, texts):
        return l2_normalize(np.stack([self._vec("t:" + t) for t in texts]))


def _items(n: int):
    ids = [f"item{i}" for i in range(n)]
    return ids, [f"/data/{i}.png" for i in ids]


def test_crash_then_resume_skips_finished_chunks(tmp_path):
    ids, paths = _items(23)
    out = tmp_path / "emb.npy"
    crashing = CountingEncoder(fail_after=12)  # dies inside the 3rd chunk of 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_to_file(crashing, ids=ids, paths=paths, out=out, chunk_size=5, show_progress=False)
    partial = partial_dir_for(out)
    assert sorted(p.name for p in partial.glob("chunk_*.npy")) == \
        ["chunk_000000.npy", "chunk_000001.npy"]
    assert not out.exists()

    resumed = CountingEncoder()
    summary = embed_to_file(resumed, ids=ids, paths=paths, out=out, chunk_size=5,
                            show_progress=False)
    assert resumed.seen == paths[10:]  # only the unfinished chunks were encoded
    assert summary["items"] == 23 and not partial.exists()

    fresh_out = tmp_path / "fresh.npy"
    embed_to_file(CountingEncoder(), ids=ids, paths=paths, out=fresh_out, chunk_size=5,
                  show_progress=False)
    assert np.array_equal(np.load(out), np.load(fresh_out))
    assert (tmp_path / "emb.ids.txt").read_text().splitlines() == ids


def test_partial_from_another_encoder_or_list_is_refused(tmp_path):
    ids, paths = _items(10)
    out = tmp_path / "emb.npy"
    with pytest.raises(RuntimeError):
        embed_to_file(CountingEncoder(fail_after=6), ids=ids, paths=paths, out=out,
                      chunk_size=4, show_progress=False)
    with pytest.raises(GcmrError, match="different job.*encoder.*fake.*other"):
        embed_to_file(CountingEncoder(name="other"), ids=ids, paths=paths, out=out,
                      chunk_size=4, show_progress=False)
    with pytest.raises(GcmrError, match="item list differs"):
        embed_to_file(CountingEncoder(), ids=ids[::-1], paths=paths[::-1], out=out,
                      chunk_size=4, show_progress=False)
    with pytest.raises(GcmrError, match="chunk_size"):
        embed_to_file(CountingEncoder(), ids=ids, paths=paths, out=out, chunk_size=3,
                      show_progress=False)
    # --restart discards the partial work of the other job
    other = CountingEncoder(name="other")
    embed_to_file(other, ids=ids, paths=paths, out=out, chunk_size=4, restart=True,
                  show_progress=False)
    assert other.seen == paths and np.load(out).shape == (10, 6)


def test_corrupt_state_is_reported(tmp_path):
    d = tmp_path / "x.partial"
    d.mkdir()
    (d / "state.json").write_text("{nope")
    with pytest.raises(GcmrError, match="unreadable state"):
        ChunkedJob(d, job={"a": 1}, keys=["k"], chunk_size=2)


def test_chunk_state_records_the_job(tmp_path):
    job = ChunkedJob(tmp_path / "j.partial", job={"kind": "x", "encoder": "e"},
                     keys=["a", "b", "c"], chunk_size=2)
    state = json.loads((tmp_path / "j.partial" / "state.json").read_text())
    assert state["num_items"] == 3 and state["chunk_size"] == 2 and state["job"]["encoder"] == "e"
    assert job.num_chunks == 2 and job.bounds(1) == (2, 3)
    with pytest.raises(GcmrError, match="expected 1"):
        job.save_array(1, np.zeros((2, 4)))


def test_non_finite_embeddings_are_refused(tmp_path):
    class NaNEncoder(CountingEncoder):
        def encode_media(self, paths):
            out = super().encode_media(paths)
            out[0, 0] = np.nan
            return out

    ids, paths = _items(4)
    with pytest.raises(GcmrError, match="non-finite embedding for item #0"):
        embed_to_file(NaNEncoder(), ids=ids, paths=paths, out=tmp_path / "e.npy",
                      show_progress=False)


def test_caption_embeddings_are_normalized_means(tmp_path):
    from gcmr.encoders.embed import assemble

    enc = CountingEncoder()
    caps = [["a dog", "a puppy"], [], ["red car"]]
    job = embed_captions_job(enc, caps, partial_dir=tmp_path / "c.partial", chunk_size=2,
                             show_progress=False)
    arr = np.load(assemble(job, tmp_path / "c.npy", dim=enc.dim))
    expected0 = l2_normalize(enc.encode_text(caps[0]).mean(axis=0, keepdims=True))[0]
    assert np.allclose(arr[0], expected0, atol=1e-6)
    assert np.all(arr[1] == 0)  # no captions -> zero row
    assert np.allclose(arr[2], enc.encode_text(["red car"])[0], atol=1e-6)
