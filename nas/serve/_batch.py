"""Concurrent predict requests merged into one ``predict`` call per predictor.

A replica answers many small requests at once: one call of a latency predictor on 32
architectures costs about what a call on one does, so the requests that arrive within a
short wait are priced together. :class:`Batcher` is a plain asyncio micro-batcher (what Ray
Serve's ``@serve.batch`` does, without its per-call signature binding and metrics, and
usable outside a Serve replica: the tests drive the replica's ASGI app directly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["THREAD_ABOVE", "Batcher", "Job", "PredictorKey", "Predicts", "predict_jobs"]

PredictorKey = tuple[str, str, str | None]

# Above this many architectures a batch's predict calls run in a worker thread, so the event
# loop keeps accepting requests meanwhile; below, the thread hop costs more than the call.
THREAD_ABOVE = 512


class Predicts(Protocol):
    """What a batch needs of a predictor (a :class:`~nas.latency.LatencyPredictor`)."""

    def predict(self, archs: list[Any]) -> Any: ...


@dataclass(frozen=True)
class Job:
    """One request's architectures (parsed) for the predictor of ``key``."""

    key: PredictorKey
    archs: list[Any]


def predict_jobs(jobs: list[Job], predictor: Callable[[PredictorKey], Predicts],
                 ) -> list[np.ndarray | BaseException]:
    """Each job's predictions (ms, one per architecture, in order), from one ``predict``
    call per predictor for all the jobs of that predictor; a failure of that call is the
    answer of each of its jobs, and of no other."""
    groups: dict[PredictorKey, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.key, []).append(i)
    out: list[np.ndarray | BaseException] = [np.zeros(0)] * len(jobs)
    for key, idx in groups.items():
        archs = [a for i in idx for a in jobs[i].archs]
        try:
            ms = np.asarray(predictor(key).predict(archs), dtype=float)
        except Exception as exc:
            for i in idx:
                out[i] = exc
            continue
        start = 0
        for i in idx:
            n = len(jobs[i].archs)
            out[i] = ms[start:start + n]
            start += n
    return out


class Batcher:
    """Gathers the jobs submitted within ``wait_s`` of the first one (or until
    ``max_batch_size`` are waiting) and prices them with :func:`predict_jobs`.

    Runs on the event loop that calls :meth:`submit` (the replica's); a batch of more than
    :data:`THREAD_ABOVE` architectures is priced in a worker thread, one such batch at a
    time. A job whose caller went away (its request cancelled) is left out of its batch.

    Args:
        predictor: the loaded predictor of a key (looked up when its batch runs).
        max_batch_size: most jobs in one batch.
        wait_s: how long a batch waits to fill; 0: the jobs submitted before the event loop
            next runs its callbacks.
    """

    def __init__(self, predictor: Callable[[PredictorKey], Predicts], *,
                 max_batch_size: int, wait_s: float) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._waiting: list[tuple[Job, asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._threaded: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while they run

    async def submit(self, job: Job) -> np.ndarray:
        """``job``'s predictions, priced with the others of its batch.

        Raises:
            Exception: whatever the predictor's ``predict`` raised for the batch's call of
                this job's predictor.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((job, fut))
        if len(self._waiting) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = (loop.call_later(self.wait_s, self._flush) if self.wait_s > 0
                           else loop.call_soon(self._flush))
        try:
            result = await fut
        except asyncio.CancelledError:  # its request went away: not priced
            self._waiting = [(j, f) for j, f in self._waiting if f is not fut]
            raise
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [(job, fut) for job, fut in self._waiting if not fut.done()]
        self._waiting = []
        if not batch:
            return
        if sum(len(job.archs) for job, _ in batch) > THREAD_ABOVE:
            task = asyncio.get_running_loop().create_task(self._run_in_thread(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        _answer(batch, predict_jobs([job for job, _ in batch], self.predictor))

    async def _run_in_thread(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        if self._threaded is None:
            self._threaded = asyncio.Lock()
        try:
            async with self._threaded:
                results = await asyncio.to_thread(
                    predict_jobs, [job for job, _ in batch], self.predictor)
        except BaseException as exc:  # cancelled with the replica: its callers are told
            results = [exc] * len(batch)
            _answer(batch, results)
            raise
        _answer(batch, results)


def _answer(batch: list[tuple[Job, asyncio.Future[Any]]],
            results: list[np.ndarray | BaseException]) -> None:
    for (_, fut), result in zip(batch, results, strict=True):
        if not fut.done():
            fut.set_result(result)
