"""Clotho and AudioCaps in their real file layouts, with tiny CLAP embeddings."""

from __future__ import annotations

import csv
from pathlib import Path

import media_fixtures as mf
import pytest

from gcmr.corpus import load_corpus
from gcmr.encoders.importers import import_dataset, read_dataset
from gcmr.errors import ConfigError, GcmrError

CLOTHO_HEADER = ["file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5"]
AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def write_clotho(root: Path) -> Path:
    """Clotho v2: captions CSVs at the root, audio in development/ validation/ evaluation/
    (the validation audio sits in the nested clotho_audio_validation/validation/ layout);
    'Missing Rain.wav' is listed but absent."""
    plan = {"development": ["Birds Morning.wav", "Car Engine 01.wav", "Missing Rain.wav"],
            "validation": ["Wind Door.wav"], "evaluation": ["City Street.wav", "Guitar.wav"]}
    for k, (split, names) in enumerate(plan.items()):
        rows = []
        for j, name in enumerate(names):
            rows.append([name] + [f"{split} sound {j} caption {c}" for c in range(1, 6)])
            if name != "Missing Rain.wav":
                sub = f"clotho_audio_{split}/{split}" if split == "validation" else split
                folder = root / sub
                mf.write_wav(folder / name, freq=200 + 150 * (3 * k + j), seconds=0.3,
                             rate=22050)
        _csv(root / f"clotho_captions_{split}.csv", CLOTHO_HEADER, rows)
    return root


def write_audiocaps(root: Path) -> Path:
    """train/val/test CSVs (one row per caption; val/test clips have several) and the clips a
    user managed to download, under the different file names downloaders use."""
    _csv(root / "train.csv", AUDIOCAPS_HEADER, [
        ["91139", "r1nicOVtvkQ", "130", "A woman talks nearby as water pours"],
        ["58146", "UDGBjjwyaqE", "20", "Multiple clanging and clanking sounds"],
        ["11542", "MissingClip", "30", "A dog barks"],
    ])
    _csv(root / "val.csv", AUDIOCAPS_HEADER, [
        ["97151", "vfY_TJq7n_U", "130", "Rustling occurs, ducks quack"],
        ["97152", "vfY_TJq7n_U", "130", "Ducks quack and water splashes"],
    ])
    _csv(root / "test.csv", AUDIOCAPS_HEADER, [
        ["103549", "7fmOlUlwoNg", "20", "Constant rattling noise and sharp vibrations"],
        ["103548", "7fmOlUlwoNg", "20", "A train rattles on the tracks"],
        ["103541", "AbsentTest1", "0", "Wind blows"],
    ])
    audio = root / "audio"
    mf.write_wav(audio / "train" / "r1nicOVtvkQ.wav", freq=300, seconds=0.3)
    mf.write_wav(audio / "train" / "YUDGBjjwyaqE_20.000_30.000.wav", freq=500, seconds=0.3)
    mf.write_wav(audio / "val" / "vfY_TJq7n_U_130.wav", freq=700, seconds=0.3)
    mf.write_wav(audio / "test" / "103549.wav", freq=900, seconds=0.3)  # named by audiocap_id
    return root


def test_read_clotho(tmp_path):
    data = read_dataset("clotho", write_clotho(tmp_path / "clotho"))
    assert data.modality == "audio" and data.missing == ["development/Missing Rain.wav"]
    assert {r.id: r.split for r in data.records} == {
        "Birds Morning": "train", "Car Engine 01": "train", "Wind Door": "val",
        "City Street": "test", "Guitar": "test"}
    assert len(data.records[0].texts) == 5


def test_import_clotho_with_clap(tmp_path, clap_spec):
    root = write_clotho(tmp_path / "clotho")
    out = tmp_path / "corpus"
    summary = import_dataset("clotho", root, out, encoder=clap_spec, show_progress=False)
    assert summary["missing_media"] == 1
    assert summary["queries"] == {"test": 10, "train": 10, "val": 5}
    c = load_corpus(out)
    assert c.meta.modality == "audio" and c.embeddings.shape == (5, 16)
    assert c.sources[2] == "clotho_audio_validation/validation/Wind Door.wav"
    assert [len(x) for x in c.captions] == [5, 5, 0, 0, 0]


def test_audio_has_no_captioner_but_takes_a_captions_file(tmp_path, clap_spec, git_dir):
    root = write_clotho(tmp_path / "clotho")
    with pytest.raises(ConfigError, match="no audio captioner.*--captions-file"):
        import_dataset("clotho", root, tmp_path / "o", encoder=clap_spec,
                       captioner=f"hf:{git_dir}", show_progress=False)
    assert not list(tmp_path.glob(".o.*"))  # refused before any work
    caps = tmp_path / "generated.csv"
    _csv(caps, ["file_name", "caption_1", "caption_2"],
         [["Wind Door.wav", "a door creaks in the wind", "wind howls"]])
    summary = import_dataset("clotho", root, tmp_path / "o", encoder=clap_spec,
                             captions_file=caps, show_progress=False)
    c = load_corpus(tmp_path / "o")
    assert c.captions[c.row_of["Wind Door"]] == ["a door creaks in the wind", "wind howls"]
    assert summary["items_with_captions"] == 1
    assert c.meta.extra["captions_from"] == f"file:{caps}"


def test_clotho_v1_without_validation_and_missing_csv(tmp_path):
    root = write_clotho(tmp_path / "clotho")
    (root / "clotho_captions_validation.csv").unlink()
    data = read_dataset("clotho", root)
    assert data.split_counts() == {"train": 2, "test": 2}
    (root / "clotho_captions_evaluation.csv").unlink()
    with pytest.raises(GcmrError, match="clotho_captions_evaluation.csv: Clotho evaluation"):
        read_dataset("clotho", root)


def test_audiocaps_matches_downloaded_names_and_counts_missing(tmp_path):
    data = read_dataset("audiocaps", write_audiocaps(tmp_path / "ac"))
    assert sorted(data.missing) == ["AbsentTest1_0", "MissingClip_30"]
    by_id = {r.id: r for r in data.records}
    assert {k: r.split for k, r in by_id.items()} == {
        "r1nicOVtvkQ_130": "train", "UDGBjjwyaqE_20": "train", "vfY_TJq7n_U_130": "val",
        "7fmOlUlwoNg_20": "test"}
    assert by_id["vfY_TJq7n_U_130"].texts == ["Rustling occurs, ducks quack",
                                               "Ducks quack and water splashes"]
    assert by_id["7fmOlUlwoNg_20"].path.name == "103549.wav"


def test_import_audiocaps_reports_missing(tmp_path, clap_spec):
    root = write_audiocaps(tmp_path / "ac")
    out = tmp_path / "corpus"
    summary = import_dataset("audiocaps", root, out, encoder=clap_spec, show_progress=False)
    assert summary["missing_media"] == 2 and summary["items"] == 4
    assert load_corpus(out).meta.extra["missing_media"] == 2


def test_audiocaps_errors(tmp_path):
    root = write_audiocaps(tmp_path / "ac")
    with pytest.raises(ConfigError, match="no offline default audio encoder"):
        import_dataset("audiocaps", root, tmp_path / "o", show_progress=False)
    _csv(root / "val.csv", ["youtube_id", "caption"], [["x", "y"]])
    with pytest.raises(GcmrError, match=r"val\.csv: missing column\(s\) \['audiocap_id', "
                                        r"'start_time'\]"):
        read_dataset("audiocaps", root)
    (root / "test.csv").unlink()
    _csv(root / "val.csv", AUDIOCAPS_HEADER, [])
    with pytest.raises(GcmrError, match="test.csv: AudioCaps test annotations not found"):
        read_dataset("audiocaps", root)
