"""The animations of a convert run (animated GIF, APNG, animated WebP): each styled frame by
frame into one animated output of its own format, atomically.

convert.py hands over the targets of the animation kind (media/kinds.py) after the images,
with the same Stylizer. Each animation is checked from its header first (every frame against
--max-pixels; its styled frames, held until the file is encoded, against the memory budget),
then decoded and styled in chunks of --frames-per-batch frames through
``Stylizer.prepare``/``run``/``finish``, as images are; the output is written through a temp
file with its manifest entry appended before the rename. A damaged animation fails alone
with one line (the per-item boundary, core/failures.py); identical inputs get a copy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import RunStopped
from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.core.files import hash_file
from animegan_cli.core.units import format_bytes
from animegan_cli.engines.base import NON_FINITE_REASON, NonFiniteOutput
from animegan_cli.media import animation, data
from animegan_cli.media.formats import PngLevel
from animegan_cli.pipeline import resources
from animegan_cli.pipeline.lock import HeldLock
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.pipeline.writer import STOP_ERRNOS, Target, copy_to_duplicate
from animegan_cli.records.incremental import Decision, record_before_rename
from animegan_cli.records.manifest import Manifest

if TYPE_CHECKING:  # the model's modules: loaded by the caller, only when a frame is styled
    import torch

    from animegan_cli.pipeline.convert import ConvertOptions
    from animegan_cli.stylizer import Stylizer

CHANGED_WHILE_READING = "changed while the run was reading it; run it again"
FACES_ON_ANIMATION = "--faces is for photos; convert animations in a run without --faces"
CALIBRATION_FRAMES = 8  # as convert.CALIBRATION_IMAGES
# Bytes per output pixel of each styled frame held until the file is encoded: the RGBA frame
# and the encoder's own copy (Pillow's GIF and APNG writers keep every frame to diff them).
HELD_BYTES_PER_PIXEL = 8


def convert_all(
    options: ConvertOptions,
    targets: Sequence[Target],
    stylizer: Stylizer | None,
    load: Callable[..., Stylizer],
    manifest: Manifest,
    held: HeldLock,
    summary: Summary,
    events: ConvertEvents,
    started: float,
) -> Stylizer | None:
    """Style every animation (the kind's runner entry); ``load`` makes the Stylizer when no
    earlier input of the run did. Returns the Stylizer, for the next kind's inputs."""
    if options.faces.on:  # its records and crops are an image's; frames have none
        for decision in (d for target in targets for d in target.decisions):
            _report(FileResult(decision.item.path, None, "failed", FACES_ON_ANIMATION,
                               reason=decision.reason), summary, events)
        return stylizer
    if stylizer is None:
        first = targets[0].lead
        assert first.record is not None
        pixels = options.preprocess
        stylizer = load(calibration=lambda: calibration_pixels(first.item.path, pixels),
                        expected_checkpoint=first.record.checkpoint or None)
        summary.engine = stylizer.description
        summary.startup_seconds = time.perf_counter() - started
    # The estimate is of host memory for the CPU engine, as for images and clips.
    budget = None if stylizer.spec.device != "cpu" else (
        options.max_memory or resources.default_budget())
    run = AnimationRun(stylizer, manifest, held, summary, events, options.frames_per_batch,
                       options.quality, options.png_level, options.max_pixels, budget)
    run.convert_all(targets)
    return stylizer


def calibration_pixels(path: Path, settings: data.PreprocessSettings) -> list[torch.Tensor]:
    """Model inputs of an animation's first frames, to calibrate an INT8 model on."""
    try:
        header = animation.read_header(path)
        frames = list(itertools.islice(animation.read_frames(path, header), CALIBRATION_FRAMES))
    except animation.AnimationError:
        return []
    prepared = [data.prepare_decoded(i, f.image, f.image.size, settings)
                for i, f in enumerate(frames)]
    return [item.pixels for item in prepared if item.pixels is not None]


def with_probe(result: FileResult) -> FileResult:
    """A dry run's result for an animation, with its frame count and length from the header."""
    try:
        header = animation.read_header(result.input)
    except animation.AnimationError as exc:
        return FileResult(result.input, None, "failed", str(exc), reason=result.reason)
    result.frames, result.duration = header.frames, header.seconds
    return result


def _report(result: FileResult, summary: Summary, events: ConvertEvents) -> None:
    summary.add(result)
    events.on_result(result)


@dataclass
class AnimationRun:
    """Converts animations with one Stylizer, reporting each as it finishes."""

    stylizer: Stylizer
    manifest: Manifest
    held: HeldLock
    summary: Summary
    events: ConvertEvents
    frames_per_batch: int
    quality: int
    png_level: PngLevel | None
    max_pixels: int
    budget: int | None = None  # bytes an animation may plan for; None: not checked

    def convert_all(self, targets: Sequence[Target]) -> None:
        """Convert each animation in turn; a bad one fails alone."""
        for target in targets:
            self.held.check()
            result = self._convert(target.lead)
            _report(result, self.summary, self.events)
            for dup in target.duplicates:
                _report(copy_to_duplicate(dup, result, self.manifest), self.summary, self.events)

    def _convert(self, decision: Decision) -> FileResult:
        source, out = decision.item.path, decision.output
        start = time.perf_counter()

        def failed(reason: str) -> FileResult:
            return FileResult(source, None, "failed", reason, time.perf_counter() - start,
                              decision.reason)

        # The per-item boundary: whatever reading the header, decoding, styling or encoding
        # this animation raises fails it alone; the temp file is gone (atomic_write).
        try:
            header = self._write(decision)
        except RunStopped:
            raise
        except OSError as exc:  # reading errors are AnimationErrors: this one is the output's
            reason = f"cannot write {out}: {exc.strerror or exc}"
            if exc.errno in STOP_ERRNOS:
                raise RunStopped(reason) from exc
            return failed(reason)
        except PER_ITEM_ERRORS as exc:
            return failed(item_failure_reason(exc))
        return FileResult(source, out, "converted", None, time.perf_counter() - start,
                          decision.reason, frames=header.frames, duration=header.seconds)

    def _write(self, decision: Decision) -> animation.Header:
        """Check the header, style every frame, then encode them into the output."""
        source, out, record = decision.item.path, decision.output, decision.record
        assert record is not None
        header = animation.read_header(source)
        per_batch = self._frames_per_batch(header)
        styled: list[animation.Frame] = []
        for chunk in _chunks(animation.read_frames(source, header), per_batch):
            styled += self._style(chunk)
            self.events.on_frames(source, len(styled), header.frames)
        if len(styled) != header.frames:
            raise animation.AnimationError(
                f"{len(styled)} of {header.frames} frames could be read; the file is cut short")
        # The record names the bytes hashed when planning: refuse a file replaced since.
        if record.input_blake2b and hash_file(source) != record.input_blake2b:
            raise animation.AnimationError(CHANGED_WHILE_READING)

        def write(handle: BinaryIO) -> None:
            animation.write(styled, header, handle, self.quality, record.to_json(),
                            self.png_level)

        atomic_write(out, write, root=self.manifest.out_dir,
                     before_rename=record_before_rename(self.manifest, out, record))
        return header

    def _frames_per_batch(self, header: animation.Header) -> int:
        """Frames styled together; AnimationError when the header says it cannot fit.

        Every frame is checked against --max-pixels; the styled frames (held until the file
        is encoded) and one frame's model run must fit in the budget, and the batch is
        lowered to what the rest of it holds.
        """
        data.check_pixels(header.width, header.height, self.max_pixels)
        per_batch = self.frames_per_batch
        if self.budget is None:
            return per_batch
        model_w, model_h = self.stylizer.input_size(header.width, header.height)
        out_w, out_h = (header.width, header.height) if self.stylizer.pixels.keep_size else (
            model_w, model_h)
        held = header.frames * out_w * out_h * HELD_BYTES_PER_PIXEL
        precision = self.stylizer.spec.precision
        need = held + resources.estimate_peak(model_w * model_h, 1, precision)
        if need > self.budget:
            raise animation.AnimationError(
                f"{header.frames} frames of {header.width}x{header.height} need about "
                f"{format_bytes(need)} of memory to style and hold until written, "
                f"more than the budget of {format_bytes(self.budget)} "
                "(see --max-memory, --size)")
        return resources.frames_within(model_w * model_h, precision, self.budget - held,
                                       per_batch)

    def _style(self, frames: list[animation.Frame]) -> list[animation.Frame]:
        """Style frames as images are: Stylizer.prepare -> run -> finish, durations kept."""
        prepared = [self.stylizer.prepare(f.image, i) for i, f in enumerate(frames)]
        start = time.perf_counter()
        try:
            pixels = self.stylizer.run(prepared)
        except NonFiniteOutput:
            raise animation.AnimationError(NON_FINITE_REASON) from None
        self.summary.engine_seconds += time.perf_counter() - start
        return [animation.Frame(self.stylizer.finish(item, p), f.duration)
                for item, p, f in zip(prepared, pixels, frames)]


def _chunks(frames: Iterable[animation.Frame], size: int) -> Iterator[list[animation.Frame]]:
    iterator = iter(frames)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
