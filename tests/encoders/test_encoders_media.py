"""Media decoding: images, audio (channels, resampling), evenly spaced video frames."""

from __future__ import annotations

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.encoders.media import (
    guess_modality,
    list_media,
    load_audio,
    load_image,
    modality_of,
    resample,
    sample_video_frames,
)
from gcmr.errors import GcmrError


def test_load_image_rgb_and_errors(tmp_path):
    p = mf.write_image(tmp_path / "a.png", seed=1)
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (48, 40)
    with pytest.raises(GcmrError, match="not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(GcmrError, match="bad.jpg: cannot decode image"):
        load_image(bad)


def test_load_audio_mixes_to_mono_and_resamples(tmp_path):
    p = mf.write_wav(tmp_path / "tone.wav", freq=440, seconds=0.5, rate=16000, channels=2)
    wav, rate = load_audio(p)
    assert rate == 16000 and wav.shape == (8000,) and wav.dtype == np.float32
    assert 0.45 < np.abs(wav).max() <= 0.51  # written at amplitude 0.5
    up, rate = load_audio(p, sample_rate=48000)
    assert rate == 48000 and up.shape == (24000,)
    # the tone survives resampling: dominant frequency stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(up))
    assert abs(np.fft.rfftfreq(len(up), 1 / 48000)[spectrum.argmax()] - 440) < 5
    with pytest.raises(GcmrError, match="audio file not found"):
        load_audio(tmp_path / "nope.wav")


@pytest.mark.parametrize("scipy_available", [True, False])
def test_resample_polyphase_and_linear_fallback(monkeypatch, scipy_available):
    import sys

    monkeypatch.setitem(sys.modules, "torchaudio.functional", None)  # force the non-torch paths
    if not scipy_available:
        monkeypatch.setitem(sys.modules, "scipy.signal", None)
    rate = 1000
    wav = np.sin(2 * np.pi * 50 * np.arange(rate) / rate).astype(np.float32)
    out = resample(wav, rate, 1600)
    assert out.shape == (1600,) and out.dtype == np.float32
    expected = np.sin(2 * np.pi * 50 * np.arange(1600) / 1600)
    assert np.abs(out[100:-100] - expected[100:-100]).max() < 0.05
    assert resample(wav, rate, rate) is wav


def test_audio_from_video_container_via_pyav(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    rate = 16000
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        t = np.arange(rate // 2) / rate
        samples = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    wav, got_rate = load_audio(path)
    assert got_rate == rate and abs(len(wav) - rate // 2) < 2048
    assert 0.2 < np.abs(wav).max() < 0.45


def test_video_frames_are_evenly_spaced(tmp_path):
    p = mf.write_mp4(tmp_path / "v.mp4", frames=12, fps=6)
    frames = sample_video_frames(p, 4)
    assert len(frames) == 4
    reds = [f.getpixel((10, 10))[0] for f in frames]
    # segment centres of a 2 s clip: 0.25, 0.75, 1.25, 1.75 s -> frames 2, 5, 8, 11
    expected = [mf.frame_colour(i)[0] for i in (2, 5, 8, 11)]
    assert np.allclose(reds, expected, atol=12), (reds, expected)
    assert reds == sorted(reds)


def test_video_with_fewer_frames_than_requested_repeats(tmp_path):
    p = mf.write_mp4(tmp_path / "short.mp4", frames=3, fps=6)
    frames = sample_video_frames(p, 8)
    assert len(frames) == 8
    reds = [f.getpixel((10, 10))[0] for f in frames]
    assert reds == sorted(reds)


def test_video_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(GcmrError, match="broken.mp4"):
        sample_video_frames(bad, 4)
    with pytest.raises(GcmrError, match="not found"):
        sample_video_frames(tmp_path / "none.mp4", 4)


def test_modalities_from_extensions(tmp_path):
    assert modality_of("a.JPG") == "image" and modality_of("b.flac") == "audio"
    assert modality_of("c.avi") == "video" and modality_of("d.txt") is None
    assert guess_modality(["a.png", "b.jpg"]) == "image"
    with pytest.raises(GcmrError, match="mixed media"):
        guess_modality(["a.png", "b.wav"])
    with pytest.raises(GcmrError, match="unknown media extension"):
        guess_modality(["notes.txt"])
    mf.write_image(tmp_path / "x" / "b.png")
    mf.write_image(tmp_path / "a.png")
    mf.write_image(tmp_path / ".hidden" / "c.png")
    (tmp_path / "notes.txt").write_text("hi")
    found = [p.relative_to(tmp_path).as_posix() for p in list_media(tmp_path)]
    assert found == ["a.png", "x/b.png"]
