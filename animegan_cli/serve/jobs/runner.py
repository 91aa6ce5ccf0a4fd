"""The job runner: queued files styled through the server's one engine thread, at low priority.

A few workers (``slots``: --max-batch-size + 1, so that one decodes while the engine runs)
each take a file from the store, decode it as /animeify does (``ImageService.prepare``),
queue it for the engine as a *low* image (the Batcher runs it only when no request's image
waits), encode it (``ImageService.encode``, not cached) and hand the result to the store.
A request therefore waits for at most the batch already running, however big the jobs.
Each file ends with a result or its error, in the same words /animeify would answer.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import Future

from starlette.concurrency import run_in_threadpool

from animegan_cli.core.failures import item_failure_reason
from animegan_cli.serve.batcher import Closed
from animegan_cli.serve.jobs.store import Claim, JobStore
from animegan_cli.serve.service import ImageError, ImageService, RequestSettings

# Seconds an idle worker sleeps before looking for work again (a new job wakes it at once).
IDLE_POLL_S = 1.0
# Seconds between sweeps of expired jobs (at most; a shorter --keep-results sweeps oftener).
SWEEP_S = 60.0

# A job's stored form fields and cache scope -> its RequestSettings (ImageError if they no
# longer fit this server, e.g. a size over a lowered --max-size).
RequestFor = Callable[[str, str], RequestSettings]


class JobRunner:
    """The workers and the expiry sweep, as asyncio tasks of the server's event loop."""

    def __init__(self, store: JobStore, service: ImageService, request_for: RequestFor,
                 may_start: Callable[[], bool], slots: int) -> None:
        self.store = store
        self.service = service
        self.request_for = request_for
        self.may_start = may_start  # the model is ready and no stop has begun
        self.slots = slots
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[Future] = set()

    def start(self) -> None:
        """Put the files a stop or a crash left running back, then start the workers."""
        self.store.resume()
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.slots)]
        self._tasks.append(asyncio.ensure_future(self._sweep()))

    def wake(self) -> None:
        """A job came in: idle workers look now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop taking files; images queued for the engine are skipped. Files in flight stay
        running in the store: the next start styles them again (none was finished)."""
        for future in list(self._inflight):
            future.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store.close()

    async def _worker(self) -> None:
        while True:
            try:
                claim = await run_in_threadpool(self.store.claim) if self.may_start() else None
                if claim is None:
                    await self._idle()
                    continue
                await self._style(claim)
            except Exception:  # noqa: BLE001 - the store failed (a full disk...): try later
                traceback.print_exc(file=sys.stderr)
                await asyncio.sleep(IDLE_POLL_S)

    async def _idle(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
        except asyncio.TimeoutError:
            pass

    async def _style(self, claim: Claim) -> None:
        """One file: a result in the store, or its error."""
        try:
            request = self.request_for(claim.fields, claim.scope)
            upload = await run_in_threadpool(self.store.read_upload, claim)
            item = await run_in_threadpool(self.service.prepare, request, upload)
            if not await run_in_threadpool(self.store.count_run, claim):
                return  # cancelled while it was decoded
            pixels = await self._run(item)
            result = await run_in_threadpool(self.service.encode, request, item, pixels, None)
        except ImageError as exc:
            await run_in_threadpool(self.store.fail, claim, exc.reason)
            return
        except Closed:  # stopping: the file stays running, and is styled at the next start
            return
        except Exception as exc:  # noqa: BLE001 - this file fails alone; the runner goes on
            traceback.print_exc(file=sys.stderr)
            await run_in_threadpool(self.store.fail, claim,
                                    f"internal error: {item_failure_reason(exc)}")
            return
        try:
            await run_in_threadpool(self.store.finish, claim, result.data, result.extension)
        except OSError as exc:  # a full disk: this file fails, with the reason
            await run_in_threadpool(self.store.fail, claim, f"cannot store the result: {exc}")

    async def _run(self, item: object) -> object:
        future = self.service.submit([item], low=True)[0]  # type: ignore[list-item]
        self._inflight.add(future)
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._inflight.discard(future)

    async def _sweep(self) -> None:
        every = min(SWEEP_S, max(0.5, self.store.keep_results_s / 2))
        while True:
            await asyncio.sleep(every)
            await run_in_threadpool(self.store.expire)
