"""The clips of a convert run: each styled frame by frame into one output video, atomically.

convert.py hands over the targets that are clips (after the images, with the same
Stylizer); this module turns each into a FileResult, writes its manifest entry before the
rename, and gives identical inputs a copy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from PIL import Image

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import RunStopped
from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.core.files import hash_file
from animegan_cli.core.units import format_bytes
from animegan_cli.engines.base import NON_FINITE_REASON, NonFiniteOutput
from animegan_cli.media import video
from animegan_cli.media.data import (
    PreparedImage,
    PreprocessSettings,
    prepare_decoded,
    stack_pixels,
)
from animegan_cli.pipeline import resources
from animegan_cli.pipeline.lock import HeldLock
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.pipeline.writer import STOP_ERRNOS, Target, copy_to_duplicate
from animegan_cli.records.incremental import Decision, record_before_rename
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.staleness import TILE_STATS_KEY, TILES_KEY

if TYPE_CHECKING:  # the model's modules: loaded by the caller, only when a clip is styled
    import torch

    from animegan_cli.engines.tiling import TilePlan
    from animegan_cli.faces.detect import FaceSettings
    from animegan_cli.faces.frames import FramePaste
    from animegan_cli.pipeline.convert import ConvertOptions
    from animegan_cli.runners.clip_smoothing import StatsSmoother
    from animegan_cli.stylizer import Stylizer

CHANGED_WHILE_READING = "changed while the run was reading it; run it again"
CALIBRATION_FRAMES = 8  # as convert.CALIBRATION_IMAGES, spread over a clip's first frames


def convert_videos(
    options: ConvertOptions,
    clips: Sequence[Target],
    stylizer: Stylizer | None,
    load: Callable[..., Stylizer],
    manifest: Manifest,
    held: HeldLock,
    summary: Summary,
    events: ConvertEvents,
    started: float,
) -> Stylizer | None:
    """Style every clip; ``load`` makes the Stylizer when no image of the run did (returned,
    for the next kind's inputs)."""
    if options.faces.mode == "crop":  # one file per face of a photo: a clip has no such thing
        from animegan_cli.faces.frames import FACES_CROP_ON_CLIP

        for decision in (d for target in clips for d in target.decisions):
            result = FileResult(decision.item.path, None, "failed", FACES_CROP_ON_CLIP,
                                reason=decision.reason)
            summary.add(result)
            events.on_result(result)
        return stylizer
    if stylizer is None:
        first = clips[0].lead
        assert first.record is not None
        pixels = options.preprocess
        stylizer = load(calibration=lambda: calibration_pixels(first.item.path, pixels),
                        expected_checkpoint=first.record.checkpoint or None)
        summary.engine = stylizer.description
        summary.startup_seconds = time.perf_counter() - started
    settings = video.EncodeSettings(
        "", options.video_crf, options.frames_per_batch, options.keep_partial_video,
        options.max_pixels,
    )
    # The estimate is of host memory for the CPU engine, as for images (convert._fit_in_memory).
    budget = None if stylizer.spec.device != "cpu" else (
        options.max_memory or resources.default_budget())
    faces = options.faces if options.faces.on else None  # --faces paste: a frame stage
    run = VideoRun(stylizer, settings, manifest, held, summary, events, budget, faces,
                   options.video_smoothing == video.SMOOTHING_STATS)
    unable = run.smoothing_refusal()
    if unable is not None:  # the engine cannot take statistics: each clip fails alone
        for target in clips:
            run.fail_all(target, unable)
        return stylizer
    run.convert_all(clips)
    return stylizer


convert_all = convert_videos  # the video kind's runner entry (media/kinds.py)


def calibration_pixels(path: Path, settings: PreprocessSettings) -> list[torch.Tensor]:
    """Model inputs of a clip's first frames, to calibrate an INT8 model on (none: empty)."""
    try:
        frames = video.first_frames(path, CALIBRATION_FRAMES)
    except video.VideoError:
        return []
    # a prepared image's pixels are set
    return [cast("torch.Tensor", prepare_decoded(i, f, f.size, settings).pixels)
            for i, f in enumerate(frames)]


def with_probe(result: FileResult) -> FileResult:
    """A dry run's result for a clip, with its frame count and duration from the header."""
    try:
        found = video.probe(result.input)
    except video.VideoError as exc:
        return FileResult(result.input, None, "failed", str(exc), reason=result.reason)
    result.frames, result.duration = found.frames, found.seconds
    return result


@dataclass
class VideoRun:
    """Converts clips with one Stylizer, reporting each as it finishes."""

    stylizer: Stylizer
    settings: video.EncodeSettings  # record left empty: each clip gets its own
    manifest: Manifest
    held: HeldLock
    summary: Summary
    events: ConvertEvents
    budget: int | None = None  # bytes of memory a clip may plan for; None: not checked
    faces: FaceSettings | None = None  # --faces paste: each frame's faces pasted back
    smoothing: bool = False  # --video-smoothing stats
    _paste: FramePaste | None = None  # the clip's face stage while one is styled
    _smoother: StatsSmoother | None = None  # the clip's running statistics while one is styled

    def smoothing_refusal(self) -> str | None:
        """Why this engine cannot smooth (--video-smoothing stats), or None."""
        if not self.smoothing:
            return None
        from animegan_cli.core.errors import UsageError
        from animegan_cli.engines.base import stats_engine

        try:
            stats_engine(self.stylizer.engine, self.stylizer.spec, "--video-smoothing stats")
        except UsageError as exc:
            return str(exc)
        return None

    def fail_all(self, target: Target, reason: str) -> None:
        """Report a clip and its identical inputs failed with ``reason``."""
        for decision in target.decisions:
            self._report(FileResult(decision.item.path, None, "failed", reason,
                                    reason=decision.reason))

    def convert_all(self, targets: Sequence[Target]) -> None:
        """Convert each clip in turn; a bad clip fails alone."""
        for target in targets:
            self.held.check()
            result = self._convert(target)
            self._report(result)
            if result.status == "converted":
                self.summary.videos.append(result)
            for dup in target.duplicates:
                self._report(copy_to_duplicate(dup, result, self.manifest))

    def _report(self, result: FileResult) -> None:
        self.summary.add(result)
        self.events.on_result(result)

    def _convert(self, target: Target) -> FileResult:
        decision = target.lead
        source, out = decision.item.path, decision.output
        start = time.perf_counter()

        def failed(reason: str) -> FileResult:
            return FileResult(source, None, "failed", reason, time.perf_counter() - start,
                              decision.reason)

        # The per-item boundary: whatever checking the header, decoding, styling, encoding
        # or muxing this clip raises (PyAV's EINVAL at close, an encoder's refusal) fails
        # this clip alone; the temp file is gone (atomic_write); the next clip is converted.
        try:
            done = self._write(decision)
        except RunStopped:
            raise
        except OSError as exc:
            reason = f"cannot write {out}: {exc.strerror or exc}"
            if exc.errno in STOP_ERRNOS:
                raise RunStopped(reason) from exc
            # An OSError from FFmpeg (EIO) may be about the input: said as any error is.
            return failed(item_failure_reason(exc) if video.is_ffmpeg_error(exc) else reason)
        except PER_ITEM_ERRORS as exc:
            return failed(item_failure_reason(exc))
        for note in done.notes:
            self.events.on_message(f"{source}: {note}")
        if self._smoother is not None and self._smoother.cuts:
            self.events.on_message(f"{source}: smoothing started again at "
                                   f"{self._smoother.cuts} scene cut(s)")
        faces = None if self._paste is None else self._paste.report()
        return FileResult(source, out, "converted", None, time.perf_counter() - start,
                          decision.reason, faces=faces, frames=done.frames,
                          duration=done.seconds)

    def _write(self, decision: Decision) -> video.Transcoded:
        """Check the clip's header, then style it into its output through a temp file."""
        source, out, record = decision.item.path, decision.output, decision.record
        assert record is not None
        # Refused from its header before a temp file exists or a frame is decoded.
        settings, plan = self._clip_settings(source, record.to_json(), record.settings)
        done: list[video.Transcoded] = []
        if self.faces is not None:
            from animegan_cli.faces.frames import FramePaste  # OpenCV: only with --faces

            self._paste = FramePaste(self.faces, settings.frames_per_batch,
                                     self.stylizer.keep_colour)
        self._smoother = self._frame_stats(plan)

        def write(handle: BinaryIO) -> None:
            done.append(video.transcode(
                source, handle.name, video.container_for(out), self._style, settings,
                self.stylizer.input_size,
                lambda frames, total: self.events.on_frames(source, frames, total),
            ))
            # The record names the bytes hashed when planning: refuse a clip replaced since.
            if record.input_blake2b and hash_file(source) != record.input_blake2b:
                raise video.VideoError(CHANGED_WHILE_READING)

        atomic_write(out, write, root=self.manifest.out_dir,
                     before_rename=record_before_rename(self.manifest, out, record))
        return done[0]

    def _frame_stats(self, plan: TilePlan | None) -> StatsSmoother | None:
        """The clip's frames' way through the model when they need statistics (smoothing,
        tiles), each clip afresh; None: Stylizer.run, frames batched (today's pixels)."""
        if not self.smoothing and plan is None:
            return None
        from animegan_cli.engines.base import stats_engine
        from animegan_cli.runners.clip_smoothing import CARRY, StatsSmoother

        wanted = "--video-smoothing stats" if self.smoothing else "styling in tiles"
        engine = stats_engine(self.stylizer.engine, self.stylizer.spec, wanted)
        carry = CARRY if self.smoothing else 0.0
        if plan is None:
            return StatsSmoother(engine, carry)
        from animegan_cli.model.variants import VARIANTS

        half_pixel = VARIANTS[self.stylizer.checkpoint.variant].half_pixel
        return StatsSmoother(engine, carry, plan, self._tile_batch(plan), half_pixel)

    def _tile_batch(self, plan: TilePlan) -> int:
        """Tiles of a frame that run together within the budget (auto's tiles fill it)."""
        from animegan_cli.engines.tiling import TILED_IMAGE_BYTES_PER_PIXEL

        per_batch = self.settings.frames_per_batch
        if self.budget is None:
            return per_batch
        held = TILED_IMAGE_BYTES_PER_PIXEL * plan.full[0] * plan.full[1]
        return resources.frames_within((plan.tile + 3) ** 2, self.stylizer.spec.precision,
                                       self.budget - held, per_batch)

    def _clip_settings(self, source: Path, record: str, recorded: dict[str, object]
                       ) -> tuple[video.EncodeSettings, TilePlan | None]:
        """The clip's encode settings and tile plan, or VideoError when its header says it
        cannot fit.

        Checked from the probe before any frame is styled: frames over --max-pixels, and a
        frame at the model's size that needs more memory than the budget (as an image at
        --size 0 is refused) unless the clip's record says its frames are styled in tiles
        (--tile: planned with the images, pipeline/tiles.py), one frame at a time; frames
        per batch are lowered to what the budget holds.
        """
        found = video.probe(source, self.settings.max_pixels)
        width, height = found.width, found.height
        video.check_pixels(width, height, self.settings.max_pixels)
        per_batch = self.settings.frames_per_batch
        model_size = self.stylizer.input_size(width, height)
        plan = recorded_plan(recorded, model_size)
        if plan is not None:  # a tiled frame holds the budget alone
            tiled = dataclasses.replace(self.settings, record=record, frames_per_batch=1,
                                        lean=True)
            return tiled, plan
        if self.budget is not None:
            pixels = _pixels(model_size)
            precision = self.stylizer.spec.precision
            refusal = resources.frame_refusal(pixels, precision, self.budget)
            if refusal is not None:
                raise video.VideoError(refusal)
            fits = resources.frames_within(pixels, precision, self.budget, per_batch)
            if fits < per_batch:
                self.events.on_message(
                    f"{source}: lowering frames per batch from {per_batch} to {fits} to fit "
                    f"in {format_bytes(self.budget)} (see --max-memory)"
                )
                per_batch = fits
        return dataclasses.replace(self.settings, record=record, frames_per_batch=per_batch), None

    def _style(self, frames: list[video.Frame]) -> list[Image.Image]:
        """Style frames (scaled by FFmpeg) as images: Stylizer.prepare_sized -> run -> finish."""
        prepared = [self.stylizer.prepare_sized(f.image, f.size, i) for i, f in enumerate(frames)]
        pixels = self._run(prepared, self._smoother)
        styled = [self.stylizer.finish(item, p) for item, p in zip(prepared, pixels)]
        if self._paste is None:
            return styled
        return self._paste.apply([f.image for f in frames], styled, self._run)

    def _run(self, prepared: list[PreparedImage],
             smoother: StatsSmoother | None = None) -> list[torch.Tensor]:
        """The model on one batch (a clip's frames, in order, through ``smoother`` when
        smoothing; face crops never); a non-finite result fails the clip (VideoError)."""
        start = time.perf_counter()
        try:
            pixels = (self.stylizer.run(prepared) if smoother is None
                      else smoother.run(stack_pixels(prepared)))
        except NonFiniteOutput:
            raise video.VideoError(NON_FINITE_REASON) from None
        self.summary.engine_seconds += time.perf_counter() - start
        return pixels


def recorded_plan(recorded: dict[str, object], model_size: tuple[int, int]) -> TilePlan | None:
    """The tile plan a clip's record holds (``tiles`` "512px", ``tile_stats`` "WxH") for
    frames of ``model_size`` (w, h); None: its frames are styled whole."""
    from animegan_cli.engines.tiling import TilePlan

    tiles, stats = recorded.get(TILES_KEY), recorded.get(TILE_STATS_KEY)
    if not isinstance(tiles, str) or not isinstance(stats, str):
        return None
    stats_width, stats_height = (int(side) for side in stats.split("x"))
    return TilePlan((model_size[1], model_size[0]), int(tiles.removesuffix("px")),
                    (stats_height, stats_width))


def _pixels(size: tuple[int, int]) -> int:
    return size[0] * size[1]
