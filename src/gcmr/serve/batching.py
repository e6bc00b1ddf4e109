"""Dynamic micro-batching for the server: concurrent requests decoded in one batched search.

A request's queries join a queue; one worker thread takes them out in batches and runs one
``searcher.search_rows`` per batch, so eight clients asking one query each cost about one
batched beam search instead of eight searches in a row (the searcher is used from that one
thread only: a search already uses every core).

One batched search needs one ``k``, one beam width and one set of search options, so queued
work is grouped by that :class:`BatchKey`. Fairness, so a huge or slow request cannot starve
the others:

- a batch holds at most ``max_batch`` queries, and at most ``chunk_work // width`` of them
  (the server's bound on one search's work, width = max(k, beam)), so a large request is
  searched over several batches;
- within a group, every waiting request gets a share of each batch, and the requests served
  move behind those that were not (round robin), so a single query arriving during a
  256-query request rides in the next batch;
- the groups take turns, so a stream of ``k = 1000`` requests cannot hold up ``k = 10`` ones.

A batch that is not full waits at most ``max_wait_ms`` for company (0: never), counted from
its oldest query's arrival or from the end of the previous search, whichever is later: under
load the callers just answered ask again within a millisecond or two, and waiting for them
keeps the batches whole (8 clients: batches of 8, where starting at once settles into two
alternating batches of 4 that cost nearly twice as much). A full batch never waits.
A failed batch is searched again one request at a time, so a query that fails (say, one the
tokenizer finds no tokens in) fails its own request only. :meth:`MicroBatcher.close` stops
taking new work and finishes everything queued (graceful shutdown).

A part-full batch waits only while company is likely: until as many requests have arrived
since the previous search ended as that search answered (its callers are about to ask
again; the first batch of a group waits for a full batch). A lone client, whose previous
batch was its own single request, is searched as soon as it asks again.

Work that must not overlap a search (a live update that swaps the model, a query by example)
goes through :meth:`MicroBatcher.call`: the worker runs it between two batches, in arrival
order, so the searcher is only ever used from the worker thread.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gcmr.errors import ConfigError, GcmrError
from gcmr.search.base import check_int

DEFAULT_MAX_BATCH = 32  # queries decoded together
DEFAULT_MAX_WAIT_MS = 2.0  # what the first query of a batch may wait for company
MAX_BATCH_LIMIT = 4096  # beyond this one batch's memory grows for no gain in speed
MAX_WAIT_LIMIT_MS = 1000.0  # a wait of seconds would only add latency


@dataclass(frozen=True)
class BatchingConfig:
    """How the server batches concurrent requests (``gcmr serve --max-batch --max-wait-ms``,
    reported in ``/health``): at most ``max_batch`` queries per batched search (1 = no
    batching: one query per search), the first of them waiting at most ``max_wait_ms``."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS

    def __post_init__(self) -> None:
        check_int("batching max_batch", self.max_batch, high=MAX_BATCH_LIMIT)
        wait = self.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or \
                not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_LIMIT_MS:
            raise ConfigError(f"batching max_wait_ms must be a number in [0, "
                              f"{MAX_WAIT_LIMIT_MS:g}] (milliseconds), got {wait!r}")
        object.__setattr__(self, "max_wait_ms", float(wait))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServerClosingError(GcmrError):
    """The server is shutting down: it finishes what is queued and takes nothing new."""


@dataclass(frozen=True)
class BatchKey:
    """What the requests decoded in one batch share: ``k``, the beam width and the search
    options (``(name, value)`` pairs passed to ``search_rows``)."""

    k: int
    beam: int | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(eq=False)
class _Job:
    """One request in the queue: its queries, how many have been handed to a batch, and the
    result rows, filled batch by batch."""

    queries: list[str]
    key: BatchKey
    future: Future
    arrived: float
    taken: int = 0
    done: int = 0
    scores: np.ndarray | None = None
    rows: np.ndarray | None = None
    parts: list[tuple[int, int]] = field(default_factory=list)  # (start, stop) in flight

    @property
    def left(self) -> int:
        return len(self.queries) - self.taken


@dataclass(frozen=True)
class BatchStats:
    """What :class:`MicroBatcher` reports after each batched search (for metrics)."""

    size: int  # queries searched together
    requests: int  # requests they came from
    seconds: float  # the search
    failed: bool = False


class MicroBatcher:
    """Queue + worker thread: :meth:`submit` returns a :class:`~concurrent.futures.Future` of
    ``(scores [Q, k], rows [Q, k])`` for one request, searched together with whatever else is
    queued (see the module docstring for the order).

    ``search(queries, key)`` runs one batched search; a batch holds at most
    ``config.max_batch`` queries, and at most ``chunk(key)`` (the server bounds the work of one
    search: ``chunk_work // max(k, beam)``).
    ``on_batch`` receives a :class:`BatchStats` after each search. The worker thread starts
    with the first request and ends at :meth:`close`.
    """

    def __init__(self, search: Callable[[list[str], BatchKey], tuple[np.ndarray, np.ndarray]],
                 *, config: BatchingConfig | None = None,
                 chunk: Callable[[BatchKey], int] | None = None,
                 on_batch: Callable[[BatchStats], None] | None = None) -> None:
        self.config = config or BatchingConfig()
        self._search = search
        self._chunk = chunk
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._groups: OrderedDict[BatchKey, deque[_Job]] = OrderedDict()
        self._pending = 0  # queries queued, not yet in a batch
        self._last_key: BatchKey | None = None  # the group of the latest batch
        self._free_since = 0.0  # when the worker finished its latest search (monotonic)
        self._closing = False
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()  # see call()
        self._company: dict[BatchKey, int] = {}  # requests in the group's previous batch
        self._thread: threading.Thread | None = None
        self._names = itertools.count(1)

    @property
    def pending(self) -> int:
        """Queries waiting in the queue (not yet handed to a batch)."""
        return self._pending

    @property
    def closed(self) -> bool:
        return self._closing

    def capacity(self, key: BatchKey) -> int:
        """Most queries of ``key`` one batched search holds."""
        chunk = self._chunk(key) if self._chunk is not None else self.config.max_batch
        return max(1, min(self.config.max_batch, chunk))

    def submit(self, queries: Sequence[str], key: BatchKey) -> Future:
        """Queue one request's ``queries`` (checked by the caller); the future's result is
        ``(scores float32 [Q, k], rows int64 [Q, k])`` in the order of ``queries``, or the
        :class:`GcmrError` its search raised. Cancelling the future drops what of the
        request is still queued. Raises :class:`ServerClosingError` after :meth:`close`."""
        future: Future = Future()
        job = _Job(list(queries), key, future, time.monotonic())
        if not job.queries:
            future.set_result((np.zeros((0, key.k), np.float32), np.zeros((0, key.k), np.int64)))
            return future
        with self._cond:
            self._check_open()
            self._groups.setdefault(key, deque()).append(job)
            self._pending += len(job.queries)
            self._start_worker()
        return future

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on the worker thread before the next batch (after the calls queued
        before it); the future holds its result or exception. For work that must not run
        while a search does: live updates, searches by example. Raises
        :class:`ServerClosingError` after :meth:`close`."""
        future: Future = Future()
        with self._cond:
            self._check_open()
            self._calls.append((fn, future))
            self._start_worker()
        return future

    def _check_open(self) -> None:
        if self._closing:
            raise ServerClosingError("the server is shutting down; retry on another "
                                     "instance or after it restarts")

    def _start_worker(self) -> None:  # with self._cond held
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"gcmr-batcher-{next(self._names)}")
            self._thread.start()
        self._cond.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Take no new requests, finish every queued one, stop the worker; True when it has
        stopped within ``timeout`` seconds (None: wait as long as it takes)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # the worker

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if callable(batch):  # a call(): not a search, so no caller is about to return
                batch()
                continue
            try:
                self._execute(*batch)
            except Exception as exc:  # noqa: BLE001 - a bug here must not hang the callers
                self._free_since = time.monotonic()
                for job, _, _ in batch[1]:
                    self._fail(job, exc)

    def _next_batch(self) -> Any:
        """Wait for work (and, for a part-full batch, up to max_wait for more), then take one
        batch out of the queue: the next group in turn, a fair share of each request in it.
        A queued :meth:`call` comes first (returned as a callable that runs it)."""
        wait_s = self.config.max_wait_ms / 1000
        with self._cond:
            while True:
                if self._calls:
                    fn, future = self._calls.popleft()
                    return lambda: _run_call(fn, future)
                self._drop_cancelled()
                if not self._groups:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                keys = iter(self._groups)
                key = next(keys)
                if key == self._last_key:  # a group that came while it was searched goes next
                    key = next(keys, key)
                jobs = self._groups[key]
                cap = self.capacity(key)
                queued = sum(job.left for job in jobs)
                # from the oldest arrival, or from the end of the last search when that is
                # later: the callers it answered are about to ask again, so they join this
                # batch instead of the queue splitting into two half batches that alternate
                start = max(min(job.arrived for job in jobs), self._free_since)
                remaining = start + wait_s - time.monotonic()
                # the callers the previous batch answered have all asked again: nobody
                # else is coming (a lone client is searched at once)
                back = sum(1 for job in jobs if job.arrived >= self._free_since)
                alone = back >= self._company.get(key, cap)
                if queued >= cap or alone or remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            parts = self._take(jobs, cap)
            if len(self._company) > 1024:  # keys seen long ago; bounded under any load
                self._company.clear()
            self._company[key] = len(parts)
            self._groups.move_to_end(key)  # the groups take turns
            self._last_key = key
            if not jobs:
                del self._groups[key]
            self._pending -= sum(stop - start for _, start, stop in parts)
            return key, parts

    def _drop_cancelled(self) -> None:
        for key in list(self._groups):
            jobs = self._groups[key]
            for job in [job for job in jobs if job.future.cancelled()]:
                jobs.remove(job)
                self._pending -= job.left
            if not jobs:
                del self._groups[key]

    @staticmethod
    def _take(jobs: deque[_Job], cap: int) -> list[tuple[_Job, int, int]]:
        """Up to ``cap`` queries from ``jobs``: rounds in which each request gives up to an
        equal share; the requests served go behind the rest, the finished leave the queue."""
        parts: dict[_Job, tuple[int, int]] = {}
        room = cap
        while room and any(job.left for job in jobs):
            share = max(1, room // sum(1 for job in jobs if job.left))
            for job in list(jobs):
                n = min(share, job.left, room)
                if n <= 0:
                    continue
                start = parts[job][0] if job in parts else job.taken
                job.taken += n
                parts[job] = (start, job.taken)
                room -= n
                if not room:
                    break
        for job in parts:  # served: behind the waiting ones (or out, when all taken)
            jobs.remove(job)
            if job.left:
                jobs.append(job)
        return [(job, start, stop) for job, (start, stop) in parts.items()]

    def _execute(self, key: BatchKey, parts: list[tuple[_Job, int, int]]) -> None:
        queries = [q for job, start, stop in parts for q in job.queries[start:stop]]
        t0 = time.perf_counter()
        try:
            scores, rows = self._search(queries, key)
        except Exception as exc:  # noqa: BLE001 - every error goes back to its caller
            self._free_since = time.monotonic()
            self._report(BatchStats(len(queries), len(parts), time.perf_counter() - t0, True))
            if len(parts) == 1:
                self._fail(parts[0][0], exc)
            else:  # find whose queries failed: each request's part searched alone
                for part in parts:
                    self._execute(key, [part])
            return
        self._free_since = time.monotonic()  # before the answers: their callers ask again
        self._report(BatchStats(len(queries), len(parts), time.perf_counter() - t0))
        offset = 0
        for job, start, stop in parts:
            n = stop - start
            self._deliver(job, start, scores[offset:offset + n], rows[offset:offset + n])
            offset += n

    def _report(self, stats: BatchStats) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(stats)
            except Exception:
                logging.getLogger(__name__).exception("gcmr serve: batch metrics failed")

    def _deliver(self, job: _Job, start: int, scores: np.ndarray, rows: np.ndarray) -> None:
        if job.future.done():
            return  # cancelled, or failed in an earlier part
        if job.scores is None:
            shape = (len(job.queries), scores.shape[1])
            job.scores = np.empty(shape, dtype=scores.dtype)
            job.rows = np.empty(shape, dtype=rows.dtype)
        job.scores[start:start + len(scores)] = scores
        job.rows[start:start + len(rows)] = rows
        job.done += len(scores)
        if job.done == len(job.queries):
            _settle(job.future, result=(job.scores, job.rows))

    def _fail(self, job: _Job, exc: BaseException) -> None:
        with self._cond:  # what is still queued of it is not searched
            jobs = self._groups.get(job.key)
            if jobs is not None and job in jobs:
                jobs.remove(job)
                self._pending -= job.left
                if not jobs:
                    del self._groups[job.key]
        _settle(job.future, error=exc)


def _run_call(fn: Callable[[], Any], future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while queued
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - it goes back to the caller
        _settle(future, error=exc)
    else:
        _settle(future, result=result)


def _settle(future: Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Set a future's outcome unless its caller cancelled it meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
