"""``convert --ray``: the planned work styled by a pool of Ray actors, each holding one Stylizer.

The driver plans exactly as a local run (convert.py: discovery, selection, up-to-date
skips, identical inputs, output names, the lock on OUT); only the styling moves. Each work
item is one ``Target`` (an input to style and its identical duplicates, with the records
their outputs get) plus the stat its outputs had when planned. A Dataset row is a shard of
work items: one image, one clip, or (--reuse-similar) all the images, which must meet
their look-alikes in one stream. Rows go through a Ray Dataset's ``map_batches`` to an
actor pool; an actor reads the inputs from shared storage and runs the local run's own
code on them: the styling loop (pipeline/loop.py, with its stages: faces, reuse) for
images, its kind's runner (media/kinds.py: video_run.py, animation_run.py) for a clip or
an animation, writing with the same ``Writer`` (atomic,
with provenance, manifest line before the rename); it returns one small status row per
input, naming the actor. The driver streams those rows into the run's ConvertEvents.

Ray is imported only here, and this module only when ``--ray`` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import logging
import os
import pickle
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animegan_cli.core import stderr_filter
from animegan_cli.core.errors import AnimeganError, RunStopped, UsageError, install_hint
from animegan_cli.core.signals import deferred
from animegan_cli.engines.base import EngineSpec
from animegan_cli.media import data, kinds
from animegan_cli.pipeline import loop
from animegan_cli.pipeline.convert import CALIBRATION_IMAGES, ConvertOptions, load_stylizer
from animegan_cli.pipeline.lock import LOCK_NAME, HeldLock, remove_stale_temp_files
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.pipeline.writer import Target, Writer
from animegan_cli.records import incremental
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.record import Provenance

if TYPE_CHECKING:
    from animegan_cli.stylizer import Stylizer

RAY_EXTRA = f"convert --ray needs Ray: {install_hint('ray')}"
# A line of Ray's C++ logging below FATAL: "[2026-12-07 12:25:04,635 E 12109 12109] file.cc:N: ".
RAY_NATIVE_LOG_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWE] \d+ \d+\] ")
SHARED_STORAGE = "inputs and OUT must be on storage every Ray node sees"
# Environment the actors need to find checkpoints as the driver does.
FORWARDED_ENV = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME")
# Object store for a Ray instance this run starts itself: only status rows and work
# items (paths and records) travel, never pixels.
LOCAL_OBJECT_STORE = 128 << 20
# Blocks of work items at most: each is an object the driver tracks.
MAX_BLOCKS = 10_000
# Batches an actor works on at once (decoding, styling one at a time, writing).
CALLS_PER_ACTOR = 2

# (st_ino, st_size, st_mtime_ns) of an output, None while it does not exist.
Fingerprint = tuple[int, int, int] | None


def validate(options: ConvertOptions) -> None:
    """UsageError for a --ray run that cannot work: a bad address, or Ray missing.

    A dry run plans without Ray, so it needs neither Ray nor a cluster.
    """
    address = options.ray
    if address and address not in ("local", "auto") and ":" not in address:
        raise UsageError(
            f"--ray {address}: not local, auto or an address (host:port, ray://host:port); "
            "give --ray its value, or put it after the inputs"
        )
    if not options.dry_run and importlib.util.find_spec("ray") is None:
        raise UsageError(RAY_EXTRA)


@dataclass(frozen=True)
class WorkItem:
    """One input to style (with its duplicates) and what its outputs were when planned."""

    target: Target
    planned: dict[str, Fingerprint]  # output path -> its stat at planning


@dataclass(frozen=True)
class ActorConfig:
    """Everything an actor needs besides its work: sent once, when the actor starts."""

    options: ConvertOptions
    spec: EngineSpec  # resolved on the driver, threads made explicit
    expected_checkpoint: str | None
    calibration: list[Path]  # the run's first images: INT8 calibrates on what a local run does
    driver_pid: int  # written in OUT's lock file: proves a worker sees the driver's OUT
    # A run of clips or animations only: INT8 calibrates on the first one's frames.
    calibration_whole: tuple[str, Path] | None = None  # (its kind, its path)


def fingerprint(path: Path) -> Fingerprint:
    """What identifies one version of an output file."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def work_items(targets: list[Target], one_stream: bool = False) -> list[dict[str, bytes]]:
    """The Dataset rows: shards of targets, each pickled with the stat of its outputs now.

    A shard is one target, or with ``one_stream`` (--reuse-similar) all the images at once:
    look-alikes are matched within one stream, in input order, as in a local run.
    """
    items = [
        WorkItem(t, {str(d.output): fingerprint(d.output) for d in t.decisions}) for t in targets
    ]
    images = [w for w in items if not w.target.lead.item.styled_whole]
    clips = [[w] for w in items if w.target.lead.item.styled_whole]  # one task per clip
    shards = ([images] if images else []) if one_stream else [[w] for w in images]
    return [{"work": pickle.dumps(shard)} for shard in shards + clips]


def actor_threads(spec: EngineSpec, node_cpus: list[float]) -> int:
    """Threads (and Ray CPUs) per actor: --threads, else the smallest node's CPUs.

    UsageError when no node has that many CPUs: the pool could never start.
    """
    largest = int(max(node_cpus, default=0))
    if spec.threads and spec.threads > largest:
        raise UsageError(
            f"--threads {spec.threads}: no Ray node has that many CPUs (the largest has "
            f"{largest}); each actor gets as many CPUs as threads"
        )
    if spec.threads:
        return spec.threads
    return max(1, int(min((c for c in node_cpus if c >= 1), default=1)))


def run(
    options: ConvertOptions,
    spec: EngineSpec,
    targets: list[Target],
    summary: Summary,
    events: ConvertEvents,
    manifest: Manifest,
    started: float,
    held: HeldLock,
) -> None:
    """Style and write every target (images and clips) on a Ray actor pool; the same
    results and reporting as a local run."""
    from animegan_cli.pipeline.convert import _face_style_note

    note = _face_style_note(options)
    if note is not None:  # said once, by the driver (the actors' messages are not shown)
        events.on_message(note)
    ray = _import_ray()
    try:
        with _quiet_unless(options.verbose), _connected(ray, options.ray) as node_cpus:
            threads = actor_threads(spec, node_cpus)
            actors = max(1, min(len(targets), int(sum(node_cpus)) // threads))
            events.on_message(f"ray: {actors} actor(s) x {threads} thread(s)")
            config = _actor_config(options, dataclasses.replace(spec, threads=threads), targets)
            rows = iter(_dataset(ray, targets, config, actors, threads).iter_rows())
            try:
                _collect(rows, summary, events, started, held)
            finally:
                rows.close()  # also on Ctrl-C: Ray Data stops the pool's actors
    finally:
        # Ray is stopped by now (when this run started it): no actor of the run writes.
        with deferred():
            remove_stale_temp_files(options.output)  # of actors killed mid-write
    if summary.engine:
        summary.engine += f", on {actors} Ray actor(s) x {threads} thread(s)"


def _actor_config(options: ConvertOptions, spec: EngineSpec, targets: list[Target]) -> ActorConfig:
    first = targets[0].lead.record
    assert first is not None
    images = [t.lead.item.path for t in targets if not t.lead.item.styled_whole]
    lead = targets[0].lead.item
    return ActorConfig(
        dataclasses.replace(options, listed=[], progress=False),
        spec,
        first.checkpoint or None,  # refuse a checkpoint replaced since planning
        images[: 4 * CALIBRATION_IMAGES],
        os.getpid(),
        None if images else (lead.kind, lead.path),
    )


@contextlib.contextmanager
def _quiet_unless(verbose: bool) -> Iterator[None]:
    """Ray's own warnings and C++ log lines (token authentication, core_worker.cc's actor
    notes) left off stderr unless -v: they look like failures of the run and are not. They
    stay in Ray's session logs; Ray's errors still show."""
    if verbose:
        yield
        return
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)
    try:
        with stderr_filter.dropping_lines(RAY_NATIVE_LOG_LINE):
            yield
    finally:
        ray_logger.setLevel(level)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the Dataset API is the extra's "data" part)
    except ImportError:
        raise UsageError(RAY_EXTRA) from None
    return ray


@contextlib.contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[list[float]]:
    """Ray, started or joined for the run (left as found when already initialized).

    Yields the CPUs of each alive node.
    """
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, address)
    try:
        yield [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    finally:
        if started_here:
            ray.shutdown()


def _init(ray: Any, address: str | None) -> None:
    """ray.init for --ray local / auto / ADDRESS, keeping this run's signal handlers."""
    if not address:  # a bare --ray: like ray.init(), RAY_ADDRESS if set
        address = "auto" if os.environ.get("RAY_ADDRESS") else "local"
    kwargs: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        kwargs["object_store_memory"] = LOCAL_OBJECT_STORE
    elif address == "auto":
        address = os.environ.get("RAY_ADDRESS") or "auto"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=address, configure_logging=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"--ray {address}: cannot connect to Ray: {exc}") from None
    finally:
        for sig, handler in handlers.items():  # ray.init installs its own SIGTERM handler
            signal.signal(sig, handler)


def _dataset(ray: Any, targets: list[Target], config: ActorConfig, actors: int, threads: int):
    """The Dataset of work items mapped through the actor pool."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # the run reports for itself
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the run has its own
    context.print_on_execution_start = False
    env = {k: v for k, v in os.environ.items() if k.startswith("ANIMEGAN_") or k in FORWARDED_ENV}
    items = work_items(targets, one_stream=config.options.reuse_similar is not None)
    batch = config.options.batch_size
    # A block is what one actor task takes (and what a retry redoes, written outputs
    # skipped) and when its rows come back: one model batch per block, up to MAX_BLOCKS.
    blocks = max(1, min(len(items) // batch, MAX_BLOCKS))
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        StylizeActor,
        batch_size=batch,
        # Two calls at once per actor: one decodes its batch while the other's runs the
        # model (the actor holds a lock around the model); one call at a time left the
        # actor's cores idle while it decoded, 14% per image at --size 512 (docs/ray.md).
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors,
                                           max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
                                           enable_true_multi_threading=True),
        fn_constructor_kwargs={"config": config},
        num_cpus=threads,
        # Fault tolerance is Ray Data's default for actor pools, which it sets explicitly:
        # a dead actor is restarted (max_restarts=-1) and its batches are retried on the
        # pool (max_task_retries=-1); StylizeActor never writes an output twice.
        runtime_env={"env_vars": env},
    )


def _collect(
    rows: Iterator[dict[str, Any]],
    summary: Summary,
    events: ConvertEvents,
    started: float,
    held: HeldLock,
) -> None:
    """Report each status row as it arrives; a fatal row (a worker cannot work) stops the run."""
    for row in rows:
        status = json.loads(row["status"])
        if status.get("fatal"):
            raise RunStopped(status["fatal"])
        if not summary.startup_seconds:
            summary.startup_seconds = time.perf_counter() - started
        summary.engine = summary.engine or status.get("engine", "")
        for key in ("prepare_seconds", "engine_seconds", "write_seconds"):
            setattr(summary, key, getattr(summary, key) + status.get(key, 0.0))
        result = _file_result(status["result"])
        with deferred():  # a Ctrl-C waits until the result is counted
            summary.add(result)
            if result.input in summary.clip_inputs and result.status == "converted" and (
                    result.reused_from is None):
                summary.videos.append(result)  # as video_run's convert_all keeps them
            events.on_result(result)
        held.check()


def _file_result(fields: dict[str, Any]) -> FileResult:
    """A FileResult from its as_dict() form."""
    path = lambda key: Path(fields[key]) if fields[key] else None  # noqa: E731
    return FileResult(
        Path(fields["input"]), path("output"), fields["status"], fields["error"],
        fields["seconds"], fields["reason"], path("reused_from"), faces=fields.get("faces"),
        frames=fields.get("frames"), duration=fields.get("duration"), worker=fields.get("worker"),
    )


class StylizeActor:
    """A Ray Data callable class: one Stylizer per actor; styles and writes its batches."""

    def __init__(self, config: ActorConfig) -> None:
        self.config = config
        self.node = socket.gethostname()
        self.name = f"ray actor {os.getpid()} on {self.node}"  # said in each result it styles
        self.model_lock = threading.Lock()  # calls run in threads; one engine run at a time
        self.fatal = _out_problem(config, self.node)
        self.stylizer: Stylizer | None = None
        if self.fatal is None:
            self.fatal = self._load()

    def _load(self) -> str | None:
        config = self.config
        options = config.options
        try:
            self.stylizer = load_stylizer(
                options, config.spec, lambda message: None, self._calibration,
                config.expected_checkpoint,
            )
            if options.faces.on:
                # OpenCV imported now, once: two calls importing it at once in their
                # threads saw a half-initialized cv2 (no cv2.data). Also proves it is here.
                options.faces.build_detector()
        except AnimeganError as exc:
            return f"cannot load the model on node {self.node}: {exc}"
        out = options.output
        self.held = _held_here(out)
        # The face stage reads existing crops' records (a BMP's are in the manifest only).
        self.manifest = Manifest.load(out) if options.faces.on else _append_only_manifest(out)
        return None

    def _calibration(self) -> list[Any]:
        """INT8 calibration on the run's first good images, as a local run takes them."""
        preprocess = self.config.options.preprocess
        if self.config.calibration_whole is not None:
            kind, path = self.config.calibration_whole
            return kinds.KINDS[kind].load_runner().calibration_pixels(path, preprocess)
        found = []
        for i, path in enumerate(self.config.calibration):
            item = data.prepare_image(i, path, preprocess)
            if item.pixels is not None:
                found.append(item.pixels)
            if len(found) >= CALIBRATION_IMAGES:
                break
        return found

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """Style one batch of work items; one JSON status row per input."""
        if self.fatal is not None:
            return {"status": [json.dumps({"fatal": self.fatal})] * len(batch["work"])}
        work = [item for blob in batch["work"] for item in pickle.loads(blob)]
        rows, todo = [], []
        for item in work:
            decisions = item.target.decisions
            if all(self._written(d, item.planned) for d in decisions):
                # An earlier attempt of this batch wrote them all (Ray retried it): report only.
                rows += [
                    {"result": FileResult(d.item.path, d.output, "converted", None, 0.0,
                                          d.reason).as_dict()}
                    for d in decisions
                ]
            else:
                todo.append(item)
        images = [w for w in todo if not w.target.lead.item.styled_whole]
        if images:
            rows += self._style(images)
        for whole in (w for w in todo if w.target.lead.item.styled_whole):
            rows += self._whole(whole)
        for row in rows:
            if "result" in row:
                row["result"]["worker"] = self.name
        return {"status": [json.dumps(row) for row in rows]}

    def _written(self, decision: incremental.Decision, planned: dict[str, Fingerprint]) -> bool:
        return written_since(decision, planned, self.config.options.output)

    def _style(self, work: list[WorkItem]) -> list[dict[str, Any]]:
        """The local run's loop over these images: decode, check, stages, batch, style, write."""
        assert self.stylizer is not None
        targets = [w.target for w in work]
        planned = {k: v for w in work for k, v in w.planned.items()}
        results: list[FileResult] = []
        summary = Summary()
        events = ConvertEvents(on_result=results.append)
        options = self.config.options
        written = lambda decision: self._written(decision, planned)  # noqa: E731
        stopped = None
        try:
            with Writer(self.stylizer, self.manifest, self.held, summary, events,
                        options.quality, png_level=options.png_level,
                        already_written=written) as writer:
                stages = loop.stages_for(options.faces, options.reuse_similar, writer,
                                         self.manifest, events.on_message)
                loop.StylingLoop(self.stylizer, targets, writer, summary, options.batch_size,
                                 stages, self.model_lock).run(self._prepared(targets))
        except RunStopped as exc:
            stopped = str(exc)
        return self._rows(results, summary, stopped)

    def _prepared(self, targets: list[Target]) -> Iterator[data.PreparedImage]:
        """The targets' inputs decoded in turn, a missing one's reason saying where."""
        for i, target in enumerate(targets):
            item = data.prepare_image(i, target.lead.item.path, self.config.options.preprocess)
            if item.error is not None:
                item.error = _storage_hint(item.error, target, self.node)
            yield item

    def _whole(self, work: WorkItem) -> list[dict[str, Any]]:
        """One clip or animation styled here by its kind's runner, as in a local run."""
        assert self.stylizer is not None
        results: list[FileResult] = []
        summary = Summary()
        events = ConvertEvents(on_result=results.append)
        load = functools.partial(load_stylizer, self.config.options, self.config.spec,
                                 lambda message: None)  # unused: the actor's Stylizer is given
        stopped = None
        try:
            with self.model_lock:  # the clip's frame batches run the engine one after another
                runner = kinds.KINDS[work.target.lead.item.kind].load_runner()
                runner.convert_all(self.config.options, [work.target], self.stylizer,
                                   load, self.manifest, self.held, summary, events,
                                   time.perf_counter())
        except RunStopped as exc:
            stopped = str(exc)
        return self._rows(results, summary, stopped)

    def _rows(
        self, results: list[FileResult], summary: Summary, stopped: str | None
    ) -> list[dict[str, Any]]:
        """Status rows: the batch's stage times ride on its first row."""
        rows: list[dict[str, Any]] = [{"result": r.as_dict()} for r in results]
        if rows:
            rows[0].update(
                engine=self.stylizer.description if self.stylizer else "",
                prepare_seconds=summary.prepare_seconds,
                engine_seconds=summary.engine_seconds,
                write_seconds=summary.write_seconds,
            )
        if stopped is not None:
            rows.append({"fatal": stopped})
        return rows


def _out_problem(config: ActorConfig, node: str) -> str | None:
    """Why this worker cannot write the driver's OUT, or None when it can."""
    out = config.options.output
    try:
        owners = (out / LOCK_NAME).read_text("ascii", "replace").split()
    except OSError:
        owners = []
    if str(config.driver_pid) not in owners:
        return (
            f"output folder {out} is not the driver's on node {node} ({SHARED_STORAGE}); "
            "stopping"
        )
    if not os.access(out, os.W_OK | os.X_OK):
        return f"output folder {out} is not writable on node {node}; stopping"
    return None


def _held_here(out: Path) -> HeldLock:
    """The driver's lock on OUT as this node sees it (device numbers differ across NFS clients)."""
    folder, lock = os.stat(out), os.stat(out / LOCK_NAME)
    return HeldLock(out, True, (folder.st_dev, folder.st_ino), (lock.st_dev, lock.st_ino))


def _append_only_manifest(out: Path) -> Manifest:
    """OUT's manifest for appending only: the actor never reads its entries."""
    manifest = Manifest(out)
    with contextlib.suppress(OSError), open(manifest.path, "rb") as handle:
        if handle.seek(0, os.SEEK_END):
            handle.seek(-1, os.SEEK_END)
            manifest._needs_newline = handle.read(1) != b"\n"  # after a torn last line
    return manifest


def _storage_hint(error: str, target: Target, node: str) -> str:
    """The reason a planned input cannot be read here, saying where when it is missing."""
    if os.path.exists(target.lead.item.path):
        return error
    return f"{error} on node {node} ({SHARED_STORAGE})"


def written_since(
    decision: incremental.Decision, planned: dict[str, Fingerprint], out_dir: Path
) -> bool:
    """Whether an earlier attempt of this run already wrote this output (never write it twice).

    True when the output is not the file it was at planning (or is new) and records exactly
    the record this run writes: input hash, checkpoint, settings.
    """
    now = fingerprint(decision.output)
    if now is None or now == planned.get(str(decision.output)):
        return False
    return _recorded(decision.output, out_dir) == decision.record


def _recorded(output: Path, out_dir: Path) -> Provenance | None:
    """An output's record: embedded, else (BMP) its manifest entry."""
    found = read_embedded(output)
    if found is not None:
        return found
    with contextlib.suppress(OSError):
        entry = Manifest.load(out_dir).match(output, os.stat(output))
        return entry.provenance if entry is not None else None
    return None
