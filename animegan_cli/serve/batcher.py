"""``Batcher``: serve's one engine thread, fed by a bounded queue, batching images of one shape.

Requests put images in the queue (``submit``) and wait on a Future each. The engine thread
takes the oldest image, then gathers more of the same shape, from any request, until it
has ``max_batch_size`` of them or ``wait_s`` has passed since the first arrived, and runs
them together. A full queue is refused at once (QueueFull: the server answers 503); an
image whose Future was cancelled (its client went away) is skipped, never computed.

An image submitted ``low`` (a job's, serve/jobs/) waits while any other image does: a
batch starts from the oldest request's image, and a job's image runs only when none is
waiting. Its feeder keeps a few in the queue at a time, so they are not counted against
``queue_size`` (a job never makes a request's images wait for room).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from animegan_cli.settings import fields


class QueueFull(Exception):
    """The queue has no room for the images of a request: come back later."""


class Closed(Exception):
    """The batcher is shutting down and takes no more images."""


# Runs one batch of payloads of one shape; returns one result per payload, in order. A
# result that is an exception instance fails that payload alone.
RunBatch = Callable[[Sequence[Any]], Sequence[Any]]
# Told after each batch: its size and the seconds the run took.
OnBatch = Callable[[int, float], None]


def _ignore_batch(size: int, seconds: float) -> None:
    pass


@dataclass
class Job:
    """One queued image: its shape (batch key), what ``run_batch`` gets, and its Future."""

    shape: Hashable
    payload: Any
    arrived: float
    future: Future = field(default_factory=Future)
    low: bool = False  # a job's image: after every other one waiting


class Batcher:
    """The queue and the engine thread; ``start()`` it, ``close()`` it to drain and stop."""

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int = fields.MAX_BATCH_SIZE.default,
        wait_s: float = 0.0,
        queue_size: int = 64,
        on_batch: OnBatch = _ignore_batch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or wait_s < 0:
            raise ValueError("max_batch_size and queue_size must be >= 1, wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.queue_size = queue_size
        self.on_batch = on_batch
        self.clock = clock
        self.dropped = 0  # images skipped because their Future was cancelled
        self._pending: list[Job] = []
        self._reserved = 0  # room promised to requests still decoding their images
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="animegan-engine", daemon=True)

    @property
    def depth(self) -> int:
        """Images of requests waiting for the engine (those whose client went away, and
        jobs' images, not counted)."""
        return sum(not job.low and not job.future.cancelled() for job in self._pending)

    def start(self) -> Batcher:
        """Start the engine thread."""
        self._thread.start()
        return self

    @property
    def full(self) -> bool:
        """Whether no image more would fit (queued and promised room counted)."""
        return self.depth + self._reserved >= self.queue_size

    def reserve(self, count: int) -> None:
        """Promise room for ``count`` images before decoding them; QueueFull if there is none.

        A busy server refuses at once, before any decoding; ``submit(reserved=True)`` uses
        the room, ``release`` gives back what a failed decode does not need.
        """
        with self._cond:
            if self._closed:
                raise Closed("the server is shutting down")
            waiting = self.depth + self._reserved
            if waiting + count > self.queue_size:
                raise QueueFull(f"{waiting} image(s) already queued")
            self._reserved += count

    def release(self, count: int) -> None:
        """Give back reserved room that will not be used."""
        with self._cond:
            self._reserved -= count

    def submit(self, items: Sequence[tuple[Hashable, Any]], reserved: bool = False,
               low: bool = False) -> list[Future]:
        """Queue (shape, payload) pairs, all or none; one Future per pair.

        With ``reserved`` their room was reserved (and is used now). Raises QueueFull when
        they do not all fit, Closed once ``close`` was called. ``low`` images (a job's) run
        after all others and take no room in the queue.
        """
        with self._cond:
            if reserved:
                self._reserved -= len(items)
            if self._closed:
                raise Closed("the server is shutting down")
            waiting = self.depth + self._reserved
            if not low and waiting + len(items) > self.queue_size:
                raise QueueFull(f"{waiting} image(s) already queued")
            now = self.clock()
            jobs = [Job(shape, payload, now, low=low) for shape, payload in items]
            self._pending.extend(jobs)
            self._cond.notify_all()
        return [job.future for job in jobs]

    def close(self, timeout: float | None = None) -> bool:
        """Take no more images, finish the queued ones, stop; False if ``timeout`` ran out."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        """The next batch to run ([] if all were cancelled); None once closed and empty."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            first = next((job for job in self._pending if not job.low), self._pending[0])
            deadline = first.arrived + self.wait_s
            while True:
                # A request's images first, then jobs' (sorted keeps arrival order within).
                same = sorted((job for job in self._pending if job.shape == first.shape),
                              key=lambda job: job.low)
                remaining = deadline - self.clock()
                # Closing: no point waiting for images that can no longer come.
                if len(same) >= self.max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            taken = same[: self.max_batch_size]
            taken_ids = {id(job) for job in taken}
            self._pending = [job for job in self._pending if id(job) not in taken_ids]
        # A cancelled Future (the client went away) refuses to start: its image is skipped.
        running = [job for job in taken if job.future.set_running_or_notify_cancel()]
        self.dropped += len(taken) - len(running)
        return running

    def _run(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        try:
            results = list(self.run_batch([job.payload for job in batch]))
        except Exception as exc:  # noqa: BLE001 - the requests fail, the server goes on
            for job in batch:
                job.future.set_exception(exc)
            return
        finally:
            self.on_batch(len(batch), time.perf_counter() - start)
        for job, result in zip(batch, results):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
