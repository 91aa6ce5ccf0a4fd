"""What a conversion run reports: one ``FileResult`` per input, a ``Summary``, and the events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FileResult:
    """What happened to one input."""

    input: Path
    output: Path | None
    status: str  # "converted" | "skipped" | "failed"; dry run: "would-convert" | "would-skip"
    error: str | None = None
    seconds: float = 0.0
    reason: str | None = None  # why it was (or would be) converted or skipped
    reused_from: Path | None = None  # the input (or earlier output) whose result was reused
    faces: dict[str, object] | None = None  # --faces: {"count", "boxes"[, "index"]}
    frames: int | None = None  # a video: frames written (dry run: in the header)
    duration: float | None = None  # a video: seconds
    worker: str | None = None  # --ray: the actor that styled it ("ray actor PID on NODE")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (paths as strings); "faces" only with --faces, "frames" and
        "duration" only for a video, "worker" only with --ray."""
        extra = {} if self.faces is None else {"faces": self.faces}
        record: dict[str, object] = {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
            "reused_from": str(self.reused_from) if self.reused_from else None,
            **extra,
        }
        if self.frames is not None:
            record["frames"] = self.frames
            record["duration"] = round(self.duration or 0.0, 3)
        if self.worker is not None:
            record["worker"] = self.worker
        return record


@dataclass
class Summary:
    """Counts and timing of a run; failures kept with their reasons."""

    converted: int = 0
    skipped: int = 0
    failed: int = 0
    reused: int = 0  # of the converted: results reused from identical or similar inputs
    excluded: int = 0  # left out by --since, --newer-than or --shard
    seconds: float = 0.0
    failures: list[FileResult] = field(default_factory=list)
    engine: str = ""
    # Where the time went: summed per stage (stages overlap, so these add up to more
    # than the wall time when the pipeline works).
    startup_seconds: float = 0.0
    prepare_seconds: float = 0.0
    engine_seconds: float = 0.0
    write_seconds: float = 0.0
    found: int = 0  # inputs found; the rest of found - (converted + skipped + failed) not done
    batch_size: int = 0  # the batch size used (lowered when memory is short)
    notes: list[str] = field(default_factory=list)  # said once: files left out, nothing to do
    faces: list[dict[str, object]] = field(default_factory=list)  # --faces: per output written
    videos: list[FileResult] = field(default_factory=list)  # converted videos (frame counts)
    # Clips are counted apart from images (a run says "2 clips ... frames/s", not "img/s"):
    clip_inputs: frozenset[Path] = frozenset()  # the inputs that are clips
    clips: int = 0  # of the converted: clips
    clips_done: int = 0  # clip results of any status (converted, skipped, failed)
    frames: int = 0  # frames styled by the clips converted (copies of a clip not counted)
    clip_seconds: float = 0.0  # time spent styling those clips

    @property
    def images(self) -> int:
        """Of the converted: images."""
        return self.converted - self.clips

    @property
    def images_per_second(self) -> float:
        """Converted images per wall-clock second (the clips' time left out)."""
        seconds = self.seconds - self.clip_seconds
        return self.images / seconds if seconds > 0 else 0.0

    @property
    def frames_per_second(self) -> float:
        """Clip frames styled per second of the clips' conversion."""
        return self.frames / self.clip_seconds if self.clip_seconds > 0 else 0.0

    def not_done(self) -> tuple[int, int]:
        """(images, clips) found and not yet converted, skipped or failed."""
        left = self.found - self.converted - self.skipped - self.failed
        clips = max(0, len(self.clip_inputs) - self.clips_done)
        return max(0, left - clips), clips

    def add(self, result: FileResult) -> None:
        """Count one result."""
        if result.input in self.clip_inputs:
            self._add_clip(result)
        if result.faces is not None:
            self.faces.append({"input": str(result.input), "output": str(result.output),
                               **result.faces})
        if result.status in ("converted", "would-convert"):
            self.converted += 1
            self.reused += result.reused_from is not None
        elif result.status in ("skipped", "would-skip"):
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append(result)

    def _add_clip(self, result: FileResult) -> None:
        self.clips_done += 1
        if result.status not in ("converted", "would-convert"):
            return
        self.clips += 1
        if result.reused_from is None:
            self.frames += result.frames or 0
            self.clip_seconds += result.seconds


@dataclass
class ConvertEvents:
    """Callbacks through which a caller (the CLI) hears about progress; all optional."""

    on_plan: Callable[[int, int], None] = lambda to_convert, skipped: None
    on_result: Callable[[FileResult], None] = lambda result: None
    on_message: Callable[[str], None] = lambda message: None
    # A video's progress: (its input, frames done, frames expected from its header).
    on_frames: Callable[[Path, int, int], None] = lambda path, done, total: None
