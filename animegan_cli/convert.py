"""``convert(options) -> Summary``: the one Python entry point that turns inputs into outputs."""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from animegan_cli import data, outputs, resources, workers
from animegan_cli.engine import (
    Engine,
    TorchEngine,
    resolve_device,
    resolve_precision,
    torch_threads,
)
from animegan_cli.errors import RunStopped, UsageError
from animegan_cli.inputs import InputFile, discover_inputs
from animegan_cli.lock import output_lock, remove_stale_temp_files
from animegan_cli.model import MIN_SIDE
from animegan_cli.signals import Interrupted, as_interrupted, deferred
from animegan_cli.weights import DEFAULT_STYLE, WeightsStore, load_generator, load_state_dict

# How many encoded-but-unwritten images may queue behind the writer before the engine
# waits: enough to hide encode time, small enough to bound memory on huge images.
MAX_PENDING_WRITES = 8
# Write errors that are about the output file system, not the image: every later write
# would fail the same way, so the run stops instead of decoding and styling in vain.
STOP_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@dataclass
class ConvertOptions:
    """Every setting of a conversion run; the CLI flags map one to one onto these."""

    inputs: list[str]
    output: Path
    style: str = DEFAULT_STYLE
    weights: Path | None = None
    recursive: bool = True
    suffix: str = ""
    format: str = "same"
    quality: int = 95
    size: int = 512
    keep_size: bool = False
    batch_size: int = 1
    num_workers: int = 1
    threads: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    align_corners: bool = False
    overwrite: bool = False
    download: bool = True
    progress: bool = False
    max_pixels: int = data.DEFAULT_MAX_PIXELS
    max_memory: int | None = None  # bytes; None = a share of the available memory
    wait: bool = False


@dataclass
class FileResult:
    """What happened to one input."""

    input: Path
    output: Path | None
    status: str  # "converted" | "skipped" | "failed"
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (paths as strings)."""
        return {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class Summary:
    """Counts and timing of a run; failures kept with their reasons."""

    converted: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[FileResult] = field(default_factory=list)
    engine: str = ""
    found: int = 0  # inputs found; the rest of found - (converted + skipped + failed) not done
    batch_size: int = 0  # the batch size used (lowered when memory is short)

    @property
    def images_per_second(self) -> float:
        """Converted images per wall-clock second."""
        return self.converted / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: FileResult) -> None:
        """Count one result."""
        if result.status == "converted":
            self.converted += 1
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            self.failures.append(result)


@dataclass
class ConvertEvents:
    """Callbacks through which a caller (the CLI) hears about progress; all optional."""

    on_plan: Callable[[int, int], None] = lambda to_convert, skipped: None
    on_result: Callable[[FileResult], None] = lambda result: None
    on_message: Callable[[str], None] = lambda message: None


def validate(options: ConvertOptions) -> None:
    """Reject option values that cannot work, before anything is read or loaded."""
    checks = [
        (options.batch_size >= 1, "--batch-size must be at least 1"),
        (options.size == 0 or options.size >= MIN_SIDE, f"--size must be 0 or at least {MIN_SIDE}"),
        (1 <= options.quality <= 100, "--quality must be between 1 and 100"),
        (options.num_workers >= 0, "--num-workers must be 0 or more"),
        (options.threads is None or options.threads >= 1, "--threads must be at least 1"),
        (options.max_pixels >= 0, "--max-pixels must be 0 (no limit) or more"),
        (options.max_memory is None or options.max_memory > 0, "--max-memory must be above 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    if not options.inputs:
        raise UsageError("no input given")


def prepare_output_dir(path: Path) -> None:
    """Create the output folder, or fail now with a clear reason rather than per file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {path} is not writable")


def build_engine(options: ConvertOptions, on_message: Callable[[str], None]) -> Engine:
    """Find (or download) the weights and set up the engine for the chosen device/precision."""
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    store = WeightsStore.from_env()
    resolved = store.resolve(
        options.style,
        weights=options.weights,
        download=options.download,
        on_download=on_message,
        progress=options.progress,
    )
    state = load_state_dict(resolved.path, resolved.checkpoint_id)
    generator = load_generator(state, align_corners=options.align_corners)
    return TorchEngine(generator, device, precision)


def convert(options: ConvertOptions, events: ConvertEvents | None = None) -> Summary:
    """Convert every input image; bad inputs are reported and skipped, never fatal.

    The output folder is locked for the run. Ctrl-C/SIGTERM raise signals.Interrupted,
    and a full disk raises RunStopped; both carry the Summary of what was done.
    """
    events = events or ConvertEvents()
    started = time.perf_counter()
    validate(options)
    prepare_output_dir(options.output)
    summary = Summary()
    try:
        with output_lock(options.output, options.wait, events.on_message):
            _convert_locked(options, events, summary)
    except KeyboardInterrupt as exc:
        raise _with_summary(as_interrupted(exc), summary, started) from None
    except RunStopped as exc:
        raise _with_summary(exc, summary, started) from None
    summary.seconds = time.perf_counter() - started
    return summary


def _with_summary(
    exc: Interrupted | RunStopped, summary: Summary, started: float
) -> Interrupted | RunStopped:
    summary.seconds = time.perf_counter() - started
    exc.summary = summary
    return exc


def _convert_locked(options: ConvertOptions, events: ConvertEvents, summary: Summary) -> None:
    removed = remove_stale_temp_files(options.output)
    if removed:
        events.on_message(f"removed {len(removed)} temp file(s) left by an interrupted run")
    inputs = discover_inputs(options.inputs, options.recursive, exclude=options.output)
    planned = outputs.plan_outputs(inputs, options.output, options.format, options.suffix)
    summary.found = len(inputs)

    todo: list[tuple[InputFile, Path]] = []
    skipped: list[FileResult] = []
    for item, out in zip(inputs, planned):
        if not options.overwrite and out.exists():
            skipped.append(FileResult(item.path, out, "skipped", "output exists"))
        else:
            todo.append((item, out))
    events.on_plan(len(todo), len(skipped))
    for result in skipped:
        summary.add(result)
        events.on_result(result)
    if todo:
        todo, batch_size = _fit_in_memory(options, todo, summary, events)
        options = dataclasses.replace(options, batch_size=batch_size)
    if todo:
        with torch_threads(options.threads):
            _run(options, todo, summary, events)


def _fit_in_memory(
    options: ConvertOptions,
    todo: list[tuple[InputFile, Path]],
    summary: Summary,
    events: ConvertEvents,
) -> tuple[list[tuple[InputFile, Path]], int]:
    """Lower the batch size, and fail images too big, so the run stays within its budget."""
    summary.batch_size = options.batch_size
    device = resolve_device(options.device)
    if device.type != "cpu":
        return todo, options.batch_size  # the estimate is of host memory for the CPU engine
    plan = resources.plan_memory(
        [item.path for item, _ in todo],
        options.size,
        options.batch_size,
        resolve_precision(options.precision, device),
        options.max_memory or resources.default_budget(),
        options.max_pixels,
    )
    if plan.message:
        events.on_message(plan.message)
    for index in sorted(plan.too_big):
        result = FileResult(todo[index][0].path, None, "failed", plan.too_big[index])
        summary.add(result)
        events.on_result(result)
    summary.batch_size = plan.batch_size
    return [t for i, t in enumerate(todo) if i not in plan.too_big], plan.batch_size


def _run(
    options: ConvertOptions,
    todo: list[tuple[InputFile, Path]],
    summary: Summary,
    events: ConvertEvents,
) -> None:
    settings = data.PreprocessSettings(size=options.size, max_pixels=options.max_pixels)
    dataset = data.ImageDataset([item.path for item, _ in todo], settings)
    # Workers start before the model loads, so the first images decode while it loads.
    prepared = workers.prepared_images(dataset, options.num_workers)
    engine = build_engine(options, events.on_message)
    summary.engine = engine.description
    pending: deque[Future[FileResult]] = deque()
    stop_reason: list[str] = []  # set by the writer when the output file system refuses

    def report(result: FileResult) -> None:
        # A Ctrl-C waits until a finished write is taken off the queue and counted.
        with deferred():
            summary.add(result)
            events.on_result(result)

    def drain(limit: int) -> None:
        # Finished writes are reported at once (a --json reader or a SIGKILL sees them);
        # beyond ``limit`` unfinished ones, wait for the oldest.
        while pending and (len(pending) > limit or pending[0].done()):
            with deferred():
                report(pending.popleft().result())

    def write(item: data.PreparedImage, pixels: torch.Tensor, share: float) -> FileResult:
        source, out = todo[item.index]
        start = time.perf_counter()
        try:
            image = data.to_output_image(pixels, item.alpha, item.original_size, options.keep_size)
            outputs.write_image_atomic(image, out, quality=options.quality)
        except OSError as exc:
            reason = f"cannot write {out}: {exc.strerror or exc}"
            if exc.errno in STOP_ERRNOS:
                stop_reason.append(reason)
            return FileResult(source.path, None, "failed", reason, item.seconds + share)
        spent = item.seconds + share + time.perf_counter() - start
        return FileResult(source.path, out, "converted", None, spent)

    batcher = data.ShapeBatcher(options.batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="animegan-writer") as writer:

        def run_batch(batch: list[data.PreparedImage]) -> None:
            if stop_reason:
                return
            start = time.perf_counter()
            styled = engine.run(data.stack_pixels(batch))
            share = (time.perf_counter() - start) / len(batch)
            for item, pixels in zip(batch, styled):
                pending.append(writer.submit(write, item, pixels, share))
            drain(MAX_PENDING_WRITES)

        try:
            for item in prepared:
                if stop_reason:
                    break
                if item.error is not None:
                    source, _ = todo[item.index]
                    report(FileResult(source.path, None, "failed", item.error, item.seconds))
                    continue
                for batch in batcher.add(item):
                    run_batch(batch)
            for batch in batcher.flush():
                run_batch(batch)
        finally:
            try:
                drain(0)
            finally:
                prepared.close()  # stops the decoder processes
    if stop_reason:
        raise RunStopped(
            f"{stop_reason[0]}; stopping, as every further write would fail the same way "
            "(free space or fix the output folder, then run again: finished images are skipped)"
        )
