"""``convert(options) -> Summary``: the one Python entry point that turns inputs into outputs."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from animegan_cli import data, incremental, outputs, resources, workers
from animegan_cli.engine import NON_FINITE_REASON, EngineSpec, NonFiniteOutput, torch_threads
from animegan_cli.errors import RunStopped, UsageError, WeightsError
from animegan_cli.inputs import ListedPath, find_inputs
from animegan_cli.lock import HeldLock, output_lock, remove_stale_temp_files
from animegan_cli.model import MIN_SIDE
from animegan_cli.provenance import (
    Manifest,
    Provenance,
    checkpoint_id,
    pixel_settings,
    record_style,
    with_reuse,
)
from animegan_cli.selection import Selection
from animegan_cli.signals import Interrupted, as_interrupted, deferred
from animegan_cli.similar import HASH_BITS, SimilarIndex, dhash
from animegan_cli.stylizer import Stylizer
from animegan_cli.weights import DEFAULT_STYLE

# How many encoded-but-unwritten images may queue behind the writer before the engine
# waits: enough to hide encode time, small enough to bound memory on huge images.
MAX_PENDING_WRITES = 8
# Images an INT8 model is calibrated on (NNCF's accuracy flattened out beyond a handful).
CALIBRATION_IMAGES = 8
# Write errors that are about the output file system, not the image: every later write
# would fail the same way, so the run stops instead of decoding and styling in vain.
STOP_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
CHANGED_WHILE_READING = "changed while the run was reading it; run it again"
# The smallest --max-memory accepted: a smaller number is a slip (10 meant as 10G), and
# no image fits in it (the run's base footprint alone is resources.BASE_BYTES).
MIN_MEMORY_BUDGET = 64 << 20


@dataclass
class ConvertOptions:
    """Every setting of a conversion run; the CLI flags map one to one onto these."""

    inputs: list[str]  # files and folders; "-" stands for the paths in ``listed``
    output: Path
    listed: list[str] = field(default_factory=list)  # read from stdin: may be missing
    base: Path | None = None  # mirror inputs relative to this folder (rsync -R)
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
    trust_mtime: bool = False
    dry_run: bool = False
    since: datetime | None = None
    newer_than: Path | None = None
    shard: tuple[int, int] | None = None  # (I, N), I counted from 0
    reuse_similar: int | None = None  # max dHash distance; None = off
    max_pixels: int = data.DEFAULT_MAX_PIXELS
    max_memory: int | None = None  # bytes; None = a share of the available memory
    wait: bool = False


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

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (paths as strings)."""
        return {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
            "reused_from": str(self.reused_from) if self.reused_from else None,
        }


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

    @property
    def images_per_second(self) -> float:
        """Converted images per wall-clock second."""
        return self.converted / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: FileResult) -> None:
        """Count one result."""
        if result.status in ("converted", "would-convert"):
            self.converted += 1
            self.reused += result.reused_from is not None
        elif result.status in ("skipped", "would-skip"):
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
        (
            options.reuse_similar is None or 0 <= options.reuse_similar <= HASH_BITS,
            f"--reuse-similar must be between 0 and {HASH_BITS}",
        ),
        (options.max_pixels >= 0, "--max-pixels must be 0 (no limit) or more"),
        (
            options.max_memory is None or options.max_memory >= MIN_MEMORY_BUDGET,
            f"--max-memory must be at least {MIN_MEMORY_BUDGET >> 20}M",
        ),
        (options.base is None or options.base.is_dir(), f"--base {options.base}: not a folder"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    # A separator would put outputs in other folders, even outside OUT ("/../../x").
    if any(bad and bad in options.suffix for bad in (os.sep, os.altsep, "/", "\0")):
        raise UsageError("--suffix must not contain a path separator or NUL")
    if not options.inputs:
        raise UsageError("no input given")


def prepare_output_dir(path: Path) -> list[Path]:
    """Create the output folder, or fail now with a clear reason rather than per file.

    Returns the folders it created, deepest first (see remove_if_empty).
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"output folder {path} is a file")
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_if_empty(missing)
        raise UsageError(f"cannot create output folder {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        remove_if_empty(missing)
        raise UsageError(f"output folder {path} is not writable")
    return missing


def remove_if_empty(created: list[Path]) -> None:
    """Remove the folders a run created (deepest first) that are still empty."""
    for folder in created:
        try:
            folder.rmdir()  # refuses a folder that is not empty: nothing is lost
        except OSError:
            return


def load_stylizer(
    options: ConvertOptions,
    spec: EngineSpec,
    on_message: Callable[[str], None],
    calibration: Callable[[], list[torch.Tensor]] | None = None,
    expected_checkpoint: str | None = None,
) -> Stylizer:
    """The Stylizer a run's options ask for, on the engine resolved for the run."""
    return Stylizer.load(
        options.style,
        weights=options.weights,
        size=options.size,
        keep_size=options.keep_size,
        align_corners=options.align_corners,
        max_pixels=options.max_pixels,
        spec=spec,
        download=options.download,
        progress=options.progress,
        on_message=on_message,
        calibration=calibration,
        expected_checkpoint=expected_checkpoint,
    )


def engine_spec(options: ConvertOptions) -> EngineSpec:
    """The run's engine, with ``auto`` resolved: computed once per run."""
    return EngineSpec.resolve(
        options.device,
        options.backend,
        options.precision,
        options.threads,
        options.streams,
        options.compile,
    )


def convert(options: ConvertOptions, events: ConvertEvents | None = None) -> Summary:
    """Convert every input image; bad inputs are reported and skipped, never fatal.

    Raises Interrupted (Ctrl-C, SIGTERM) or RunStopped (the output file system refuses
    writes) with the summary so far attached; what was written stays whole.
    """
    events = events or ConvertEvents()
    started = time.perf_counter()
    validate(options)
    spec = engine_spec(options)
    selection = Selection.build(options.shard, options.since, options.newer_than)
    summary = Summary()
    if not options.listed and all(source == "-" for source in options.inputs):
        # A quiet night (`find -newer` matched nothing) is not a usage error.
        _note(summary, events, "nothing to do: the input list was empty")
        summary.seconds = time.perf_counter() - started
        return summary
    if options.dry_run:
        try:
            plan, _ = _plan(options, spec, selection, summary, events)
            _report_dry_run(plan, summary, events)
        except KeyboardInterrupt as exc:  # also a --json reader that went away
            raise _with_summary(as_interrupted(exc), summary, started) from None
        summary.seconds = time.perf_counter() - started
        return summary
    created = prepare_output_dir(options.output)
    try:
        # Shards of one job share the folder (and the lock); a plain run has it to itself.
        shared = options.shard is not None
        with output_lock(options.output, options.wait, events.on_message, shared) as held:
            _convert_locked(options, spec, selection, events, summary, started, held)
    except KeyboardInterrupt as exc:
        raise _with_summary(as_interrupted(exc), summary, started) from None
    except RunStopped as exc:
        raise _with_summary(exc, summary, started) from None
    except Exception:
        # A refused run (unknown style, missing input, failed download, bad weights) leaves
        # no empty OUT behind; a run that started and was stopped keeps it.
        remove_if_empty(created)
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _with_summary(
    exc: Interrupted | RunStopped, summary: Summary, started: float
) -> Interrupted | RunStopped:
    summary.seconds = time.perf_counter() - started
    exc.summary = summary
    return exc


def _note(summary: Summary, events: ConvertEvents, message: str) -> None:
    summary.notes.append(message)
    events.on_message(message)


def _plan(
    options: ConvertOptions,
    spec: EngineSpec, selection: Selection, summary: Summary, events: ConvertEvents
) -> tuple[incremental.Plan, Manifest]:
    """What to do with each input (and its output name), decided before any pixel is read."""
    listed = [ListedPath(p) for p in options.listed]
    sources = [s for source in options.inputs for s in (listed if source == "-" else [source])]
    found = find_inputs(sources, options.recursive, options.output, base=options.base)
    for message in found.notes():
        _note(summary, events, message)
    planned = outputs.plan_outputs(found.files, options.output, options.format, options.suffix)
    inputs = outputs.fail_collisions(found.files, planned, options.format)
    summary.found = len(inputs)
    manifest = Manifest.load(options.output)
    if manifest.warning:
        events.on_message(manifest.warning)
    rules = _rules(options, spec, selection, events.on_message)
    return incremental.plan_work(inputs, planned, rules, manifest), manifest


def _convert_locked(
    options: ConvertOptions,
    spec: EngineSpec,
    selection: Selection,
    events: ConvertEvents,
    summary: Summary,
    started: float,
    held: HeldLock,
) -> None:
    removed = remove_stale_temp_files(options.output)
    if removed:
        events.on_message(f"removed {len(removed)} temp file(s) left by an interrupted run")
    plan, manifest = _plan(options, spec, selection, summary, events)
    held.check()  # planning can take long: OUT may be gone by now
    for output, record in plan.repairs:
        manifest.record(output, record)
    # plan.decisions[i] is inputs[i]; duplicates name their leader by that index.
    converting = [i for i, d in enumerate(plan.decisions) if d.action == incremental.CONVERT]
    followers: dict[int, list[incremental.Decision]] = {}
    for decision in plan.decisions:
        if decision.action == incremental.DUPLICATE and decision.leader is not None:
            followers.setdefault(decision.leader, []).append(decision)
    copies = [d for d in plan.decisions if d.action == incremental.COPY]
    # Decided without writing: skipped, or failed before anything was read (FAIL).
    settled = [
        FileResult(d.item.path, d.output, "skipped", reason=d.reason)
        for d in plan.decisions
        if d.action == incremental.SKIP
    ]
    settled += [
        FileResult(d.item.path, None, "failed", d.reason, reason=d.reason)
        for d in plan.decisions
        if d.action == incremental.FAIL
    ]
    summary.excluded = sum(d.action == incremental.EXCLUDE for d in plan.decisions)
    reused = len(copies) + sum(len(group) for group in followers.values())
    events.on_plan(len(converting) + reused, len(settled))
    for result in settled:
        summary.add(result)
        events.on_result(result)
    for decision in copies:
        held.check()
        result = _copy(decision, manifest)
        summary.add(result)
        events.on_result(result)
    if converting:
        too_big, batch_size = _fit_in_memory(
            options, spec, [plan.decisions[i] for i in converting], summary, events
        )
        options = dataclasses.replace(options, batch_size=batch_size)
        for j, reason in too_big.items():
            i = converting[j]
            for target in [plan.decisions[i], *followers.get(i, [])]:
                result = FileResult(target.item.path, None, "failed", reason, reason=target.reason)
                summary.add(result)
                events.on_result(result)
        converting = [i for j, i in enumerate(converting) if j not in too_big]
    todo = [plan.decisions[i] for i in converting]
    # From here on, duplicates are keyed by their leader's position in todo.
    duplicates = {j: followers[i] for j, i in enumerate(converting) if i in followers}
    if todo:
        with torch_threads(options.threads):
            _run(options, spec, todo, duplicates, summary, events, manifest, started, held)
    if not held.shared:  # rewriting the manifest under running shards would lose lines
        held.check()
        manifest.compact_if_needed()
    if manifest.failure:
        events.on_message(
            f"manifest not updated ({manifest.failure}); outputs still carry their provenance"
        )


def _fit_in_memory(
    options: ConvertOptions,
    spec: EngineSpec,
    todo: list[incremental.Decision],
    summary: Summary,
    events: ConvertEvents,
) -> tuple[dict[int, str], int]:
    """Lower the batch size, and fail images too big, so the run stays within its budget.

    Returns {index in todo: reason} for the images that cannot fit, and the batch size.
    """
    summary.batch_size = options.batch_size
    if spec.device != "cpu":
        return {}, options.batch_size  # the estimate is of host memory for the CPU engine
    plan = resources.plan_memory(
        [d.item.path for d in todo],
        options.size,
        options.batch_size,
        spec.precision,
        options.max_memory or resources.default_budget(),
        options.max_pixels,
    )
    if plan.message:
        events.on_message(plan.message)
    summary.batch_size = plan.batch_size
    return dict(plan.too_big), plan.batch_size


def _rules(
    options: ConvertOptions,
    spec: EngineSpec,
    selection: Selection,
    on_message: Callable[[str], None],
) -> incremental.Rules:
    """What up-to-date outputs must match; precision and checkpoint id found without loading."""
    try:
        checkpoint: str | None = checkpoint_id(options.style, options.weights)
    except WeightsError as exc:
        if not options.dry_run:
            raise
        on_message(f"{exc}; the dry run does not compare checkpoints")
        checkpoint = None
    return incremental.Rules(
        style=record_style(options.style, options.weights, checkpoint),
        checkpoint=checkpoint,
        settings=pixel_settings(
            options.size, spec.precision, options.align_corners, options.keep_size, spec.backend,
            spec.device,
        ),
        quality=options.quality,
        overwrite=options.overwrite,
        trust_mtime=options.trust_mtime,
        reuse_similar=options.reuse_similar,
        selection=selection,
    )


def _report_dry_run(plan: incremental.Plan, summary: Summary, events: ConvertEvents) -> None:
    """Report what a run would do with each input; reads no pixels, loads no model."""
    events.on_plan(sum(d.writes for d in plan.decisions), sum(not d.writes for d in plan.decisions))
    for d in plan.decisions:
        reused = d.source if d.action in (incremental.DUPLICATE, incremental.COPY) else None
        status = "would-convert" if d.writes else "would-skip"
        result = FileResult(d.item.path, d.output, status, reason=d.reason, reused_from=reused)
        if d.action == incremental.FAIL:
            result = FileResult(d.item.path, None, "failed", d.reason, reason=d.reason)
        if d.action == incremental.EXCLUDE:
            summary.excluded += 1
        else:
            summary.add(result)
        events.on_result(result)


def _copy(decision: incremental.Decision, manifest: Manifest) -> FileResult:
    """Give an input the existing output of an identical input (an earlier run's result)."""
    start = time.perf_counter()
    source, out = decision.source, decision.output
    assert source is not None and decision.record is not None
    try:
        incremental.copy_output(source, out, decision.record, manifest)
    except OSError as exc:
        reason = f"cannot write {out}: {exc.strerror or exc}"
        return FileResult(decision.item.path, None, "failed", reason, reason=decision.reason)
    spent = time.perf_counter() - start
    return FileResult(
        decision.item.path, out, "converted", None, spent, decision.reason, reused_from=source
    )


def _changed_since_planning(item: data.PreparedImage, target: incremental.Decision) -> bool:
    """Whether the bytes decoded are not those hashed when planning (the file was replaced).

    An input that could not be hashed then gets the hash of what was decoded.
    """
    assert target.record is not None
    planned = target.record.input_blake2b
    if item.blake2b is None:
        return False
    if not planned:
        target.record = dataclasses.replace(target.record, input_blake2b=item.blake2b)
        return False
    return item.blake2b != planned


def _run(
    options: ConvertOptions,
    spec: EngineSpec,
    todo: list[incremental.Decision],
    duplicates: dict[int, list[incremental.Decision]],
    summary: Summary,
    events: ConvertEvents,
    manifest: Manifest,
    started: float,
    held: HeldLock,
) -> None:
    settings = data.PreprocessSettings(size=options.size, max_pixels=options.max_pixels)
    dataset = data.ImageDataset([d.item.path for d in todo], settings)
    # Workers start before the model loads, so the first images decode while it loads.
    prepared = workers.prepared_images(dataset, options.num_workers)
    early: list[data.PreparedImage] = []

    def calibration_images() -> list[torch.Tensor]:
        # INT8 calibrates on this run's first images; they are processed normally after.
        for item in prepared:
            early.append(item)
            if sum(e.error is None for e in early) >= CALIBRATION_IMAGES:
                break
        return [e.pixels for e in early if e.pixels is not None]

    stylizer = load_stylizer(
        options, spec, events.on_message, calibration_images, todo[0].record.checkpoint or None
    )
    summary.engine = stylizer.description
    summary.startup_seconds = time.perf_counter() - started
    pending: deque[Future[FileResult]] = deque()
    similar: SimilarIndex[tuple[data.PreparedImage, int]] | None = None
    if options.reuse_similar is not None:
        similar = SimilarIndex(options.reuse_similar)
    stop_reason: list[str] = []  # the writer's RunStopped message: the run cannot go on

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

    def write(
        target: incremental.Decision,
        item: data.PreparedImage,
        pixels: torch.Tensor,
        spent: float,
        record: Provenance,
        reused_from: Path | None,
    ) -> FileResult:
        out = target.output
        start = time.perf_counter()
        try:
            held.check()
            image = stylizer.finish(item, pixels)
            outputs.write_image_atomic(
                image, out, quality=options.quality, metadata=record.to_json(),
                root=options.output,
                before_rename=incremental.record_before_rename(manifest, out, record),
            )
        except RunStopped as exc:
            stop_reason.append(str(exc))
            reason = f"cannot write {out}: the output folder was removed or moved"
            return FileResult(target.item.path, None, "failed", reason, spent, target.reason)
        except OSError as exc:
            reason = f"cannot write {out}: {exc.strerror or exc}"
            if exc.errno in STOP_ERRNOS:
                stop_reason.append(
                    f"{reason}; stopping, as every further write would fail the same way "
                    "(free space or fix the output folder, then run again: finished images "
                    "are skipped)"
                )
            return FileResult(target.item.path, None, "failed", reason, spent, target.reason)
        written = time.perf_counter() - start
        summary.write_seconds += written
        spent += written
        return FileResult(
            target.item.path, out, "converted", None, spent, target.reason, reused_from
        )

    def emit(
        item: data.PreparedImage,
        pixels: torch.Tensor,
        spent: float,
        lender: tuple[int, int] | None = None,
    ) -> None:
        """Write one styled result to its input's output and to those of its duplicates."""
        target = todo[item.index]
        record, source = target.record, None
        if lender is not None:  # --reuse-similar: pixels are another image's result
            lent, distance = todo[lender[0]], lender[1]
            record = with_reuse(record, lent.record.input_blake2b, distance)
            source = lent.item.path
        pending.append(writer.submit(write, target, item, pixels, spent, record, source))
        for dup in duplicates.get(item.index, []):
            dup_record = dup.record
            if lender is not None:
                dup_record = with_reuse(dup.record, record.similar_to, lender[1])
            origin = source or target.item.path
            pending.append(writer.submit(write, dup, item, pixels, 0.0, dup_record, origin))

    def borrow(item: data.PreparedImage) -> bool:
        """With --reuse-similar: give ``item`` a look-alike's result; False to style it."""
        assert similar is not None
        value = dhash(item.pixels)  # type: ignore[arg-type]
        found = similar.find(item.shape, value)
        if found is None:
            similar.add(item.index, item.shape, value)
            return False
        lender, distance = found
        pixels = similar.result(lender)
        if pixels is None:
            similar.wait(lender, (item, distance))
        else:
            emit(item, pixels, item.seconds, (lender, distance))
        return True

    batcher = data.ShapeBatcher(options.batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="animegan-writer") as writer:

        def fail(item: data.PreparedImage, reason: str, spent: float) -> None:
            for target in [todo[item.index], *duplicates.get(item.index, [])]:
                report(FileResult(target.item.path, None, "failed", reason, spent, target.reason))

        def run_batch(batch: list[data.PreparedImage]) -> None:
            if stop_reason:
                return
            start = time.perf_counter()
            bad: set[int] = set()
            try:
                styled = stylizer.run(batch)
            except NonFiniteOutput as exc:
                styled, bad = exc.pixels, set(exc.bad)
            spent = time.perf_counter() - start
            summary.engine_seconds += spent
            share = spent / len(batch)
            for position, (item, pixels) in enumerate(zip(batch, styled)):
                if position in bad:
                    fail(item, NON_FINITE_REASON, item.seconds + share)
                    waiting = similar.drop(item.index) if similar is not None else []
                    for follower, _ in waiting:  # look-alikes that would reuse this result
                        fail(follower, NON_FINITE_REASON, follower.seconds)
                    continue
                emit(item, pixels, item.seconds + share)
                if similar is not None:
                    for follower, distance in similar.styled(item.index, pixels):
                        emit(follower, pixels, follower.seconds, (item.index, distance))
            drain(MAX_PENDING_WRITES)

        try:
            for item in itertools.chain(early, prepared):
                summary.prepare_seconds += item.seconds
                if stop_reason:
                    break
                if item.error is not None:
                    fail(item, item.error, item.seconds)
                    continue
                if _changed_since_planning(item, todo[item.index]):
                    lead = todo[item.index]
                    report(FileResult(lead.item.path, None, "failed", CHANGED_WHILE_READING,
                                      item.seconds, lead.reason))
                    for dup in duplicates.get(item.index, []):
                        reason = f"identical to {lead.item.path}, which {CHANGED_WHILE_READING}"
                        report(FileResult(dup.item.path, None, "failed", reason, 0.0, dup.reason))
                    continue
                if similar is not None and borrow(item):
                    drain(MAX_PENDING_WRITES)
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
        raise RunStopped(stop_reason[0])
