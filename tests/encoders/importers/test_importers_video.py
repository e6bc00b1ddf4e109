"""MSR-VTT (1k-A and official 7k splits) and MSVD (1200/100/670 split) in their real layouts,
embedded with a tiny CLIP over pooled frames."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import media_fixtures as mf
import pytest

from gcmr.corpus import load_corpus
from gcmr.encoders.importers import import_dataset, read_dataset
from gcmr.errors import ConfigError, GcmrError

# video id -> official split; the 9k list holds video0-3 (video3 is an official "validate"
# video), the 1k-A test pairs hold video4 and video5 (video5's file is missing)
MSRVTT_VIDEOS = {"video0": "train", "video1": "train", "video2": "test", "video3": "validate",
                 "video4": "test", "video5": "test"}


def write_msrvtt(root: Path, *, original_json: bool = False) -> Path:
    videos = [{"video_id": v, "split": s, "category": 1, "id": i}
              for i, (v, s) in enumerate(MSRVTT_VIDEOS.items())]
    sentences = [{"video_id": v, "caption": f"{v} sentence {k}", "sen_id": i * 3 + k}
                 for i, v in enumerate(MSRVTT_VIDEOS) for k in range(3)]
    ann = root / "msrvtt_data"
    ann.mkdir(parents=True, exist_ok=True)
    if original_json:
        tv = [v for v in videos if v["split"] != "test"]
        te = [v for v in videos if v["split"] == "test"]
        for name, vids in (("train_val_videodatainfo.json", tv), ("test_videodatainfo.json", te)):
            keep = {v["video_id"] for v in vids}
            (root / name).write_text(json.dumps(
                {"videos": vids, "sentences": [s for s in sentences if s["video_id"] in keep]}))
    else:
        (ann / "MSRVTT_data.json").write_text(json.dumps({"videos": videos,
                                                          "sentences": sentences}))
    with (ann / "MSRVTT_train.9k.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id"])
        w.writerows([[v] for v in ("video0", "video1", "video2", "video3")])
    with (ann / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "key", "vid_key", "video_id", "sentence"])
        w.writerow([0, "ret0", "msr4", "video4", "a man is singing on stage"])
        w.writerow([1, "ret1", "msr5", "video5", "a cat plays piano"])
    for i, v in enumerate(MSRVTT_VIDEOS):
        if v != "video5":
            folder = "TestVideo" if MSRVTT_VIDEOS[v] == "test" else "TrainValVideo"
            mf.write_mp4(root / "MSRVTT" / "videos" / folder / f"{v}.mp4", frames=6, seed=i)
    return root


def test_read_msrvtt_1k_a(tmp_path):
    # CLIP4Clip's layout: JSON and CSVs in msrvtt_data/, found without --annotations
    root = write_msrvtt(tmp_path / "msrvtt")
    data = read_dataset("msrvtt", root)
    assert data.missing == ["video5"]
    assert {r.id: r.split for r in data.records} == {
        "video0": "train", "video1": "train", "video2": "train", "video3": "val",
        "video4": "test"}
    by_id = {r.id: r for r in data.records}
    assert by_id["video4"].texts == ["a man is singing on stage"]  # only the 1k-A sentence
    assert len(by_id["video0"].texts) == 3
    assert data.notes["split_protocol"] == "1k-A"


def test_read_msrvtt_official_7k_from_original_json(tmp_path):
    root = write_msrvtt(tmp_path / "msrvtt", original_json=True)
    data = read_dataset("msrvtt", root, split="7k")
    assert {r.id: r.split for r in data.records} == {
        "video0": "train", "video1": "train", "video2": "test", "video3": "val",
        "video4": "test"}
    assert all(len(r.texts) == 3 for r in data.records)
    with pytest.raises(ConfigError, match="split must be one of"):
        read_dataset("msrvtt", root, split="9k")


def test_msrvtt_1k_a_needs_its_split_files(tmp_path):
    root = write_msrvtt(tmp_path / "msrvtt")
    (root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv").unlink()
    with pytest.raises(GcmrError, match="MSRVTT_JSFUSION_test.csv: MSR-VTT 1k-A test pairs "
                                        "not found"):
        read_dataset("msrvtt", root, annotations=root / "msrvtt_data" / "MSRVTT_data.json")


def test_import_msrvtt_pools_frames(tmp_path, clip_spec):
    root = write_msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "corpus"
    summary = import_dataset("msrvtt", root, out, encoder=clip_spec, frames=3,
                             show_progress=False)
    assert summary["missing_media"] == 1 and summary["queries"] == {"test": 1, "train": 9,
                                                                   "val": 3}
    c = load_corpus(out)
    assert c.meta.modality == "video" and c.embeddings.shape == (5, 16)
    assert c.meta.extra["video_frames"] == 3
    assert c.sources[0] == "MSRVTT/videos/TrainValVideo/video0.mp4"


def write_msvd(root: Path, *, lists: bool = False) -> Path:
    names = ["-4wsuPCjDBc_5_15", "-7KMZQEsJW4_205_208", "-8y1Q0rA3n8_108_115",
             "-_hbPLsZvvo_43_55", "00jrXRMlZOY_0_10"]
    vid_numbers = [1, 1200, 1201, 1301, 1970]
    lines = ["# MSVD English descriptions", ""]
    for i, n in enumerate(names):
        lines += [f"{n} a person does thing {i}", f"{n} someone is doing thing {i}"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "AllVideoDescriptions.txt").write_text("\n".join(lines) + "\n")
    if lists:
        for split, members in (("train", names[:2]), ("val", names[2:3]), ("test", names[3:])):
            (root / f"{split}_list.txt").write_text("\n".join(members) + "\n")
    else:
        (root / "youtube_mapping.txt").write_text(
            "".join(f"{n} vid{k}\n" for n, k in zip(names, vid_numbers)))
    for i, n in enumerate(names[:-1]):  # the last clip is missing
        mf.write_mp4(root / "YouTubeClips" / f"{n}.avi", frames=6, seed=i)
    return root


@pytest.mark.parametrize("lists", [False, True])
def test_read_msvd_split(tmp_path, lists):
    data = read_dataset("msvd", write_msvd(tmp_path / "msvd", lists=lists))
    assert data.missing == ["00jrXRMlZOY_0_10"]
    assert [r.split for r in data.records] == ["train", "train", "val", "test"]
    assert data.records[0].texts == ["a person does thing 0", "someone is doing thing 0"]


def test_import_msvd_and_missing_split(tmp_path, clip_spec):
    root = write_msvd(tmp_path / "msvd")
    out = tmp_path / "corpus"
    summary = import_dataset("msvd", root, out, encoder=clip_spec, frames=2, show_progress=False)
    assert summary["items"] == 4 and summary["queries"] == {"test": 2, "train": 4, "val": 2}
    (root / "youtube_mapping.txt").unlink()
    with pytest.raises(GcmrError, match="youtube_mapping.txt: MSVD split not found"):
        read_dataset("msvd", root)
