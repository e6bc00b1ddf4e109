"""The one training loop of gcmr: CART, AVG and the dense tower differ only in their loss
function, their validation and what their manifest records.

:func:`fit` runs epochs of minibatch AdamW over ``num_pairs`` training pairs:

- data order and dropout are seeded per epoch from ``(seed, epoch)``, so resuming after epoch
  ``e`` gives the same weights as not stopping;
- the learning rate follows :func:`gcmr.train.schedule.lr_at` (linear warm-up, cosine annealing
  with optional warm restarts, CART appendix C), set before every step;
- bf16 autocast on CUDA (``TrainConfig.amp``), gradient clipping, a divergence check that stops
  with a clear message, ``max_steps``;
- ``grad_accum`` micro-batches of ``batch_size`` pairs per optimizer step, and under
  ``torchrun`` data parallelism (DistributedDataParallel, :mod:`gcmr.train.distributed`): each
  rank computes its slice of every micro-batch of the same global order, only rank 0 writes
  and validates, and the weights are those of one process with the same global batch;
- after every epoch: validation (``validate(model) -> metrics``), model selection on
  ``select_metric`` (the selected weights are written to ``model.safetensors`` when they
  improve), early stopping after ``patience`` epochs without improvement, one JSON line in
  ``train_log.jsonl``, a checkpoint (model, optimizer, counters) for ``--resume``, and the
  epoch line on stderr.

:func:`training_dir` decides where a run writes and makes ``--overwrite`` safe: a run that
replaces an existing model trains in a staging directory beside it and swaps it in only when
training is complete, so a crash or a diverged run leaves the old model loadable.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gcmr.artifacts import MANIFEST, recover, replace_dir
from gcmr.errors import ArtifactError, ConfigError
from gcmr.model.io import TRAIN_LOG, WEIGHTS, save_weights
from gcmr.progress import err_console, note, progress
from gcmr.runtime import autocast, barrier, broadcast, world
from gcmr.train.checkpoint import CHECKPOINT, load_checkpoint, load_optimizer, save_checkpoint
from gcmr.train.config import TrainConfig
from gcmr.train.distributed import Replicas, rank_seed
from gcmr.train.schedule import lr_at

# TrainConfig fields that may change between the run that wrote a checkpoint and --resume
RESUMABLE_CHANGES = {"epochs", "max_steps", "patience", "device", "num_threads"}
# what a training run writes before its first epoch ends (a directory holding only these is a
# run that died early, safe to restart)
RUN_FILES = {MANIFEST, "tokenizer.json", TRAIN_LOG, WEIGHTS, CHECKPOINT}

LossFn = Callable[[Any, torch.Tensor], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class TrainResult:
    out: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    num_pairs: int = 0


def new_state() -> dict[str, Any]:
    """The counters a checkpoint carries (``state.json``)."""
    return {"epoch": 0, "global_step": 0, "best_epoch": 0, "best_metrics": {},
            "best_score": None, "bad_epochs": 0, "history": []}


def passes_per_epoch(config: TrainConfig, num_pairs: int) -> int:
    """How many times an epoch goes over the ``num_pairs`` pairs: 1, or more when ``epochs``
    single passes would be fewer than ``config.min_steps`` optimizer steps (a small corpus)."""
    step = config.batch_size * config.grad_accum
    single = config.epochs * ((num_pairs + step - 1) // step)
    floor = config.resolved_min_steps
    if num_pairs < 1 or single >= floor:
        return 1
    per_epoch = -(-floor // config.epochs)  # steps each epoch needs
    return -(-per_epoch * step // num_pairs)  # passes that make at least that many


def pairs_record(pairs: Any, config: TrainConfig) -> dict[str, int]:
    """The manifest's ``data`` record of a run's training pairs (and the passes per epoch)."""
    return {"pairs": len(pairs), "caption_pairs": pairs.num_caption_pairs,
            "query_pairs": pairs.num_query_pairs,
            "min_steps": config.resolved_min_steps,
            "passes_per_epoch": passes_per_epoch(config, len(pairs))}


def schedule_for(config: TrainConfig, num_pairs: int) -> dict[str, Any]:
    """:func:`lr_at` arguments of a run: epochs of ``num_pairs`` pairs (times
    :func:`passes_per_epoch`) converted to steps (of ``batch_size * grad_accum`` pairs)."""
    step = config.batch_size * config.grad_accum
    steps_per_epoch = (num_pairs * passes_per_epoch(config, num_pairs) + step - 1) // step
    return {"peak": config.lr, "floor": config.min_lr,
            "warmup_steps": round(config.warmup_epochs * steps_per_epoch),
            "total_steps": config.epochs * steps_per_epoch,
            "restart_steps": round(config.restart_epochs * steps_per_epoch),
            "restart_mult": config.restart_mult}


def resume_state(workdir: Path, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load ``workdir/checkpoint`` into ``model`` and ``optimizer``; return the counters."""
    model_t, opt_t, saved = load_checkpoint(workdir)
    try:
        model.load_state_dict(model_t)
    except RuntimeError as exc:
        raise ArtifactError(f"{workdir / CHECKPOINT}: weights do not match the model "
                            f"({exc})") from exc
    load_optimizer(optimizer, opt_t, saved.pop("optimizer"))
    state = new_state()
    state.update(saved)
    return state


def check_resumable(manifest: dict[str, Any], config: TrainConfig, where: Path) -> None:
    """Refuse ``--resume`` with settings that would make the run a different one."""
    # a field the old run did not record yet had its default then
    old = {**TrainConfig().to_dict(), **manifest.get("train_config", {})}
    changed = sorted(k for k, v in config.to_dict().items()
                     if k not in RESUMABLE_CHANGES and old.get(k) != v)
    if changed:
        raise ConfigError(f"{where}: cannot resume with different settings {changed} "
                          f"(only {sorted(RESUMABLE_CHANGES)} may change)")


def validation_split(corpus: Any, config: TrainConfig) -> str | None:
    """``config.val_split`` when the corpus has it; ``None`` (the last epoch is kept) when
    validation is off or the split is missing (noted on stderr)."""
    if not config.val_split:
        return None
    if not corpus.queries.get(config.val_split):  # missing or empty
        note(f"{corpus.path} has no '{config.val_split}' split: no validation, the last epoch "
             f"is kept")
        return None
    return config.val_split


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *,
        num_pairs: int, config: TrainConfig, workdir: Path, device: torch.device,
        state: dict[str, Any] | None = None,
        validate: Callable[[Any], dict[str, float]] | None = None,
        epoch_info: Callable[[Any], dict[str, Any]] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        label: str = "epoch", show_progress: bool = True) -> dict[str, Any]:
    """Train ``model`` until ``config.epochs`` (or early stop / ``max_steps``); return the state.

    ``loss_fn(model, pair_indices) -> (loss, parts)`` computes the loss of one minibatch of
    pair indices (``parts`` holds floats to average per epoch, ``loss`` among them); it runs
    under the run's autocast. ``validate(model)`` returns the held-out metrics used for model
    selection (none: every epoch is selected, i.e. the last one is kept); ``epoch_info(model)``
    adds fields to the epoch record (e.g. the learned temperature); ``on_epoch(state)`` runs
    after each epoch's checkpoint (e.g. to refresh the manifest). ``state`` continues a resumed
    run (:func:`resume_state`).

    Under torchrun every rank calls :func:`fit`; ``validate``, ``epoch_info`` and ``on_epoch``
    run on rank 0 only, which then shares the counters (selection, early stop) with the others.
    """
    state = state or new_state()
    schedule = schedule_for(config, num_pairs)
    replicas = Replicas(model, loss_fn, device)
    main = replicas.world.main
    show_progress = show_progress and main
    passes = passes_per_epoch(config, num_pairs)
    if passes > 1 and main and show_progress:
        note(f"{num_pairs:,} training pairs: each of the {config.epochs} epochs passes over "
             f"them {passes} times, so that training takes at least "
             f"{config.resolved_min_steps} optimizer steps (--min-steps)")
    if state["epoch"] >= config.epochs and main:
        note(f"{workdir} already finished {state['epoch']} epochs (epochs = {config.epochs}); "
             f"raise --epochs to train further")
    stop = False
    while state["epoch"] < config.epochs and not stop:
        epoch = state["epoch"] + 1
        t0 = time.perf_counter()
        losses, seen = _run_epoch(replicas, optimizer, num_pairs, config, schedule, state,
                                  epoch, label, show_progress)
        seconds = time.perf_counter() - t0
        if main:
            stop = _finish_epoch(model, optimizer, config, schedule, state, epoch, losses, seen,
                                 seconds, workdir=workdir, validate=validate,
                                 epoch_info=epoch_info, on_epoch=on_epoch, label=label,
                                 show_progress=show_progress, ranks=replicas.world.size)
        shared, stop = replicas.share([state, stop])
        if shared is not state:  # a rank other than 0: rank 0's counters, in the same dict
            state.clear()
            state.update(shared)
    if main and not (workdir / WEIGHTS).is_file():  # no epoch ran (max_steps reached at once)
        save_weights(workdir / WEIGHTS, model.state_dict())
    return state


def _finish_epoch(model, optimizer, config: TrainConfig, schedule: dict, state: dict,
                  epoch: int, losses: dict[str, float], seen: int, seconds: float, *,
                  workdir: Path, validate, epoch_info, on_epoch, label: str,
                  show_progress: bool, ranks: int) -> bool:
    """Rank 0's end of an epoch: validation and model selection, the selected weights, the log
    line, the checkpoint. Updates ``state``; returns whether training stops."""
    stop = False
    record: dict[str, Any] = {"epoch": epoch, "step": state["global_step"], **losses}
    if epoch_info is not None:
        record.update(epoch_info(model))
    record.update({"lr": lr_at(max(0, state["global_step"] - 1), **schedule),
                   "seconds": round(seconds, 3),
                   "pairs": seen,  # fewer than all when max_steps stops early
                   "pairs_per_s": round(seen / max(seconds, 1e-9), 1)})
    if ranks > 1:
        record["ranks"] = ranks
    improved = True
    if validate is not None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = {k: round(float(v), 5) for k, v in validate(model).items()}
        model.train(was_training)
        record["val"] = metrics
        score = metrics[config.select_metric]
        improved = state["best_score"] is None or score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, best_metrics=metrics,
                         bad_epochs=0)
        else:
            state["bad_epochs"] += 1
            if config.patience and state["bad_epochs"] >= config.patience:
                stop = True
                record["early_stop"] = True
    else:
        state.update(best_epoch=epoch)
    if improved:
        save_weights(workdir / WEIGHTS, model.state_dict())
    state["epoch"] = epoch
    state["history"].append(record)
    if config.max_steps and state["global_step"] >= config.max_steps:
        stop = True
    with (workdir / TRAIN_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    save_checkpoint(workdir, model=model, optimizer=optimizer, state=state)
    if on_epoch is not None:
        on_epoch(state)
    if show_progress:
        _print_epoch(record, label)
    return stop


def _run_epoch(replicas: Replicas, optimizer, num_pairs: int, config: TrainConfig,
               schedule: dict, state: dict, epoch: int, label: str,
               show_progress: bool) -> tuple[dict[str, float], int]:
    """One epoch; returns the mean loss parts and the number of pairs trained on (all ranks).

    An optimizer step takes the next ``batch_size * grad_accum`` pairs of the epoch's order, in
    ``grad_accum`` micro-batches of ``batch_size`` pairs, each shared among the ranks
    (:func:`gcmr.train.distributed.plan_step`)."""
    model = replicas.model
    model.train()
    # data order and dropout depend only on (seed, epoch) (and the rank's dropout on its
    # rank): resuming reproduces them
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    torch.manual_seed(rank_seed(config.seed * 1_000_033 + epoch, replicas.world.rank))
    # a small corpus's epoch passes over its pairs several times (TrainConfig.min_steps),
    # each pass in its own order
    order = torch.cat([torch.randperm(num_pairs, generator=generator)
                       for _ in range(passes_per_epoch(config, num_pairs))])
    totals: dict[str, float] = {}
    seen = 0
    step_pairs = config.batch_size * config.grad_accum
    t0 = time.perf_counter()
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"{label} {epoch}/{config.epochs}", total=len(order), info="")
        for start in range(0, len(order), step_pairs):
            if config.max_steps and state["global_step"] >= config.max_steps:
                break
            step = order[start:start + step_pairs]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state["global_step"], **schedule) * group.get("lr_scale", 1.0)
            optimizer.zero_grad(set_to_none=True)
            micros = replicas.plan(step, config.batch_size)
            for i, micro in enumerate(micros):
                with replicas.micro_step(micro, sync=i == len(micros) - 1):
                    with autocast(config.amp, replicas.device):
                        loss, parts = replicas.forward(micro)
                    if not replicas.all_finite(loss):
                        raise ConfigError(f"training diverged at epoch {epoch}, step "
                                          f"{state['global_step']} (loss {loss.item()}); "
                                          f"lower --lr")
                    replicas.backward(loss, micro)
                for key, value in parts.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * micro.pairs
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state["global_step"] += 1
            n = int(step.shape[0])
            seen += n
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, advance=n, info=f"loss {parts['loss']:.3f}  {rate:,.0f} pairs/s")
    totals = replicas.sum_across(totals)
    return {k: round(v / max(seen, 1), 5) for k, v in totals.items()}, seen


def _print_epoch(record: dict, label: str) -> None:
    val = record.get("val")
    msg = f"{label} {record['epoch']}: loss {record.get('loss', float('nan')):.4f}  "
    if "temperature" in record:
        msg += f"temperature {record['temperature']:.4f}  "
    msg += f"{record['pairs_per_s']:,.0f} pairs/s  {record['seconds']:.1f}s"
    if val:
        msg += "  val " + "  ".join(f"{k} {v:.4f}" for k, v in val.items())
    err_console.print(msg, highlight=False)


# ----------------------------------------------------------------------------- where a run writes


def staging_path(out: Path) -> Path:
    """Where a run that replaces ``out`` trains until it is complete (fixed, so a crashed
    replacement can be resumed or cleaned up by the next run)."""
    return out.parent / f".{out.name}.partial"


def _is_run_dir(path: Path) -> bool:
    """A directory a gcmr training run wrote (a manifest, or only the files a run writes
    before its first manifest): safe to replace."""
    names = {p.name for p in path.iterdir()}
    return MANIFEST in names or names <= RUN_FILES


def _has_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a complete checkpoint; an interrupted checkpoint swap (killed
    between its renames, where the atomic exchange is not available) is rolled back first."""
    if path.is_dir():
        recover(path / CHECKPOINT)
    return (path / CHECKPOINT / "state.json").is_file()


@dataclass
class RunDir:
    """Where a run writes (``path``) and whether it continues a checkpoint (``resume``)."""

    path: Path
    resume: bool


def refuse_existing(out: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an existing ``out`` unless the run resumes or replaces it (a trainer calls this
    before loading its data, to fail fast; :func:`training_dir` calls it again)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if not world().main:  # rank 0 checks and prepares OUT (training_dir); the others follow it
        return
    recover(Path(out))  # an interrupted swap of ``out``: put the complete model back first
    if Path(out).exists() and not (resume or overwrite):
        raise ArtifactError(f"{out} already exists (use --resume to continue training it, "
                            f"or --overwrite to replace it once the new model is trained)")


@contextlib.contextmanager
def training_dir(out: str | Path, *, resume: bool, overwrite: bool) -> Iterator[RunDir]:
    """Choose and prepare the directory a training run writes to, and finish it.

    - a new ``out``: the run writes there directly (a crash leaves a resumable directory);
    - ``overwrite`` of an existing model: the run writes to :func:`staging_path` and the
      finished directory replaces ``out`` in one swap at the end; until then ``out`` is the old
      model, untouched and loadable. A failed run removes its staging directory unless it
      holds a checkpoint (then ``--resume`` continues it);
    - ``resume``: continues the staging directory of an interrupted ``--overwrite`` run if
      there is one, else ``out``; a run that died before its first checkpoint starts over in
      place.

    Under torchrun, rank 0 alone prepares and finishes the directory and tells the other ranks
    where it is; every rank leaves the block when the finished model is in place.
    """
    out = Path(out)
    w = world()
    if not w.main:
        shared = broadcast(None)
        yield RunDir(Path(shared["path"]), resume=shared["resume"])
        barrier()  # rank 0 finishes the model directory
        return
    run = _prepare(out, resume=resume, overwrite=overwrite)
    if w.distributed:
        broadcast({"path": str(run.path), "resume": run.resume})
    staging = staging_path(out)
    try:
        yield run
    except BaseException:
        if run.path == staging and not _has_checkpoint(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if run.path != out:
        replace_dir(run.path, out)
    barrier()


def _prepare(out: Path, *, resume: bool, overwrite: bool) -> RunDir:
    """Rank 0's part of :func:`training_dir`: check ``out`` and choose the run directory."""
    staging = staging_path(out)
    refuse_existing(out, resume=resume, overwrite=overwrite)
    if resume:
        if _has_checkpoint(staging):
            path = staging
        elif out.is_dir():
            path = out
        else:
            raise ArtifactError(f"{out}: no checkpoint to resume from (no such model directory)")
        run = RunDir(path, resume=_has_checkpoint(path))
        if not run.resume:
            if not _is_run_dir(path):
                raise ArtifactError(f"{path} is not a gcmr model directory; refusing to train "
                                    f"into it")
            note(f"{path} has no checkpoint yet (the run stopped in its first epoch): "
                 f"starting over")
            _clear(path)
    elif out.exists():
        if not out.is_dir() or not _is_run_dir(out):
            raise ArtifactError(f"{out} exists and is not a gcmr model directory; refusing to "
                                f"overwrite it")
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of an interrupted replacement
        staging.mkdir(parents=True)
        run = RunDir(staging, resume=False)
    else:
        shutil.rmtree(staging, ignore_errors=True)
        out.mkdir(parents=True)
        run = RunDir(out, resume=False)
    return run


def _clear(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
