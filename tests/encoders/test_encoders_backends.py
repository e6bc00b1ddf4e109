"""Every backend's real loading and encoding code, on tiny random-weight models saved to disk
and loaded back through the user's path, plus the two real offline packages (EfficientNet-Lite0
on scikit-image photos, all-MiniLM-L6-v2)."""

from __future__ import annotations

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.encoders import l2_normalize, load_encoder, load_text_encoder
from gcmr.errors import ConfigError, GcmrError, MissingExtraError


def _unit_rows(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4))


# ----------------------------------------------------------------------------- real offline models


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image's bundled photos, plus two different crops of the astronaut."""
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        out[name] = d / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(out[name])
    astro = data.astronaut()  # 512 x 512
    out["astro_crop_a"] = d / "astro_a.png"
    Image.fromarray(astro[20:480, 10:470]).save(out["astro_crop_a"])
    out["astro_crop_b"] = d / "astro_b.png"
    Image.fromarray(astro[40:500, 40:500][:, ::-1]).save(out["astro_crop_b"])  # shifted + mirrored
    return out


def test_efficientnet_lite0_real_weights_on_photos(photos):
    enc = load_encoder("efficientnet-lite0", batch_size=4)
    assert enc.dim == 1280 and enc.name == "efficientnet-lite0" and not enc.has_text
    names = ["astronaut", "astro_crop_a", "astro_crop_b", "coffee", "chelsea", "rocket"]
    emb = enc.encode_media([photos[n] for n in names])
    assert emb.shape == (6, 1280) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and _unit_rows(emb)
    sim = emb @ emb.T
    # two crops of the same photo are closer to each other than to any other photo
    a, b = names.index("astro_crop_a"), names.index("astro_crop_b")
    others = [names.index(n) for n in ("coffee", "chelsea", "rocket")]
    assert sim[a, b] > max(sim[a, o] for o in others)
    assert sim[b, names.index("astronaut")] > max(sim[b, o] for o in others)
    # batching does not change the result
    one_by_one = np.concatenate([enc.encode_media([photos[n]]) for n in names[:3]])
    assert np.allclose(one_by_one, emb[:3], atol=1e-5)
    with pytest.raises(GcmrError, match="no text tower"):
        enc.encode_text(["a cat"])


def test_efficientnet_classifier_recognizes_photos(photos):
    """The packaged weights are really ImageNet-trained: the head classifies the coffee photo as
    espresso/cup and the cat as a cat (guards the preprocessing constants)."""
    import torch
    from torchvision.models._meta import _IMAGENET_CATEGORIES as CLASSES

    from gcmr.encoders.media import load_image

    enc = load_encoder("efficientnet-lite0")
    x = torch.stack([enc.preprocess(load_image(photos[n])) for n in ("coffee", "chelsea")])
    with torch.inference_mode():
        top = enc.model(x).topk(3, dim=1).indices.tolist()
    assert {"espresso", "cup", "coffee mug"} & {CLASSES[i] for i in top[0]}
    assert any("cat" in CLASSES[i] for i in top[1])


def test_efficientnet_variant_without_weights_needs_a_file():
    with pytest.raises(ConfigError, match="efficientnet-lite2:/path"):
        load_encoder("efficientnet-lite2")
    with pytest.raises(ConfigError, match="unknown EfficientNet-Lite variant"):
        load_encoder("efficientnet-lite9")


def test_minilm_offline_text_encoder():
    enc = load_text_encoder("minilm")
    assert enc.dim == 384 and enc.name == "minilm"
    emb = enc.encode_text(["a dog runs on the grass", "a puppy running in a field",
                           "quarterly earnings fell sharply"])
    assert emb.shape == (3, 384) and _unit_rows(emb)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
    assert enc.encode_text([]).shape == (0, 384)


def test_sentence_transformers_spec_loads_a_local_dir():
    from gcmr.encoders.text import minilm_path

    enc = load_text_encoder(f"sentence-transformers:{minilm_path()}")
    ref = load_text_encoder("minilm")
    assert np.allclose(enc.encode_text(["hello"]), ref.encode_text(["hello"]), atol=1e-5)
    with pytest.raises(GcmrError, match="not found"):
        load_text_encoder("st:./no/such/model")


# ----------------------------------------------------------------------------- tiny models


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_image_text_encoders(kind, clip_dir, siglip_dir, images):
    src = clip_dir if kind == "clip" else siglip_dir
    enc = load_encoder(f"hf-{kind}:{src}", batch_size=2)
    assert enc.has_text and enc.modality == "image"
    emb = enc.encode_media(images)
    assert emb.shape == (len(images), enc.dim) and _unit_rows(emb)
    assert np.allclose(emb, enc.encode_media(images), atol=1e-6)  # deterministic
    assert not np.allclose(emb[0], emb[1], atol=1e-3)  # different images differ
    txt = enc.encode_text(["a dog on the grass", "a red car", "a dog on the grass"])
    assert txt.shape == (3, enc.dim) and _unit_rows(txt)
    assert np.allclose(txt[0], txt[2], atol=1e-5) and not np.allclose(txt[0], txt[1], atol=1e-3)


def test_hf_loader_errors(tmp_path, clap_dir):
    with pytest.raises(GcmrError, match="no config.json"):
        load_encoder(f"hf-clip:{tmp_path}")
    with pytest.raises(GcmrError, match="not found"):
        load_encoder("hf-clip:./missing/dir")
    with pytest.raises(GcmrError, match="not a CLIP-like"):
        load_encoder(f"hf-clip:{clap_dir}")


def test_hf_clap_audio_and_text(clap_dir, tmp_path):
    # 8 kHz stereo and 22.05 kHz mono files: both are mixed down and resampled to 16 kHz
    a = mf.write_wav(tmp_path / "a.wav", freq=300, seconds=0.6, rate=8000, channels=2)
    b = mf.write_wav(tmp_path / "b.wav", freq=2000, seconds=1.5, rate=22050)
    enc = load_encoder(f"hf-clap:{clap_dir}", modality="audio")
    assert enc.sample_rate == 16000 and enc.has_text
    emb = enc.encode_media([a, b])
    assert emb.shape == (2, enc.dim) and _unit_rows(emb)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    txt = enc.encode_text(["loud engine noise", "rain"])
    assert txt.shape == (2, enc.dim) and _unit_rows(txt)
    with pytest.raises(ConfigError, match="embeds audio, not image"):
        load_encoder(f"hf-clap:{clap_dir}", modality="image")


def test_open_clip_config_json_and_checkpoint(open_clip_files, images):
    config, ckpt = open_clip_files
    enc = load_encoder(f"open_clip:{config}:{ckpt}")
    assert enc.dim == 16 and enc.has_text
    emb = enc.encode_media(images[:3])
    assert emb.shape == (3, 16) and _unit_rows(emb)
    # the checkpoint was really loaded: the same weights as the model the fixture saved
    import open_clip
    import torch
    from safetensors.torch import load_file

    ref = open_clip.create_model(config.stem)
    ref.load_state_dict(load_file(str(ckpt)))
    ref.eval()
    x = torch.stack([enc.preprocess(__import__("PIL.Image").Image.open(p).convert("RGB"))
                     for p in images[:3]])
    with torch.inference_mode():
        expected = l2_normalize(ref.encode_image(x).numpy())
    assert np.allclose(emb, expected, atol=1e-5)
    assert enc.encode_text(["a dog", "a cat"]).shape == (2, 16)


def test_open_clip_errors(tmp_path):
    with pytest.raises(ConfigError, match="open_clip has no model"):
        load_encoder("open_clip:NoSuchNet-B-99")
    with pytest.raises(GcmrError, match="checkpoint file not found"):
        load_encoder(f"open_clip:ViT-B-32:{tmp_path}/missing.pt")
    with pytest.raises(GcmrError, match="model config not found"):
        load_encoder(f"open_clip:{tmp_path}/missing.json")


def test_video_frame_pooling_is_mean_of_normalized_frames(clip_dir, tmp_path):
    from gcmr.encoders.media import sample_video_frames
    from gcmr.encoders.video import FramePoolEncoder

    v1 = mf.write_mp4(tmp_path / "v1.mp4", frames=10, seed=1)
    v2 = mf.write_mp4(tmp_path / "v2.mp4", frames=10)
    enc = load_encoder(f"hf-clip:{clip_dir}", modality="video", frames=4)
    assert isinstance(enc, FramePoolEncoder) and enc.modality == "video" and enc.has_text
    emb = enc.encode_media([v1, v2])
    assert emb.shape == (2, enc.dim) and _unit_rows(emb)
    frames = enc.image_encoder.encode_images(sample_video_frames(v2, 4))
    assert np.allclose(emb[1], l2_normalize(frames.mean(axis=0, keepdims=True))[0], atol=1e-5)
    assert enc.encode_text(["a dog"]).shape == (1, enc.dim)
    with pytest.raises(ConfigError, match="video needs an image encoder"):
        FramePoolEncoder(load_text_encoder("minilm"))


def test_precomputed_lookup_by_id_source_or_stem(tmp_path):
    from gcmr.encoders.precomputed import PrecomputedEncoder

    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "emb.npy", arr)
    (tmp_path / "emb.ids.txt").write_text("a\nimgs/b.jpg\nc\nd\n")
    enc = load_encoder(f"precomputed:{tmp_path / 'emb.npy'}")
    assert isinstance(enc, PrecomputedEncoder) and enc.dim == 3
    got = enc.encode_items(["d", "x", "q"], ["other/d.png", "imgs/b.jpg", "zz/c.png"])
    assert np.array_equal(got, arr[[3, 1, 2]])  # raw vectors, not normalized
    (tmp_path / "ids2.txt").write_text("a\nb\nc\nd\n")
    enc2 = load_encoder(f"precomputed:{tmp_path / 'emb.npy'}:{tmp_path / 'ids2.txt'}")
    assert np.array_equal(enc2.encode_items(["b"], ["whatever"]), arr[[1]])
    with pytest.raises(GcmrError, match="not in the precomputed id list"):
        enc2.encode_items(["nope"], ["nope.png"])
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(GcmrError, match="2 ids but"):
        load_encoder(f"precomputed:{tmp_path / 'emb.npy'}:{tmp_path / 'short.txt'}")


def test_imagebind_missing_says_what_to_install():
    pytest.importorskip("gcmr")  # always present; ImageBind is not installed in CI
    try:
        import imagebind  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only where ImageBind exists
        pytest.skip("imagebind is installed here")
    with pytest.raises(MissingExtraError, match="pip install git\\+https://github.com/"
                                                "facebookresearch/ImageBind") as info:
        load_encoder("imagebind:/models/imagebind_huge.pth")
    assert "imagebind_huge.pth" in str(info.value) and "open_clip" in str(info.value)


def test_spec_errors():
    with pytest.raises(ConfigError, match="unknown encoder 'clip-xl'"):
        load_encoder("clip-xl")
    with pytest.raises(ConfigError, match="empty encoder spec"):
        load_encoder("  ")
    with pytest.raises(ConfigError, match="needs a model"):
        load_encoder("hf-clip:")
    with pytest.raises(ConfigError, match="no text tower"):
        load_text_encoder("efficientnet-lite0")
    with pytest.raises(ConfigError, match="for audio use hf-clap"):
        load_encoder("efficientnet-lite0", modality="audio")


def test_device_and_precision_selection():
    import torch

    from gcmr.encoders.base import select_device, select_dtype

    dev = select_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    assert select_dtype("auto", torch.device("cpu")) == torch.float32
    assert select_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        select_dtype("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("cuda")


def _fake_imagebind(monkeypatch):
    """Install a stand-in ``imagebind`` package with ImageBind's API (imagebind_huge,
    ModalityType, data.load_and_transform_text/audio_data) around a tiny random model, so the
    wrapper's checkpoint loading and per-modality dispatch run; the real model is not here."""
    import sys
    import types

    import torch

    class ModalityType:
        VISION, TEXT, AUDIO = "vision", "text", "audio"

    class TinyBind(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = torch.nn.Linear(3 * 4 * 4, 1024)
            self.text = torch.nn.Embedding(100, 1024)
            self.audio = torch.nn.Linear(16, 1024)

        def forward(self, inputs):
            out = {}
            for key, x in inputs.items():
                if key == "vision":
                    assert x.shape[1:] == (3, 224, 224)
                    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4)
                    out[key] = self.vision(pooled.flatten(1))
                elif key == "text":
                    out[key] = self.text(x).mean(1)
                else:
                    out[key] = self.audio(x)
            return {k: torch.nn.functional.normalize(v, dim=-1) for k, v in out.items()}

    model_mod = types.ModuleType("imagebind.models.imagebind_model")
    model_mod.ModalityType = ModalityType
    model_mod.imagebind_huge = lambda pretrained=False: TinyBind()
    data_mod = types.ModuleType("imagebind.data")
    data_mod.load_and_transform_text = lambda texts, device: torch.tensor(
        [[len(t) % 100, sum(map(ord, t)) % 100] for t in texts], device=device)
    data_mod.load_and_transform_audio_data = lambda paths, device: torch.stack(
        [torch.full((16,), float(len(str(p)) % 7)) for p in paths]).to(device)
    for name, mod in {"imagebind": types.ModuleType("imagebind"),
                      "imagebind.models": types.ModuleType("imagebind.models"),
                      "imagebind.models.imagebind_model": model_mod,
                      "imagebind.data": data_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return TinyBind


def test_imagebind_wrapper_with_a_stand_in_package(monkeypatch, tmp_path, images):
    import torch

    tiny = _fake_imagebind(monkeypatch)
    with pytest.raises(GcmrError, match="missing.pth: ImageBind checkpoint not found"):
        load_encoder(f"imagebind:{tmp_path / 'missing.pth'}")
    torch.manual_seed(1)
    ref = tiny()
    ckpt = tmp_path / "imagebind_huge.pth"
    torch.save(ref.state_dict(), ckpt)
    enc = load_encoder(f"imagebind:{ckpt}", modality="image")
    assert enc.dim == 1024 and enc.has_text
    assert torch.equal(enc.model.vision.weight, ref.vision.weight)  # the checkpoint was loaded
    emb = enc.encode_media(images[:2])
    assert emb.shape == (2, 1024) and _unit_rows(emb)
    assert enc.encode_text(["a dog", "a cat"]).shape == (2, 1024)
    audio = load_encoder(f"imagebind:{ckpt}", modality="audio")
    assert audio.modality == "audio" and audio.encode_media(["x.wav", "yy.wav"]).shape == (2, 1024)
    video = load_encoder(f"imagebind:{ckpt}", modality="video", frames=2)
    assert video.encode_media([mf.write_mp4(tmp_path / "v.mp4", frames=4)]).shape == (1, 1024)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GcmrError, match="not an ImageBind-huge checkpoint"):
        load_encoder(f"imagebind:{tmp_path / 'bad.pth'}")
