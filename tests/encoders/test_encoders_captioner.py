"""Caption enhancement with tiny random-weight GIT and BLIP models loaded from disk, captions
from files, and atomic append/replace of a corpus's captions."""

from __future__ import annotations

import json

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.encoders.captioner import (
    CaptionOptions,
    caption_items,
    clean_captions,
    load_captioner,
    match_captions,
    read_captions_file,
)
from gcmr.errors import ConfigError, GcmrError


@pytest.mark.parametrize("model", ["git", "blip"])
def test_captioner_beam_and_sampling(model, git_dir, blip_dir, images):
    src = git_dir if model == "git" else blip_dir
    cap = load_captioner(f"hf:{src}", options=CaptionOptions(num_captions=3, max_new_tokens=6),
                         batch_size=2)
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in images[:3]]
    beams = cap.caption_images(ims)
    assert len(beams) == 3
    for caps in beams:
        assert 1 <= len(caps) <= 3 and all(c.strip() == c and c for c in caps)
        assert len({c.lower() for c in caps}) == len(caps)
        assert all(set(c.split()) <= set(mf.WORDS) for c in caps)  # decoded real vocabulary
    assert cap.caption_images(ims) == beams  # beam search is deterministic
    cap.options = CaptionOptions(num_captions=3, sample=True, max_new_tokens=6, seed=1)
    s1 = cap.caption_images(ims, seed=7)
    assert s1 == cap.caption_images(ims, seed=7)  # seeded sampling reproduces


def test_video_captions_come_from_several_frames(git_dir, tmp_path):
    video = mf.write_mp4(tmp_path / "v.mp4", frames=8, seed=3)
    cap = load_captioner(str(git_dir), options=CaptionOptions(num_captions=4, frames=4,
                                                              max_new_tokens=5))
    caps = cap.caption_files([video], "video")
    assert len(caps) == 1 and 1 <= len(caps[0]) <= 4
    with pytest.raises(GcmrError, match="no captioner for audio.*captions-file"):
        cap.caption_files([tmp_path / "a.wav"], "audio")


def test_caption_items_is_resumable(git_dir, images, tmp_path):
    cap = load_captioner(str(git_dir), options=CaptionOptions(num_captions=2, max_new_tokens=4),
                         batch_size=2)
    ids = [p.stem for p in images]
    full = caption_items(cap, ids=ids, paths=images, modality="image",
                         partial_dir=tmp_path / "a.partial", chunk_size=2, show_progress=False)
    assert len(full) == len(images) and not (tmp_path / "a.partial").exists()

    calls = []
    real = cap.caption_files

    def crash_on_third(paths, modality, seed=None):
        calls.append(list(paths))
        if len(calls) == 3:
            raise RuntimeError("crash")
        return real(paths, modality, seed=seed)

    cap.caption_files = crash_on_third  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        caption_items(cap, ids=ids, paths=images, modality="image",
                      partial_dir=tmp_path / "b.partial", chunk_size=2, show_progress=False)
    cap.caption_files = real  # type: ignore[method-assign]
    n_done = len(list((tmp_path / "b.partial").glob("chunk_*.jsonl")))
    assert n_done == 2
    resumed = caption_items(cap, ids=ids, paths=images, modality="image",
                            partial_dir=tmp_path / "b.partial", chunk_size=2, show_progress=False)
    assert resumed == full


def test_caption_options_are_validated():
    with pytest.raises(ConfigError, match="num_captions"):
        CaptionOptions(num_captions=0)
    with pytest.raises(ConfigError, match="top_p"):
        CaptionOptions(top_p=1.5)
    with pytest.raises(GcmrError, match="not found"):
        load_captioner("./missing/blip")


def test_clean_captions():
    assert clean_captions(["  a  dog ", "A dog", "", "a cat", "x"], 2) == ["a dog", "a cat"]


def test_read_captions_file_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "caps.csv"
    csv_path.write_text("file_name,caption_1,caption_2\nrain.wav,rain falls,water drips\n"
                        "rain.wav,storm,\nwind.wav,wind blows,\n", encoding="utf-8")
    table = read_captions_file(csv_path)
    assert table == {"rain.wav": ["rain falls", "water drips", "storm"], "wind.wav": ["wind blows"]}
    jl = tmp_path / "caps.jsonl"
    jl.write_text(json.dumps({"id": "a", "captions": ["x", "y"]}) + "\n"
                  + json.dumps({"file": "b.png", "caption": "z"}) + "\n", encoding="utf-8")
    assert read_captions_file(jl) == {"a": ["x", "y"], "b.png": ["z"]}
    got, unmatched = match_captions(table, ["rain", "other"], ["audio/rain.wav", "audio/x.wav"])
    assert got == [["rain falls", "water drips", "storm"], []] and unmatched == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("name,text\na,b\n")
    with pytest.raises(GcmrError, match="needs a key column"):
        read_captions_file(bad)
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"id": "a", "caption": 3}\n')
    with pytest.raises(GcmrError, match="bad.jsonl line 1"):
        read_captions_file(badj)


def _image_corpus(tmp_path, images):
    """A 5-item image corpus whose sources point at the fixture images."""
    from gcmr.corpus import Query, write_corpus

    out = tmp_path / "corpus"
    write_corpus(out, ids=[p.stem for p in images],
                 captions=[["old caption"]] + [[] for _ in images[1:]],
                 embeddings=np.eye(len(images), 4, dtype=np.float32) + 0.1,
                 sources=[p.name for p in images], modality="image",
                 queries={"test": [Query("q", (images[0].stem,))]})
    meta = json.loads((out / "corpus.json").read_text())
    meta["media_root"] = str(images[0].parent)
    (out / "corpus.json").write_text(json.dumps(meta))
    return out


def test_caption_corpus_append_replace_and_file(git_dir, images, tmp_path):
    from gcmr.corpus import load_corpus
    from gcmr.encoders.pipeline import caption_corpus

    corpus = _image_corpus(tmp_path, images)
    before = load_corpus(corpus)
    cap = load_captioner(str(git_dir), options=CaptionOptions(num_captions=2, max_new_tokens=4))
    summary = caption_corpus(corpus, captioner=cap, mode="append", show_progress=False)
    after = load_corpus(corpus)
    assert after.captions[0][0] == "old caption" and len(after.captions[0]) >= 2
    assert all(1 <= len(c) <= 2 for c in after.captions[1:])
    assert np.array_equal(np.asarray(after.embeddings), np.asarray(before.embeddings))
    assert after.queries == before.queries and summary["mode"] == "append"
    assert after.meta.extra["captions_from"].startswith("hf:")

    # replace with captions from a file, written to a new corpus dir; the original is unchanged
    caps_file = tmp_path / "c.jsonl"
    caps_file.write_text(json.dumps({"id": images[1].stem, "captions": ["new one"]}) + "\n")
    out = tmp_path / "corpus2"
    summary = caption_corpus(corpus, captions_file=caps_file, mode="replace", out=out,
                             show_progress=False)
    new = load_corpus(out)
    assert new.captions[1] == ["new one"]
    assert new.captions[0] == after.captions[0]  # items without new captions keep theirs
    assert summary["items_without_new_captions"] == len(images) - 1
    assert load_corpus(corpus).captions == after.captions
    with pytest.raises(GcmrError, match="exactly one"):
        caption_corpus(corpus, show_progress=False)


def test_caption_corpus_refuses_audio_before_any_work(git_dir, images, tmp_path):
    from gcmr.encoders.pipeline import caption_corpus

    corpus = _image_corpus(tmp_path, images)
    meta = json.loads((corpus / "corpus.json").read_text())
    meta["modality"] = "audio"
    (corpus / "corpus.json").write_text(json.dumps(meta))
    cap = load_captioner(str(git_dir))
    with pytest.raises(GcmrError, match="no audio captioner.*--captions-file"):
        caption_corpus(corpus, captioner=cap, show_progress=False)
    assert not list(tmp_path.glob(".corpus.*"))
