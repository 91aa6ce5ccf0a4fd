"""``convert(options) -> Summary``: the one Python entry point that turns inputs into outputs.

The model's modules (stylizer, workers: torch, OpenVINO) are imported only once something
is to be styled: a dry run, or a re-run where every output is up to date, never loads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from animegan_cli.core.errors import RunStopped, UsageError, WeightsError
from animegan_cli.core.signals import Interrupted, as_interrupted
from animegan_cli.engines import base as engines
from animegan_cli.engines import tiling
from animegan_cli.engines.base import EngineSpec, torch_threads
from animegan_cli.faces.detect import FaceSettings
from animegan_cli.media import data, kinds, outputs, video
from animegan_cli.media.colour import colour_problem
from animegan_cli.media.formats import PngLevel, png_level_problem, size_problem
from animegan_cli.media.inputs import ListedPath, find_inputs, refuse_outputs_inside
from animegan_cli.model.weights import engine_cache_dir
from animegan_cli.pipeline import decoding, distributors, loop, resources
from animegan_cli.pipeline.lock import HeldLock, output_lock, remove_stale_temp_files
from animegan_cli.pipeline.loop import CHANGED_WHILE_READING  # noqa: F401  (said by convert)
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.pipeline.similar import HASH_BITS
from animegan_cli.pipeline.tiles import TilePlanner, planner_for
from animegan_cli.pipeline.writer import Target, Writer
from animegan_cli.records import incremental
from animegan_cli.records.checkpoint import checkpoint_id, record_style
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.selection import Selection
from animegan_cli.records.staleness import recorded_settings
from animegan_cli.settings import fields

if TYPE_CHECKING:
    import torch

    from animegan_cli.stylizer import Stylizer

# Images an INT8 model is calibrated on (NNCF's accuracy flattened out beyond a handful).
CALIBRATION_IMAGES = 8
# The smallest --max-memory accepted: a smaller number is a slip (10 meant as 10G), and
# no image fits in it (the run's base footprint alone is resources.BASE_BYTES).
MIN_MEMORY_BUDGET = 64 << 20


@dataclass
class ConvertOptions:
    """Every setting of a conversion run; the CLI flags map one to one onto these.

    Each default is its setting's declaration's (settings/fields.py), never written here.
    """

    inputs: list[str]  # files and folders; "-" stands for the paths in ``listed``
    output: Path
    listed: list[str] = field(default_factory=list)  # read from stdin: may be missing
    base: Path | None = None  # mirror inputs relative to this folder (rsync -R)
    style: str = fields.STYLE.default
    weights: Path | None = None
    recursive: bool = fields.RECURSIVE.default
    suffix: str = fields.SUFFIX.default
    format: str = fields.FORMAT.default
    quality: int = fields.QUALITY.default
    png_level: PngLevel = fields.PNG_LEVEL.default  # zlib level (or rle) of PNG outputs; no pixel
    size: int = fields.SIZE.default
    keep_size: bool = False
    batch_size: int = fields.BATCH_SIZE.default
    num_workers: int = fields.NUM_WORKERS.default
    threads: int | None = None
    streams: int = fields.STREAMS.default
    device: str = fields.DEVICE.default
    backend: str = fields.BACKEND.default
    precision: str = fields.PRECISION.default
    compile: bool = False
    shapes: str = fields.SHAPES.default  # OpenVINO: compile per input shape, or one dynamic model
    align_corners: bool = False
    colour: str = fields.COLOUR.default  # what results keep of the photo's (media/colour.py)
    overwrite: bool = False
    download: bool = True
    progress: bool = False
    trust_mtime: bool = False
    dry_run: bool = False
    since: datetime | None = None
    newer_than: Path | None = None
    shard: tuple[int, int] | None = None  # (I, N), I counted from 0
    reuse_similar: int | None = None  # max dHash distance; None = off
    max_pixels: int = fields.MAX_PIXELS.default
    max_memory: int | None = None  # bytes; None = a share of the available memory
    wait: bool = False
    faces: FaceSettings = field(default_factory=FaceSettings)  # --faces and its settings
    ray: str | None = None  # --ray: None = off, "" = bare (RAY_ADDRESS, else local), or address
    video_format: str = fields.VIDEO_FORMAT.default  # same | mp4 | mkv | webm (video.py)
    video_crf: int = fields.VIDEO_CRF.default
    frames_per_batch: int = fields.FRAMES_PER_BATCH.default
    video_smoothing: str = fields.VIDEO_SMOOTHING.default  # off | stats (clip_smoothing.py)
    keep_partial_video: bool = False
    tile: str = fields.TILE.default  # auto | off | a tile side (engines/tiling.py)
    verbose: bool = False  # -v: also the libraries' own notes (Ray's warnings with --ray)

    @property
    def preprocess(self) -> data.PreprocessSettings:
        """How inputs are decoded and sized for the model, and the largest file read."""
        return data.PreprocessSettings(size=self.size, max_pixels=self.max_pixels,
                                       max_file_bytes=resources.max_file_bytes(self.max_memory))


# The declared settings of ConvertOptions that carry a check of their own.
_CHECKED = tuple(s for s in fields.CONVERT_OPTIONS
                 if s.check is not None and s.name in ConvertOptions.__dataclass_fields__)


def validate(options: ConvertOptions) -> None:
    """Reject option values that cannot work, before anything is read or loaded.

    The engine's own settings (--threads, --streams, device, backend, precision) are
    checked where they are resolved: engines.resolve_spec, right after this.
    """
    png_problem = png_level_problem(options.png_level)
    # The declared checks first (settings/fields.py: --batch-size, --size, --quality, ...).
    checks = [(False, problem) for problem in fields.problems(
        _CHECKED, {s.name: getattr(options, s.name) for s in _CHECKED})]
    checks += [
        (png_problem is None, str(png_problem)),
        (
            options.reuse_similar is None or 0 <= options.reuse_similar <= HASH_BITS,
            f"--reuse-similar must be between 0 and {HASH_BITS}",
        ),
        (
            options.max_memory is None or options.max_memory >= MIN_MEMORY_BUDGET,
            f"--max-memory must be at least {MIN_MEMORY_BUDGET >> 20}M",
        ),
        (options.base is None or options.base.is_dir(), f"--base {options.base}: not a folder"),
        *video.option_checks(options.video_format, options.video_smoothing),
        (colour_problem(options.colour) is None, str(colour_problem(options.colour))),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    # A separator would put outputs in other folders, even outside OUT ("/../../x").
    if any(bad and bad in options.suffix for bad in (os.sep, os.altsep, "/", "\0")):
        raise UsageError("--suffix must not contain a path separator or NUL")
    if not options.inputs:
        raise UsageError("no input given")
    options.faces.validate(reuse_similar=options.reuse_similar is not None)
    if options.ray is not None:  # Ray itself is imported only when a run uses it
        distributors.runner("ray").validate(options)


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
    warmup: engines.WarmupHandle | None = None,
) -> Stylizer:
    """The Stylizer a run's options ask for, on the engine resolved for the run."""
    from animegan_cli.stylizer import Stylizer

    # The model and pixel settings by their declared names; the engine's come resolved (spec).
    model = {s.name: getattr(options, s.name) for s in fields.STYLIZER_SETTINGS
             if s not in fields.ENGINE_GROUP}
    return Stylizer.load(
        **model,
        spec=spec,
        download=options.download,
        progress=options.progress,
        on_message=on_message,
        calibration=calibration,
        expected_checkpoint=expected_checkpoint,
        warmup=warmup,
    )


def engine_spec(options: ConvertOptions) -> EngineSpec:
    """The run's engine, with ``auto`` resolved: computed once per run."""
    return engines.resolve_spec(
        options.device,
        options.backend,
        options.precision,
        options.threads,
        streams=options.streams,
        compile=options.compile,
        shapes=options.shapes,
    )


@dataclass
class Kept:
    """What a long-lived caller (``watch``) keeps across convert runs: OUT's lock, taken
    once and held for its life, and the Stylizer the first run that styled loaded."""

    held: HeldLock
    stylizer: Stylizer | None = None


def convert(options: ConvertOptions, events: ConvertEvents | None = None,
            kept: Kept | None = None) -> Summary:
    """Convert every input image; bad inputs are reported and skipped, never fatal.

    With ``kept``, OUT is already locked (its lock is used, not taken) and the model is
    loaded once, by the first run that styles, then reused.
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
        if options.faces.on:
            _note(summary, events, options.faces.dry_run_note())
        try:
            plan, _ = _plan(options, spec, selection, summary, events, _tile_planner(options, spec))
            _report_dry_run(plan, summary, events)
        except KeyboardInterrupt as exc:  # also a --json reader that went away
            raise _with_summary(as_interrupted(exc), summary, started) from None
        summary.seconds = time.perf_counter() - started
        return summary
    created = prepare_output_dir(options.output) if kept is None else []
    try:
        # Shards of one job share the folder (and the lock); a plain run has it to itself.
        shared = options.shard is not None
        with _locked(options, events, shared, kept) as locked:
            _convert_locked(options, spec, selection, events, summary, started, locked)
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


@contextlib.contextmanager
def _locked(options: ConvertOptions, events: ConvertEvents, shared: bool,
            kept: Kept | None) -> Iterator[Kept]:
    """OUT's lock for this run: the caller's, or taken for the run."""
    if kept is not None:
        yield kept
        return
    with output_lock(options.output, options.wait, events.on_message, shared) as held:
        yield Kept(held)


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
    spec: EngineSpec, selection: Selection, summary: Summary, events: ConvertEvents,
    tiles: TilePlanner | None = None,
) -> tuple[incremental.Plan, Manifest]:
    """What to do with each input (and its output name), decided before any pixel is read."""
    listed = [ListedPath(p) for p in options.listed]
    sources = [s for source in options.inputs for s in (listed if source == "-" else [source])]
    found = find_inputs(sources, options.recursive, options.output, base=options.base)
    for message in found.notes():
        _note(summary, events, message)
    planned = outputs.plan_outputs(found.files, options.output, options.format, options.suffix,
                                   video_format=options.video_format)
    refuse_outputs_inside(found.inside_output, found.files, planned, options.output)
    inputs = outputs.fail_collisions(found.files, planned, options.format)
    summary.found = len(inputs)
    summary.clip_inputs = frozenset(item.path for item in inputs if item.kind == kinds.VIDEO)
    manifest = Manifest.load(options.output)
    if manifest.warning:
        events.on_message(manifest.warning)
    rules = _rules(options, spec, selection, events.on_message, tiles)
    if options.faces.mode != "crop":
        return incremental.plan_work(inputs, planned, rules, manifest), manifest
    from animegan_cli.faces import stage as face_stage  # crop mode: plan by each input's first crop

    plan = incremental.plan_work(inputs, face_stage.anchors(planned, manifest), rules, manifest)
    face_stage.recheck_crops(plan, manifest)
    return plan, manifest


def _convert_locked(
    options: ConvertOptions,
    spec: EngineSpec,
    selection: Selection,
    events: ConvertEvents,
    summary: Summary,
    started: float,
    kept: Kept,
) -> None:
    """Plan the run, settle what needs no styling, style the rest; OUT's lock is held."""
    held = kept.held
    removed = remove_stale_temp_files(options.output)
    if removed:
        events.on_message(f"removed {len(removed)} temp file(s) left by an interrupted run")
    tiles = _tile_planner(options, spec)
    plan, manifest = _plan(options, spec, selection, summary, events, tiles)
    held.check()  # planning can take long: OUT may be gone by now
    for output, record in plan.repairs:
        manifest.record(output, record)
    targets = _settle(plan, manifest, held, summary, events)
    whole = [t for t in targets if t.lead.item.styled_whole]  # to their kinds' runners, after
    targets = [t for t in targets if not t.lead.item.styled_whole]
    targets = _fail_unwritable(options, targets, summary, events)
    if targets:
        targets, batch_size = _fit_in_memory(options, spec, targets, summary, events, tiles)
        options = dataclasses.replace(options, batch_size=batch_size)
    if options.ray is not None and (targets or whole):  # clips too: each styled on an actor
        distributors.runner("ray").run(options, spec, targets + whole, summary, events, manifest,
                                       started, held)
        whole = []
    elif targets:
        # The warm-up compiles on a thread while the run decodes (and imports torch, where
        # it decodes in processes).
        in_process = decoding.in_process(len(targets), options.num_workers)
        threads = contextlib.nullcontext() if in_process else torch_threads(options.threads)
        with _warmed(options, spec, targets, kept) as warmup, threads:
            kept.stylizer = _run(options, spec, targets, summary, events, manifest, started,
                                 held, warmup, kept.stylizer, in_process, tiles)
    if whole:
        kept.stylizer = _style_whole(options, spec, whole, kept.stylizer, manifest, held,
                                     summary, events, started)
    if not held.shared:  # rewriting the manifest under running shards would lose lines
        held.check()
        manifest.compact_if_needed()
    if manifest.failure:
        events.on_message(
            f"manifest not updated ({manifest.failure}); outputs still carry their provenance"
        )


def _style_whole(
    options: ConvertOptions,
    spec: EngineSpec,
    targets: list[Target],
    stylizer: Stylizer | None,
    manifest: Manifest,
    held: HeldLock,
    summary: Summary,
    events: ConvertEvents,
    started: float,
) -> Stylizer | None:
    """Hand the clips and animations to their kinds' runners, kind by kind, in registry
    order, with the Stylizer the images loaded (or one the first runner loads); returns it."""
    load = functools.partial(load_stylizer, options, spec, events.on_message)
    with torch_threads(options.threads):
        for kind in kinds.KINDS.values():
            mine = [t for t in targets if t.lead.item.kind == kind.name]
            if mine:
                stylizer = kind.load_runner().convert_all(
                    options, mine, stylizer, load, manifest, held, summary, events, started)
    return stylizer


def _warmed(
    options: ConvertOptions, spec: EngineSpec, targets: list[Target], kept: Kept
) -> contextlib.AbstractContextManager[engines.WarmupHandle | None]:
    """The engine's warm-up for the run's first images (OpenVINO's compiles them ahead);
    none for a model already loaded."""
    if kept.stylizer is not None:
        return contextlib.nullcontext()
    assert targets[0].lead.record is not None
    return engines.warmed(spec, engines.WarmupRequest(
        targets[0].lead.record.checkpoint,
        options.align_corners,
        engine_cache_dir(spec.backend),
        [t.lead.item.path for t in targets],
        options.preprocess,
        options.batch_size,
    ))


def _targets(decisions: list[incremental.Decision]) -> list[Target]:
    """The inputs to style, in input order, each with the identical inputs that share it."""
    by_leader = {
        i: Target(d) for i, d in enumerate(decisions) if d.action == incremental.CONVERT
    }
    for decision in decisions:  # a duplicate names its leader by its index in decisions
        if decision.action == incremental.DUPLICATE and decision.leader in by_leader:
            by_leader[decision.leader].duplicates.append(decision)
    return list(by_leader.values())


def _settle(
    plan: incremental.Plan,
    manifest: Manifest,
    held: HeldLock,
    summary: Summary,
    events: ConvertEvents,
) -> list[Target]:
    """Report what needs no styling (skips, early failures, copies); returns what to style."""
    targets = _targets(plan.decisions)
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
    reused = len(copies) + sum(len(t.duplicates) for t in targets)
    events.on_plan(len(targets) + reused, len(settled))
    for result in settled:
        _report(result, summary, events)
    for decision in copies:
        held.check()
        _report(_copy(decision, manifest), summary, events)
    return targets


def _report(result: FileResult, summary: Summary, events: ConvertEvents) -> None:
    """Count and announce a result decided before any image is styled."""
    summary.add(result)
    events.on_result(result)


def _fit_in_memory(
    options: ConvertOptions,
    spec: EngineSpec,
    targets: list[Target],
    summary: Summary,
    events: ConvertEvents,
    tiles: TilePlanner | None = None,
) -> tuple[list[Target], int]:
    """Lower the batch size, and fail images too big, so the run stays within its budget
    (images styled in tiles fit by their plan).

    Returns the targets that fit, and the batch size.
    """
    summary.batch_size = options.batch_size
    if spec.device != "cpu":
        return targets, options.batch_size  # the estimate is of host memory for the CPU engine
    plan = resources.plan_memory(
        [t.lead.item.path for t in targets],
        options.size,
        options.batch_size,
        spec.precision,
        tiles.budget if tiles else options.max_memory or resources.default_budget(),
        options.max_pixels,
        _tiled_costs(targets, tiles, spec.precision),
    )
    if plan.message:
        events.on_message(plan.message)
    summary.batch_size = plan.batch_size
    too_big = dict(plan.too_big)  # {index in targets: reason}
    for j, reason in too_big.items():
        for result in targets[j].failed(reason):
            _report(result, summary, events)
    return [t for j, t in enumerate(targets) if j not in too_big], plan.batch_size


def _tile_planner(options: ConvertOptions, spec: EngineSpec) -> TilePlanner | None:
    """The run's tile planner (decisions from headers and one budget), or None: no image
    can be tiled. Not with --faces (its stage takes the image) or --ray (its actors would
    decide again, on other budgets); ``auto`` not on a GPU (the budget is host memory)."""
    if options.faces.on or options.ray is not None:
        return None
    if options.tile == tiling.AUTO and spec.device != "cpu":
        return None
    stats_capable = engines.supports_norm_stats(spec)
    if not stats_capable and tiling.parse_tile(options.tile) not in (tiling.OFF, tiling.AUTO):
        engines.stats_engine(None, spec, f"--tile {options.tile}")  # type: ignore[arg-type]  # raises
    budget = options.max_memory or resources.default_budget()
    return planner_for(options.tile, options.size, budget, spec.precision,
                       options.align_corners, stats_capable)


def _tiled_costs(targets: list[Target], tiles: TilePlanner | None,
                 precision: str) -> dict[int, int]:
    """For the images styled in tiles (by index in ``targets``), the pixels each costs."""
    if tiles is None:
        return {}
    plans = {j: tiles.plan(t.lead.item.path) for j, t in enumerate(targets)}
    return {j: plan.cost_pixels(precision) for j, plan in plans.items() if plan is not None}


def _fail_unwritable(
    options: ConvertOptions, targets: list[Target], summary: Summary, events: ConvertEvents
) -> list[Target]:
    """Fail, from their headers, the images whose output format cannot hold them (WebP's
    16383 px a side) before any is decoded; returns the others."""
    kept = []
    for target in targets:
        problems = [_output_size_problem(options, d) for d in target.decisions]
        if None in problems:  # a duplicate in another format: the writer fails each alone
            kept.append(target)
            continue
        for result in target.failed(problems[0]):  # type: ignore[arg-type]
            _report(result, summary, events)
    return kept


def _output_size_problem(options: ConvertOptions, decision: incremental.Decision) -> str | None:
    """Why the output format cannot hold this input's output, told from its header; or None."""
    fmt = outputs.format_of(decision.output)
    bounded = options.size and not options.keep_size and options.size <= fmt.max_side
    if not fmt.max_side or bounded or options.faces.mode == "crop":
        return None  # no limit, or no output side can exceed it (crops: the faces' size)
    upright = data.header_upright_size(decision.item.path)
    if upright is None:
        return None  # decoding will say what is wrong with it
    width, height = upright if options.keep_size else data.target_size(*upright, options.size)
    problem = size_problem(fmt, width, height)
    if problem is None:
        return None
    fix = "drop --keep-size" if options.keep_size else f"a --size of {fmt.max_side} or less"
    return f"{problem}; use another --format or {fix}"


def _rules(
    options: ConvertOptions,
    spec: EngineSpec,
    selection: Selection,
    on_message: Callable[[str], None],
    tiles: TilePlanner | None = None,
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
        settings={
            **recorded_settings(
                options.size, spec.precision, options.align_corners, options.keep_size,
                spec.backend, spec.device, options.colour,
            ),
            **options.faces.record(),
        },
        quality=options.quality,
        overwrite=options.overwrite,
        trust_mtime=options.trust_mtime,
        reuse_similar=options.reuse_similar,
        selection=selection,
        video_crf=options.video_crf,
        per_input=tiles.recorded if tiles is not None else None,
        video_smoothing=options.video_smoothing,
    )


def _report_dry_run(plan: incremental.Plan, summary: Summary, events: ConvertEvents) -> None:
    """Report what a run would do with each input; reads no pixels, loads no model."""
    events.on_plan(sum(d.writes for d in plan.decisions), sum(not d.writes for d in plan.decisions))
    for d in plan.decisions:
        reused = d.source if d.action in (incremental.DUPLICATE, incremental.COPY) else None
        status = "would-convert" if d.writes else "would-skip"
        result = FileResult(d.item.path, d.output, status, reason=d.reason, reused_from=reused)
        probe = kinds.dry_run_probe(d.item.kind) if d.writes else None
        if probe is not None:  # a clip's or an animation's frames and length, from its header
            result = probe(result)
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


def _run(
    options: ConvertOptions,
    spec: EngineSpec,
    targets: list[Target],
    summary: Summary,
    events: ConvertEvents,
    manifest: Manifest,
    started: float,
    held: HeldLock,
    warmup: engines.WarmupHandle | None = None,
    loaded: Stylizer | None = None,
    in_process: bool = False,
    tiles: TilePlanner | None = None,
) -> Stylizer:
    """Decode, style and write every target: the run's one loop; returns the Stylizer
    (``loaded``, or the one it loads)."""
    images = _ReadAhead(_prepared(options, targets, warmup, in_process))
    assert targets[0].lead.record is not None
    expected = targets[0].lead.record.checkpoint or None  # refuse a checkpoint replaced since
    with contextlib.closing(images):  # stops the decoder processes
        stylizer = loaded or load_stylizer(options, spec, events.on_message,
                                           images.calibration, expected, warmup)
        summary.engine = stylizer.description
        summary.startup_seconds = time.perf_counter() - started
        with Writer(stylizer, manifest, held, summary, events, options.quality,
                    png_level=options.png_level) as writer:
            stages = loop.stages_for(options.faces, options.reuse_similar, writer, manifest,
                                     events.on_message, _face_style_note(options), tiles)
            loop.StylingLoop(stylizer, targets, writer, summary, options.batch_size,
                             stages).run(images)
    return stylizer


def _prepared(options: ConvertOptions, targets: list[Target],
              warmup: engines.WarmupHandle | None, in_process: bool
              ) -> Iterator[data.PreparedImage]:
    """The targets' images, decoded ahead from now on (so decoding overlaps the model's
    loading): on a thread of this process for a small run (decoding.in_process), in decoder
    processes (torch's DataLoader) for a big one."""
    paths = [t.lead.item.path for t in targets]
    if in_process:
        # numpy pixels: no torch on the way to an engine that takes them. The stages
        # (faces, look-alikes) and --colour's keeping work on tensors.
        plain = (not options.faces.on and options.reuse_similar is None
                 and options.colour == fields.COLOUR.default)
        settings = dataclasses.replace(options.preprocess, numpy=plain)
        return decoding.decoded_on_thread(data.ImageDataset(paths, settings))
    from animegan_cli.pipeline import workers  # torch's DataLoader: only a run that styles needs it

    if warmup is not None:
        warmup.before_fork()
    return workers.prepared_images(data.ImageDataset(paths, options.preprocess),
                                   options.num_workers)


def _face_style_note(options: ConvertOptions) -> str | None:
    """The note --faces gives for a style not trained on faces (said once, by the driver)."""
    if not options.faces.on:
        return None
    from animegan_cli.faces.detect import style_note

    return style_note(options.style, options.weights)


class _ReadAhead:
    """The run's prepared images; the first few may be read early, to calibrate INT8 on."""

    def __init__(self, prepared: Iterator[data.PreparedImage]) -> None:
        self.prepared = prepared
        self.early: list[data.PreparedImage] = []

    def calibration(self) -> list[torch.Tensor]:
        """Pixels of the first CALIBRATION_IMAGES good images; they are processed normally after."""
        for item in self.prepared:
            self.early.append(item)
            if sum(e.error is None for e in self.early) >= CALIBRATION_IMAGES:
                break
        return [e.pixels for e in self.early if e.pixels is not None]

    def __iter__(self) -> Iterator[data.PreparedImage]:
        return itertools.chain(self.early, self.prepared)

    def close(self) -> None:
        """Stop the decoder processes."""
        self.prepared.close()  # type: ignore[attr-defined]  # a generator or ThreadDecoder
