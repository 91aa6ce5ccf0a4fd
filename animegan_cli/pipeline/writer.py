"""``Writer``: the run's one writer thread; encodes, records and reports each styled result.

The engine hands a result to ``Writer.submit`` and goes on with the next batch while the
writer thread encodes it (``Stylizer.finish`` + ``outputs.write_image_atomic``), appends
its manifest line before the rename, and writes the same pixels for the input's identical
duplicates. Results are reported from the caller's thread, in the order they were queued,
as soon as they are finished. A write error about the output file system (disk full,
read-only, OUT moved) stops the writer: nothing further is written, and leaving the
``with`` block raises RunStopped. Any other error while one result is encoded or written
fails that output alone (failures.PER_ITEM_ERRORS); its temp file is removed.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from animegan_cli.core.errors import InputImageError, RunStopped
from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.core.priority import lower_this_thread
from animegan_cli.core.signals import deferred
from animegan_cli.media import data, outputs
from animegan_cli.media.formats import PngLevel
from animegan_cli.pipeline.lock import HeldLock
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.records import incremental
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.record import Provenance, with_reuse
from animegan_cli.settings import fields

if TYPE_CHECKING:  # planning builds Targets without the model's modules
    import torch
    from PIL import Image

    from animegan_cli.stylizer import Stylizer

# How many encoded-but-unwritten images may queue behind the writer before the engine
# waits: enough to hide encode time, small enough to bound memory on huge images.
MAX_PENDING_WRITES = 8
# Write errors that are about the output file system, not the image: every later write
# would fail the same way, so the run stops instead of decoding and styling in vain.
STOP_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
OUT_GONE = "the output folder was removed or moved"


@dataclass
class Target:
    """An input to style, and the inputs with identical bytes that get the same result."""

    lead: incremental.Decision
    duplicates: list[incremental.Decision] = field(default_factory=list)

    @property
    def decisions(self) -> list[incremental.Decision]:
        """The lead's decision, then its duplicates'."""
        return [self.lead, *self.duplicates]

    def failed(self, reason: str, spent: float = 0.0) -> list[FileResult]:
        """The same failure for every input of the group."""
        return [
            FileResult(d.item.path, None, "failed", reason, spent, d.reason) for d in self.decisions
        ]


@dataclass(frozen=True)
class Lender:
    """With --reuse-similar: the look-alike whose result is written, and its dHash distance."""

    target: Target
    distance: int


# --faces paste: turns the finished image into the one written (styled faces blended in).
Compose = Callable[["Image.Image"], "Image.Image"]

# What a finished write hands back: its result and the seconds spent writing, or None
# when it was not attempted because the writer had stopped.
_Done = tuple[FileResult, float] | None


class Writer:
    """The writer thread and its bounded queue; use as ``with Writer(...) as writer:``.

    Leaving the block waits for every queued write and reports it; then, when a write
    stopped the writer (and no other exception is on its way), raises RunStopped.
    """

    def __init__(
        self,
        stylizer: Stylizer,
        manifest: Manifest,
        held: HeldLock,
        summary: Summary,
        events: ConvertEvents,
        quality: int = fields.QUALITY.default,
        max_pending: int = MAX_PENDING_WRITES,
        png_level: PngLevel | None = None,
        already_written: Callable[[incremental.Decision], bool] | None = None,
    ) -> None:
        self.stylizer = stylizer
        # --ray: whether an earlier attempt of this run wrote the output (Ray retried the
        # batch after its actor died); such an output is reported, never written twice.
        self.already_written = already_written
        self.manifest = manifest
        self.held = held
        self.summary = summary
        self.events = events
        self.quality = quality
        self.max_pending = max_pending
        self.png_level = png_level
        # Encoding runs beside the model: at a lower priority it takes the cycles the model
        # leaves, not the model's (priority.py).
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="animegan-writer", initializer=lower_this_thread
        )
        self._pending: deque[Future[_Done]] = deque()
        # Set by the writer thread, once; read by the caller's thread to stop early.
        self._stopped = threading.Event()
        self._stop_reason = ""

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        try:
            self._collect(0)
        finally:
            self._pool.shutdown(wait=True)
        if exc_type is None and self._stopped.is_set():
            raise RunStopped(self._stop_reason)

    @property
    def stopped(self) -> bool:
        """Whether a write found the output file system refusing writes: the run cannot go on."""
        return self._stopped.is_set()

    @property
    def stop_reason(self) -> str:
        """The message the run stops with ("" while it has not stopped)."""
        return self._stop_reason

    def submit(
        self,
        target: Target,
        item: data.PreparedImage,
        pixels: torch.Tensor,
        spent: float,
        lender: Lender | None = None,
        compose: Compose | None = None,
        faces: dict[str, object] | None = None,
    ) -> None:
        """Queue one styled result for ``target``'s input and each of its duplicates.

        ``spent`` is the time the lead's image took so far (its duplicates cost nothing).
        With ``lender`` the pixels are a look-alike's result, and the records say so.
        ``compose`` changes the finished image before it is encoded; ``faces`` is what
        their results report (both from --faces).
        Reports the writes that have finished; waits while too many are queued.
        """
        lead = target.lead
        assert lead.record is not None
        record, source = lead.record, None
        if lender is not None:
            assert lender.target.lead.record is not None
            record = with_reuse(record, lender.target.lead.record.input_blake2b, lender.distance)
            source = lender.target.lead.item.path
        extra = _Extra(compose, faces)
        self._queue(lead, item, pixels, spent, record, source, extra)
        for dup in target.duplicates:
            assert dup.record is not None
            dup_record = dup.record
            if lender is not None:
                dup_record = with_reuse(dup.record, record.similar_to or "", lender.distance)
            self._queue(dup, item, pixels, 0.0, dup_record, source or lead.item.path, extra)
        self._collect(self.max_pending)

    def fail(self, target: Target, reason: str, spent: float) -> None:
        """Report every input of ``target`` failed with ``reason``."""
        for result in target.failed(reason, spent):
            self.report(result)

    def report(self, result: FileResult) -> None:
        """Count and announce a result decided outside the writer (a failure)."""
        self._collect(self.max_pending)  # the writes finished before it come first
        self._announce(result)

    def _queue(
        self,
        decision: incremental.Decision,
        item: data.PreparedImage,
        pixels: torch.Tensor,
        spent: float,
        record: Provenance,
        reused_from: Path | None,
        extra: _Extra | None = None,
    ) -> None:
        future = self._pool.submit(
            self._write, decision, item, pixels, spent, record, reused_from, extra or _Extra()
        )
        self._pending.append(future)

    def _collect(self, limit: int) -> None:
        # Finished writes are reported at once (a --json reader or a SIGKILL sees them);
        # beyond ``limit`` unfinished ones, wait for the oldest.
        while self._pending and (len(self._pending) > limit or self._pending[0].done()):
            with deferred():
                done = self._pending.popleft().result()
                if done is not None:
                    result, written = done
                    self.summary.write_seconds += written
                    self._announce(result)

    def _announce(self, result: FileResult) -> None:
        # A Ctrl-C waits until a finished write is taken off the queue and counted.
        with deferred():
            self.summary.add(result)
            self.events.on_result(result)

    def _stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stopped.set()

    def _write(
        self,
        decision: incremental.Decision,
        item: data.PreparedImage,
        pixels: torch.Tensor,
        spent: float,
        record: Provenance,
        reused_from: Path | None,
        extra: _Extra,
    ) -> _Done:
        """Encode and write one output (in the writer thread)."""
        if self._stopped.is_set():
            return None  # queued before the stop: left for the next run, like undecoded images
        out = decision.output
        if self.already_written is not None and self.already_written(decision):
            result = FileResult(
                decision.item.path, out, "converted", None, spent, decision.reason, reused_from
            )
            return result, 0.0
        start = time.perf_counter()
        try:
            self.held.check()
            image = self.stylizer.finish(item, pixels)
            if extra.compose is not None:
                image = extra.compose(image)
            outputs.write_image_atomic(
                image, out, quality=self.quality, png_level=self.png_level,
                metadata=record.to_json(),
                root=self.held.out_dir,
                before_rename=incremental.record_before_rename(self.manifest, out, record),
            )
        except RunStopped as exc:
            self._stop(str(exc))
            return _failed(decision, f"cannot write {out}: {OUT_GONE}", spent)
        except OSError as exc:
            reason = f"cannot write {out}: {exc.strerror or exc}"
            if exc.errno in STOP_ERRNOS:
                self._stop(
                    f"{reason}; stopping, as every further write would fail the same way "
                    "(free space or fix the output folder, then run again: finished images "
                    "are skipped)"
                )
            return _failed(decision, reason, spent)
        except InputImageError as exc:  # the format cannot hold this image (WebP's sides)
            return _failed(decision, str(exc), spent)
        except PER_ITEM_ERRORS as exc:  # an encoder's own error: this output fails alone
            return _failed(decision, f"cannot write {out}: {item_failure_reason(exc)}", spent)
        written = time.perf_counter() - start
        result = FileResult(
            decision.item.path, out, "converted", None, spent + written, decision.reason,
            reused_from, extra.faces,
        )
        return result, written


@dataclass(frozen=True)
class _Extra:
    """What --faces adds to a write: see Writer.submit."""

    compose: Compose | None = None
    faces: dict[str, object] | None = None


def _failed(decision: incremental.Decision, reason: str, spent: float) -> _Done:
    return FileResult(decision.item.path, None, "failed", reason, spent, decision.reason), 0.0


def copy_to_duplicate(
    dup: incremental.Decision, lead: FileResult, manifest: Manifest
) -> FileResult:
    """An input identical to one just converted whole (a clip, an animation) gets a copy of
    its output, or fails with it."""
    path, out = dup.item.path, dup.output
    if lead.status != "converted" or lead.output is None:
        reason = f"identical to {lead.input}, which failed"
        return FileResult(path, None, "failed", reason, reason=dup.reason)
    assert dup.record is not None
    try:
        incremental.copy_output(lead.output, out, dup.record, manifest)
    except OSError as exc:
        reason = f"cannot write {out}: {exc.strerror or exc}"
        return FileResult(path, None, "failed", reason, reason=dup.reason)
    return FileResult(path, out, "converted", None, 0.0, dup.reason, reused_from=lead.input,
                      frames=lead.frames, duration=lead.duration)
