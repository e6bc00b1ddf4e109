"""Devices, threads and mixed precision: the one place that turns a device name into a
``torch.device`` and an ``amp`` setting into an autocast context."""

from __future__ import annotations

import torch

from gcmr.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "off", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA, else MPS, else CPU; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use one of {list(DEVICES)})") from exc


def autocast(amp: str, device: torch.device):
    """The autocast context of ``amp``: ``auto`` is bf16 on CUDA and off elsewhere."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    mode = amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "off"
    if mode == "off":
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type,
                          dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def set_threads(num_threads: int) -> None:
    """``torch.set_num_threads`` when ``num_threads > 0`` (0 keeps torch's default)."""
    if num_threads < 0:
        raise ConfigError(f"num_threads must be >= 0, got {num_threads}")
    if num_threads > 0:
        torch.set_num_threads(num_threads)
