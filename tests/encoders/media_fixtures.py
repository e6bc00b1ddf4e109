"""Builders for tiny media files and tiny random-weight models, saved to disk so tests load
them back through the same code path a user's checkpoint takes (no downloads).

Imported by tests/encoders/conftest.py and tests/corpus/importers/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["a", "the", "dog", "cat", "man", "woman", "child", "on", "in", "with", "red", "blue",
         "green", "is", "are", "playing", "sitting", "running", "grass", "street", "beach",
         "water", "ball", "car", "bird", "music", "loud", "quiet", "noise", "rain", "wind",
         "people", "talking", "guitar", "engine"]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]"]


# ----------------------------------------------------------------------------- media files


def write_image(path: Path, *, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    """A PNG with a few random colour blocks (distinct per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        arr[y0:y0 + rng.integers(4, 16), x0:x0 + rng.integers(4, 16)] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def write_wav(path: Path, *, freq: float = 440.0, seconds: float = 0.5, rate: int = 16000,
              channels: int = 1) -> Path:
    """A sine tone WAV (16-bit PCM) via the stdlib ``wave`` module."""
    import wave

    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.repeat(mono[:, None], channels, axis=1)
    pcm = (data * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def frame_colour(i: int) -> tuple[int, int, int]:
    """The flat colour of frame ``i`` in :func:`write_mp4` (red channel encodes the index)."""
    return (min(255, 10 + 20 * i), 128, 255 - min(255, 10 + 20 * i))


def write_mp4(path: Path, *, frames: int = 12, fps: int = 6, size: tuple[int, int] = (64, 48),
              seed: int | None = None) -> Path:
    """An MPEG-4 video via PyAV: flat frames whose colour encodes the frame index (so tests can
    check which frames were sampled), or random blocks per ``seed``."""
    import av
    from PIL import Image

    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed) if seed is not None else None
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            arr = np.zeros((h, w, 3), dtype=np.uint8)
            arr[:] = frame_colour(i) if rng is None else rng.integers(0, 256, 3)
            frame = av.VideoFrame.from_image(Image.fromarray(arr))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------- tokenizers


def fast_tokenizer(directory: Path, *, max_length: int = 16, template: bool = True):
    """A tiny word-level fast tokenizer saved with ``save_pretrained`` (AutoTokenizer loads it)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]",
                                   model_max_length=max_length)
    fast.save_pretrained(directory)
    return fast


def vocab_size() -> int:
    return len(SPECIALS) + len(WORDS)


# ----------------------------------------------------------------------------- tiny models

_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 2}
_VISION = {**_TEXT, "image_size": 32, "patch_size": 8}


def tiny_clip_dir(directory: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(_TEXT, vocab_size=vocab_size(), max_position_embeddings=16,
                                      bos_token_id=2, eos_token_id=3, pad_token_id=0),
                     vision_config=_VISION, projection_dim=16)
    CLIPModel(cfg).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                       ).save_pretrained(directory)
    fast_tokenizer(directory)
    return directory


def tiny_siglip_dir(directory: Path) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    cfg = SiglipConfig(text_config=dict(_TEXT, vocab_size=vocab_size(), max_position_embeddings=16,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3),
                       vision_config=_VISION)
    SiglipModel(cfg).save_pretrained(directory)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    fast_tokenizer(directory)
    return directory


def tiny_clap_dir(directory: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(0)
    cfg = ClapConfig(
        text_config=dict(_TEXT, vocab_size=vocab_size(), max_position_embeddings=40,
                         type_vocab_size=1, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        audio_config={"spec_size": 64, "num_mel_bins": 16, "window_size": 4, "depths": [1, 1],
                      "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 8,
                      "hidden_size": 16, "patch_stride": [4, 4], "patch_size": 4,
                      "enable_fusion": False},
        projection_dim=16)
    ClapModel(cfg).save_pretrained(directory)
    # 16 kHz, 1 s windows: tiny and cheap; the loader resamples every file to this rate
    ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                         fft_window_size=400, truncation="rand_trunc", padding="repeatpad"
                         ).save_pretrained(directory)
    fast_tokenizer(directory)
    return directory


def tiny_open_clip(directory: Path) -> tuple[Path, Path]:
    """A tiny open_clip model config JSON and a safetensors checkpoint of random weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                          "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                        "layers": 1}}
    config = directory / "gcmr-tiny-vit.json"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("gcmr-tiny-vit")
    ckpt = directory / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return config, ckpt


def _bert_tokenizer():
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
    return BertTokenizer(vocab=vocab, model_max_length=32)


def tiny_git_dir(directory: Path) -> Path:
    import torch
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    cfg = GitConfig(vision_config=_VISION, vocab_size=vocab_size(), hidden_size=32,
                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=64, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    GitForCausalLM(cfg).save_pretrained(directory)
    GitProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                    crop_size={"height": 32, "width": 32}),
                 tokenizer=_bert_tokenizer()).save_pretrained(directory)
    return directory


def tiny_blip_dir(directory: Path) -> Path:
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(0)
    cfg = BlipConfig(
        text_config=dict(_TEXT, vocab_size=vocab_size(), max_position_embeddings=64,
                         bos_token_id=2, sep_token_id=3, eos_token_id=3, pad_token_id=0,
                         encoder_hidden_size=32),
        vision_config=_VISION, projection_dim=16)
    BlipForConditionalGeneration(cfg).save_pretrained(directory)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=_bert_tokenizer()).save_pretrained(directory)
    return directory
