"""Data-parallel training under ``torchrun`` (DistributedDataParallel) and gradient
accumulation, for the one training loop (:func:`gcmr.train.loop.fit`).

What makes N ranks train the model that one process trains:

- **the data**: every rank draws the same seeded permutation of the pairs. An optimizer step
  takes its next ``batch_size * grad_accum`` pairs (the *step*), cut into ``grad_accum``
  micro-batches of ``batch_size`` pairs, each cut into one contiguous slice per rank (sizes
  differ by at most one). ``batch_size`` is the global batch whatever the number of ranks, so
  the same command trains the same model on 1, 2 or 8 GPUs, and a checkpoint (which holds
  only global state: weights, optimizer, step counters) resumes on any number of ranks;
- **the loss scale**: a rank's loss is a mean over its slice of ``b`` pairs; it is scaled by
  ``N * b / B`` (``B`` the pairs of the step). DDP averages the gradients over the ``N``
  ranks and the micro-batches add up, so the gradient is that of the mean over the step, as
  one process computes it for a batch of ``B`` (a last, short step included);
- **in-batch negatives**: a loss that compares the pairs of a batch with each other (InfoNCE)
  calls :func:`gather_batch` on its batch-sized tensors and so sees the whole micro-batch of
  all ranks, in the single-process order. The gather keeps the gradient; its backward sums
  the ranks' gradients, and as the scales of the ranks add up to ``N * b_micro / B`` the
  averaged result is again the single-process gradient. Gradient accumulation cannot do this:
  its micro-batches run one after the other, so their negatives are per micro-batch
  (``--grad-accum K`` with ``--batch-size B/K`` equals ``--batch-size B`` exactly for
  per-pair losses, CE and R-Drop, but not for the InfoNCE terms);
- **randomness**: dropout is seeded per (seed, epoch, rank), rank 0 as a single process.
  Runs are deterministic for a given number of ranks; dropout masks differ between 1 and N
  ranks (the equivalence is exact with dropout 0, statistical otherwise).

Only rank 0 writes (artifacts, logs, progress) and validates; the others wait for it at the
end of each epoch, when rank 0 shares the run's counters (model selection, early stopping).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gcmr.runtime import World, barrier, broadcast, process_group, world

__all__ = ["MicroBatch", "Replicas", "gather_batch", "is_main", "main_first", "main_only",
           "shared_tokenizer", "split_sizes"]


def split_sizes(n: int, parts: int) -> list[int]:
    """``n`` items in ``parts`` contiguous slices whose sizes differ by at most one (the first
    ``n % parts`` slices get one more)."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class MicroBatch:
    """One rank's part of a micro-batch: ``index`` the pair indices it computes, ``counts``
    every rank's number of pairs (in rank order), ``scale`` the factor of its loss."""

    index: torch.Tensor
    counts: tuple[int, ...]
    scale: float
    rank: int

    @property
    def pairs(self) -> int:
        """The pairs this rank contributes (0 for a rank left without any, which computes one
        pair of the micro-batch at scale 0 so that the collectives stay in step)."""
        return self.counts[self.rank]


def plan_step(step: torch.Tensor, batch_size: int, w: World) -> list[MicroBatch]:
    """The micro-batches of an optimizer step over the pair indices ``step``, for this rank."""
    total = int(step.shape[0])
    out = []
    for start in range(0, total, batch_size):
        micro = step[start:start + batch_size]
        counts = split_sizes(int(micro.shape[0]), w.size)
        lo = sum(counts[:w.rank])
        mine = micro[lo:lo + counts[w.rank]] if counts[w.rank] else micro[:1]
        out.append(MicroBatch(mine, tuple(counts), w.size * counts[w.rank] / total, w.rank))
    return out


# the layout of the micro-batch being computed: (counts per rank, this rank, gather group)
_LAYOUT: ContextVar[tuple[tuple[int, ...], int, Any] | None] = ContextVar("gcmr_batch_layout",
                                                                          default=None)


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` (this rank's slice of a micro-batch, first dimension) of every rank,
    concatenated in rank order, i.e. in the order one process would hold the micro-batch.
    Differentiable when ``x`` requires grad (gradients flow back to the rank that computed
    each row). Outside a distributed training step it returns ``x`` itself."""
    layout = _LAYOUT.get()
    if layout is None:
        return x
    counts, _, group = layout
    import torch.distributed as dist

    width = max(counts)
    if x.shape[0] < width:  # all_gather needs one shape on every rank
        x = torch.cat([x, x.new_zeros((width - x.shape[0], *x.shape[1:]))])
    if x.requires_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(x, group=group)
    else:
        parts = [torch.empty_like(x) for _ in counts]
        dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


class _LossModule(torch.nn.Module):
    """The loss as a module, so that everything it does with the model runs inside DDP's
    forward (the loss functions call the model's methods, not only ``forward``)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, index: torch.Tensor):
        return self.loss_fn(self.model, index)


_GROUPS: dict[str, Any] = {}


def _group(name: str, backend: str | None = None) -> Any:
    """A process group of all ranks, created once per process (every rank creates the same
    groups in the same order, as ``new_group`` requires)."""
    import torch.distributed as dist

    if name not in _GROUPS:
        _GROUPS[name] = dist.new_group(backend=backend)
    return _GROUPS[name]


class Replicas:
    """How :func:`~gcmr.train.loop.fit` computes its minibatches: in this process, or as one
    of torchrun's ranks with the model wrapped in DistributedDataParallel."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, device: torch.device) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.world = process_group()
        self.device = device
        self.ddp = None
        self.group = None
        if not self.world.distributed:
            return
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        # DDP needs the backend of the device's tensors: the default group is nccl on a CUDA
        # machine, so a run on its CPUs gets a gloo group
        cpu = device.type != "cuda"
        if cpu and dist.get_backend() != "gloo":
            self.group = _group("gloo", "gloo")
        # the losses' gathers run during backward, beside DDP's gradient all-reduce: their own
        # communicator keeps the two streams of collectives apart
        self.gather_group = _group(f"gather-{'gloo' if cpu else 'default'}",
                                   "gloo" if cpu else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "find_unused_parameters=True ... but found none"
            self.ddp = DistributedDataParallel(
                _LossModule(model, loss_fn),
                device_ids=[device] if device.type == "cuda" else None,
                process_group=self.group, broadcast_buffers=False,
                # a method may leave parameters unused (AVG's, a T5 head's); those keep no grad
                find_unused_parameters=True)

    def plan(self, step: torch.Tensor, batch_size: int) -> list[MicroBatch]:
        return plan_step(step, batch_size, self.world)

    @contextlib.contextmanager
    def micro_step(self, micro: MicroBatch, *, sync: bool) -> Iterator[None]:
        """The context of one micro-batch's forward and backward: its layout for
        :func:`gather_batch`; DDP's gradient all-reduce only when ``sync`` (the step's last)."""
        if self.ddp is None:
            yield
            return
        token = _LAYOUT.set((micro.counts, micro.rank, self.gather_group))
        try:
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                yield
        finally:
            _LAYOUT.reset(token)

    def forward(self, micro: MicroBatch):
        """``loss_fn(model, pairs)`` of this rank's pairs: ``(loss, parts)``."""
        if self.ddp is None:
            return self.loss_fn(self.model, micro.index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unused-parameters note, once per run
            return self.ddp(micro.index)

    def backward(self, loss: torch.Tensor, micro: MicroBatch) -> None:
        (loss if micro.scale == 1.0 else loss * micro.scale).backward()

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (so all of them stop together)."""
        ok = torch.isfinite(loss.detach()).all()
        if self.ddp is None:
            return bool(ok)
        import torch.distributed as dist

        flag = ok.to(self._comm_device, torch.int32).reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())

    def sum_across(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` summed over the ranks (every rank holds the same keys)."""
        if self.ddp is None or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                         device=self._comm_device)
        dist.all_reduce(t, group=self.group)
        return dict(zip(keys, t.tolist()))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" and self.group is None \
            else torch.device("cpu")

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` (JSON-able) on every rank."""
        return broadcast(value) if self.world.distributed else value


# ----------------------------------------------------------------------------- rank 0 writes


def is_main() -> bool:
    """Whether this process writes: rank 0, or the only process."""
    return world().main


def main_only(fn: Callable) -> Callable:
    """``fn`` runs on rank 0 only (returns ``None`` elsewhere): for functions that write."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first, the other ranks after it (e.g. building a disk cache that
    they then reuse instead of building it at the same time)."""
    main = is_main()
    if not main:
        barrier()
    yield
    if main:
        barrier()


def shared_tokenizer(tokenizer: Any, path: Path) -> Any:
    """Save ``tokenizer`` to ``path`` on rank 0; the other ranks load that file, so every rank
    tokenizes with rank 0's tokenizer even where training one is not deterministic
    (WordPiece). Returns the tokenizer to use."""
    w = world()
    if w.main:
        tokenizer.save(path)
    if not w.distributed:
        return tokenizer
    barrier()
    return tokenizer if w.main else type(tokenizer).load(path)


def rank_seed(seed: int, rank: int) -> int:
    """The dropout seed of a rank: rank 0 keeps ``seed`` (a single process's)."""
    return seed + 7_919 * rank


def counts_of(micros: Sequence[MicroBatch]) -> int:
    """The pairs of a step (all ranks)."""
    return sum(sum(m.counts) for m in micros)
