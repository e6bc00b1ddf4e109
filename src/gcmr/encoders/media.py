"""Decoding media files: images (PIL), audio (soundfile, else PyAV) with resampling, and evenly
spaced video frames (PyAV). Every failure names the file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.errors import GcmrError
from gcmr.extras import require

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"})
EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "video": VIDEO_EXTENSIONS}
ALL_EXTENSIONS = IMAGE_EXTENSIONS | AUDIO_EXTENSIONS | VIDEO_EXTENSIONS


def modality_of(path: str | Path) -> str | None:
    """The media modality implied by a file extension, or None."""
    suffix = Path(path).suffix.lower()
    for modality, exts in EXTENSIONS.items():
        if suffix in exts:
            return modality
    return None


def guess_modality(paths: Iterable[str | Path]) -> str:
    """The single modality of a list of media files; mixed or unknown lists are an error."""
    found: dict[str, str] = {}
    for p in paths:
        m = modality_of(p)
        if m is None:
            raise GcmrError(f"{p}: unknown media extension (known: "
                            f"{', '.join(sorted(ALL_EXTENSIONS))})")
        found.setdefault(m, str(p))
    if len(found) > 1:
        kinds = ", ".join(f"{m} (e.g. {p})" for m, p in found.items())
        raise GcmrError(f"mixed media modalities: {kinds}; pass --modality or split the files")
    if not found:
        raise GcmrError("no media files")
    return next(iter(found))


def list_media(root: str | Path, modality: str | None = None) -> list[Path]:
    """Media files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise GcmrError(f"{root}: not a directory")
    exts = EXTENSIONS[modality] if modality else ALL_EXTENSIONS
    return sorted(p for p in root.rglob("*")
                  if p.suffix.lower() in exts and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


# ----------------------------------------------------------------------------- images


def load_image(path: str | Path) -> Any:
    """Open an image as RGB PIL (fully decoded, file closed)."""
    pil = require("PIL.Image", "encoders", purpose="reading images")
    try:
        with pil.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise GcmrError(f"{path}: image file not found") from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, ValueError...
        raise GcmrError(f"{path}: cannot decode image ({exc})") from exc


def resize_center_crop(image: Any, size: int, *, resize: int | None = None) -> Any:
    """Resize the short side to ``resize`` (default ``size``) with bicubic, then center-crop
    ``size`` x ``size``: the standard ImageNet/CLIP evaluation transform."""
    pil = require("PIL.Image", "encoders", purpose="reading images")
    resize = resize or size
    w, h = image.size
    scale = resize / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), pil.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_to_tensor(image: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """PIL RGB -> normalized float tensor [3, H, W]."""
    import torch

    arr = np.asarray(image, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / s


# ----------------------------------------------------------------------------- audio


def load_audio(path: str | Path, *, sample_rate: int | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 in [-1, 1]; resample to ``sample_rate`` if given.

    soundfile reads WAV/FLAC/OGG; anything else (mp3, m4a, or a video's audio track) goes
    through PyAV. Returns ``(waveform, rate)``.
    """
    path = Path(path)
    if not path.is_file():
        raise GcmrError(f"{path}: audio file not found")
    wav: np.ndarray | None = None
    rate = 0
    try:
        import soundfile

        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            wav = data.mean(axis=1)
        except Exception:  # noqa: BLE001 - unsupported by libsndfile -> try PyAV
            wav = None
    except ImportError:
        wav = None
    if wav is None:
        wav, rate = _load_audio_av(path)
    if max_seconds is not None:
        wav = wav[: int(max_seconds * rate)]
    if sample_rate is not None and rate != sample_rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), int(rate)


def _load_audio_av(path: Path) -> tuple[np.ndarray, int]:
    av = require("av", "encoders", purpose="decoding audio")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise GcmrError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate)
            chunks = []
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.dtype.kind in "iu":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                arr = arr.astype(np.float32, copy=False)
                if frame.format.is_planar:
                    arr = arr.mean(axis=0)  # [channels, samples]
                else:
                    channels = len(frame.layout.channels)
                    arr = arr.reshape(-1, channels).mean(axis=1)  # packed [1, samples*channels]
                chunks.append(arr)
    except GcmrError:
        raise
    except Exception as exc:
        raise GcmrError(f"{path}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise GcmrError(f"{path}: audio stream is empty")
    return np.concatenate(chunks), rate


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a mono waveform: torchaudio if installed, else scipy's polyphase filter, else
    linear interpolation (adequate for embedding models, which band-limit anyway)."""
    if orig_rate == new_rate:
        return wav
    try:
        import torch
        import torchaudio.functional as taf

        return taf.resample(torch.from_numpy(np.asarray(wav, dtype=np.float32)),
                            orig_rate, new_rate).numpy()
    except ImportError:
        pass
    try:
        from scipy.signal import resample_poly

        g = gcd(int(orig_rate), int(new_rate))
        return resample_poly(wav, new_rate // g, orig_rate // g).astype(np.float32)
    except ImportError:
        n = round(len(wav) * new_rate / orig_rate)
        x_old = np.arange(len(wav), dtype=np.float64) / orig_rate
        x_new = np.arange(n, dtype=np.float64) / new_rate
        return np.interp(x_new, x_old, wav).astype(np.float32)


# ----------------------------------------------------------------------------- video


def sample_video_frames(path: str | Path, num_frames: int) -> list[Any]:
    """``num_frames`` evenly spaced RGB frames (PIL) of a video, decoded with PyAV.

    Frame ``i`` is the first frame at or after time ``(i + 0.5) / num_frames * duration`` (the
    centre of each of ``num_frames`` equal segments, as in TSN / CLIP4Clip uniform sampling).
    When the container does not state a duration, all frames are decoded and indexed evenly.
    A short video yields repeated frames so the count is always ``num_frames``.
    """
    av = require("av", "encoders", purpose="decoding video")
    path = Path(path)
    if not path.is_file():
        raise GcmrError(f"{path}: video file not found")
    if num_frames < 1:
        raise GcmrError(f"frames per video must be >= 1, got {num_frames}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise GcmrError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            duration = _duration_seconds(container, stream)
            if duration and duration > 0:
                frames = _frames_at_times(container, stream, duration, num_frames)
            else:
                frames = []
            if not frames:
                container.seek(0)
                every = list(container.decode(stream))
                if not every:
                    raise GcmrError(f"{path}: video has no decodable frames")
                idx = np.linspace(0, len(every) - 1, num_frames).round().astype(int)
                frames = [every[i].to_image() for i in idx]
    except GcmrError:
        raise
    except Exception as exc:
        raise GcmrError(f"{path}: cannot decode video ({exc})") from exc
    return frames


def _duration_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * Fraction(stream.time_base))
    if container.duration is not None:
        return container.duration / 1_000_000.0  # av.time_base is microseconds
    return None


def _frames_at_times(container: Any, stream: Any, duration: float, num_frames: int) -> list[Any]:
    targets = [(i + 0.5) / num_frames * duration for i in range(num_frames)]
    start = float(stream.start_time * Fraction(stream.time_base)) if stream.start_time else 0.0
    out: list[Any] = []
    last = None
    k = 0
    for frame in container.decode(stream):
        t = (frame.time if frame.time is not None else 0.0) - start
        last = frame
        while k < num_frames and t >= targets[k]:
            out.append(frame.to_image())
            k += 1
        if k >= num_frames:
            break
    if last is not None:
        while len(out) < num_frames:  # stated duration longer than the stream: reuse the last
            out.append(last.to_image())
    return out
