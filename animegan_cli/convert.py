"""``convert(options) -> Summary``: the one Python entry point that turns inputs into outputs."""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from animegan_cli import data, outputs
from animegan_cli.engine import (
    Engine,
    TorchEngine,
    resolve_backend,
    resolve_device,
    resolve_precision,
    torch_threads,
)
from animegan_cli.errors import UsageError
from animegan_cli.inputs import InputFile, discover_inputs
from animegan_cli.model import MIN_SIDE
from animegan_cli.weights import (
    DEFAULT_STYLE,
    WeightsStore,
    load_generator,
    load_state_dict,
    user_cache_dir,
)

# How many encoded-but-unwritten images may queue behind the writer before the engine
# waits: enough to hide encode time, small enough to bound memory on huge images.
MAX_PENDING_WRITES = 8
# Images an INT8 model is calibrated on (NNCF's accuracy flattened out beyond a handful).
CALIBRATION_IMAGES = 8


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
    streams: int = 1
    device: str = "cpu"
    backend: str = "auto"
    precision: str = "auto"
    compile: bool = False
    align_corners: bool = False
    overwrite: bool = False
    download: bool = True
    progress: bool = False


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
    # Where the time went: summed per stage (stages overlap, so these add up to more
    # than the wall time when the pipeline works).
    startup_seconds: float = 0.0
    prepare_seconds: float = 0.0
    engine_seconds: float = 0.0
    write_seconds: float = 0.0

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
        (options.streams >= 1, "--streams must be at least 1"),
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


def build_engine(
    options: ConvertOptions,
    on_message: Callable[[str], None],
    calibration: Callable[[], list[torch.Tensor]] | None = None,
) -> Engine:
    """Find (or download) the weights and set up the engine for the chosen device/precision."""
    device = resolve_device(options.device)
    backend = resolve_backend(options.backend, device)
    precision = resolve_precision(options.precision, device, backend)
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
    if backend == "openvino":
        from animegan_cli.openvino_engine import OpenVINOEngine

        if precision == "int8":
            on_message("quantizing the model to INT8 on the first images (cached afterwards)")
        return OpenVINOEngine(
            generator,
            resolved.checkpoint_id,
            precision,
            options.threads,
            cache_dir=user_cache_dir() / "openvino",
            calibration=calibration,
            streams=options.streams,
        )
    return TorchEngine(generator, device, precision, compile=options.compile)


def convert(options: ConvertOptions, events: ConvertEvents | None = None) -> Summary:
    """Convert every input image; bad inputs are reported and skipped, never fatal."""
    events = events or ConvertEvents()
    started = time.perf_counter()
    validate(options)
    prepare_output_dir(options.output)
    inputs = discover_inputs(options.inputs, options.recursive, exclude=options.output)
    planned = outputs.plan_outputs(inputs, options.output, options.format, options.suffix)
    summary = Summary()

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
        with torch_threads(options.threads):
            _run(options, todo, summary, events, started)
    summary.seconds = time.perf_counter() - started
    return summary


def _run(
    options: ConvertOptions,
    todo: list[tuple[InputFile, Path]],
    summary: Summary,
    events: ConvertEvents,
    started: float,
) -> None:
    settings = data.PreprocessSettings(size=options.size)
    dataset = data.ImageDataset([item.path for item, _ in todo], settings)
    # Workers start before the model loads, so the first images decode while it loads.
    prepared = iter(data.make_loader(dataset, options.num_workers))
    early: list[data.PreparedImage] = []

    def calibration_images() -> list[torch.Tensor]:
        # INT8 calibrates on this run's first images; they are processed normally after.
        for item in prepared:
            early.append(item)
            if sum(e.error is None for e in early) >= CALIBRATION_IMAGES:
                break
        return [e.pixels for e in early if e.pixels is not None]

    engine = build_engine(options, events.on_message, calibration_images)
    summary.engine = engine.description
    summary.startup_seconds = time.perf_counter() - started
    pending: deque[Future[FileResult]] = deque()

    def report(result: FileResult) -> None:
        summary.add(result)
        events.on_result(result)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            report(pending.popleft().result())

    def write(item: data.PreparedImage, pixels: torch.Tensor, share: float) -> FileResult:
        source, out = todo[item.index]
        start = time.perf_counter()
        try:
            image = data.to_output_image(pixels, item.alpha, item.original_size, options.keep_size)
            outputs.write_image_atomic(image, out, quality=options.quality)
        except OSError as exc:
            reason = f"cannot write {out}: {exc.strerror or exc}"
            return FileResult(source.path, None, "failed", reason, item.seconds + share)
        written = time.perf_counter() - start
        summary.write_seconds += written
        return FileResult(source.path, out, "converted", None, item.seconds + share + written)

    batcher = data.ShapeBatcher(options.batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="animegan-writer") as writer:

        def run_batch(batch: list[data.PreparedImage]) -> None:
            start = time.perf_counter()
            styled = engine.run(data.stack_pixels(batch))
            spent = time.perf_counter() - start
            summary.engine_seconds += spent
            share = spent / len(batch)
            for item, pixels in zip(batch, styled):
                pending.append(writer.submit(write, item, pixels, share))
            drain(MAX_PENDING_WRITES)

        try:
            for item in itertools.chain(early, prepared):
                summary.prepare_seconds += item.seconds
                if item.error is not None:
                    source, _ = todo[item.index]
                    report(FileResult(source.path, None, "failed", item.error, item.seconds))
                    continue
                for batch in batcher.add(item):
                    run_batch(batch)
            for batch in batcher.flush():
                run_batch(batch)
        finally:
            drain(0)
