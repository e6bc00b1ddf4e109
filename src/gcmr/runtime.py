"""Devices, threads, mixed precision and the torchrun world: the one place that turns a device
name into a ``torch.device``, an ``amp`` setting into an autocast context, and torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) into a process group."""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

from gcmr.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "off", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA, else MPS, else CPU; an explicit device must be available. Under
    torchrun, ``auto`` and ``cuda`` mean this rank's GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return local_cuda()
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    if name == "cuda":
        return local_cuda()
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use one of {list(DEVICES)})") from exc


def local_cuda() -> torch.device:
    """``cuda``, or under torchrun this rank's GPU ``cuda:LOCAL_RANK`` (modulo the GPUs
    visible, so a node with fewer GPUs than ranks shares them)."""
    w = world()
    if not w.distributed:
        return torch.device("cuda")
    return torch.device("cuda", w.local_rank % max(1, torch.cuda.device_count()))


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


# ----------------------------------------------------------------------------- torchrun


# how long a rank waits for the others at a collective (rank 0 validating an epoch, or merging a
# sharded embedding, keeps them waiting); torch's defaults are 10 min (nccl) and 30 min (gloo)
COLLECTIVE_TIMEOUT_MIN = 60.0


@dataclass(frozen=True)
class World:
    """This process's place among the processes ``torchrun`` started (one process: rank 0 of
    a world of size 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes artifacts, logs and progress."""
        return self.rank == 0


def world() -> World:
    """The world ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (unset:
    a single process). Inconsistent values are a :class:`ConfigError`."""
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        raw = os.environ.get(name, default)
        try:
            values[name] = int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer "
                              f"(set by torchrun)") from None
    rank, size, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"inconsistent torchrun environment: RANK={rank}, "
                          f"WORLD_SIZE={size}, LOCAL_RANK={local}")
    return World(rank, size, local)


def process_group() -> World:
    """Join torchrun's default process group (once per process, when ``WORLD_SIZE > 1``):
    nccl where CUDA is available (each rank on GPU ``LOCAL_RANK``), else gloo. Returns the
    world; a single process initializes nothing."""
    w = world()
    if not w.distributed:
        return w
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; cannot run under torchrun")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(w.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend, timeout=datetime.timedelta(
            minutes=COLLECTIVE_TIMEOUT_MIN))
        atexit.register(_leave_process_group)
    return w


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if process_group().distributed:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast(value: Any, *, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (a JSON-able value: sent as JSON text)."""
    if not process_group().distributed:
        return value
    import json

    import torch.distributed as dist

    box = [json.dumps(value) if world().rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return json.loads(box[0])
