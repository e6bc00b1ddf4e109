"""Training checkpoints: model + optimizer state as safetensors, counters as JSON.

Optimizer state is flattened into named tensors (``state.<param>.<key>``) so nothing is
pickled; a checkpoint directory is replaced atomically at each epoch end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gcmr.artifacts import atomic_dir, load_tensors, save_tensors, write_json
from gcmr.errors import ArtifactError

CHECKPOINT = "checkpoint"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"state.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"optimizer state does not match the model: {exc}") from exc


def save_checkpoint(out: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> None:
    """Write ``out/checkpoint`` atomically (model, optimizer, training counters)."""
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    with atomic_dir(out / CHECKPOINT, overwrite=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict())
        save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        write_json(tmp / "state.json", {**state, "optimizer": opt_meta})


def load_checkpoint(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Return (model tensors, optimizer tensors, state) of ``out/checkpoint``."""
    ckpt = out / CHECKPOINT
    if not (ckpt / "state.json").is_file():
        raise ArtifactError(f"{ckpt}: no checkpoint to resume from (missing state.json)")
    try:
        state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{ckpt / 'state.json'}: corrupted ({exc})") from exc
    return load_tensors(ckpt / "model.safetensors"), load_tensors(ckpt / "optimizer.safetensors"), state
