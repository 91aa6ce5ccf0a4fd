"""``watch(options, settle, poll, events)``: convert's pipeline run again and again.

OUT is locked once for the watch's life and the model loaded once (convert's ``Kept``);
the folders are caught up as ``convert`` would, then each batch of settled files is run
through the same planning and styling (what is up to date is skipped, as in convert).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from animegan_cli.core.signals import deferred
from animegan_cli.engines.base import torch_threads
from animegan_cli.media import kinds
from animegan_cli.media.inputs import supported_extensions
from animegan_cli.pipeline.convert import (
    ConvertOptions,
    Kept,
    convert,
    engine_spec,
    load_stylizer,
    prepare_output_dir,
    remove_if_empty,
    validate,
)
from animegan_cli.pipeline.lock import output_lock
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.watch.follow import Follower, check_roots

# A batch this small is decoded in the watch's own process: starting decoder processes for it
# cost 0.4 s of a 1.75 s drop-to-output latency (benchmarks/watch_latency.py). Catch-ups and
# rescans keep their decoder processes, so a file that crashes a decoder library takes the
# watch down once; restarted (systemd), its catch-up fails that file alone and it is not
# retried until it changes.
IN_PROCESS_BATCH = 4


@dataclasses.dataclass
class Totals:
    """What a watch did, over all its runs (its end line)."""

    converted: int = 0
    skipped: int = 0
    failed: int = 0
    engine: str = ""

    def add(self, summary: Summary, catch_up: bool = False) -> None:
        self.converted += summary.converted
        # Up to date: counted when catching up; in a batch, a file touched but unchanged.
        self.skipped += summary.skipped if catch_up else 0
        self.failed += summary.failed
        self.engine = summary.engine or self.engine


def watch(options: ConvertOptions, settle: float, poll: bool, events: ConvertEvents,
          totals: Totals, stopping: Callable[[], bool] = lambda: False) -> None:
    """Catch up, then style files as they settle, until Interrupted (Ctrl-C, SIGTERM) or
    ``stopping()``; a signal during a batch lets that batch finish first."""
    validate(options)
    roots = check_roots(options.inputs, options.output)
    created = prepare_output_dir(options.output)
    try:
        with output_lock(options.output, options.wait, events.on_message, False) as held:
            _follow(options, roots, settle, poll, events, totals, stopping, Kept(held))
    except Exception:
        remove_if_empty(created)  # a refused start leaves no empty OUT behind
        raise


def _follow(options: ConvertOptions, roots: list[Path], settle: float, poll: bool,
            events: ConvertEvents, totals: Totals, stopping: Callable[[], bool],
            kept: Kept) -> None:
    # Watching starts before the catch-up: a file that arrives during it is not missed.
    follower = Follower(roots, options.recursive, settle, poll,
                        _wanted(roots, options.output, options.recursive), events.on_message)
    try:
        totals.add(convert(options, events, kept), catch_up=True)
        _load_model(options, events, kept)
        events.on_message(f"watching {', '.join(map(str, roots))} (settle {settle:g} s)")
        quiet = dataclasses.replace(events, on_result=_news_only(events.on_result))
        for batch in follower.batches(stopping):
            if batch is None:  # a burst past the queue's bound: one rescan, as at start
                totals.add(convert(options, quiet, kept), catch_up=True)
                continue
            steady = (dataclasses.replace(options, num_workers=0)
                      if len(batch) <= IN_PROCESS_BATCH else options)
            with deferred():  # a stop finishes the batch in flight
                for root_options in _runs(steady, roots, batch):
                    totals.add(convert(root_options, quiet, kept))
    finally:
        follower.close()


def _load_model(options: ConvertOptions, events: ConvertEvents, kept: Kept) -> None:
    """The model, loaded now if the catch-up styled nothing: the first file dropped in then
    waits for its settling and one model run, not for a model load as well. INT8 is left to
    the first batch, which calibrates on its images."""
    spec = engine_spec(options)
    if kept.stylizer is None and spec.precision != "int8":
        with torch_threads(options.threads):
            kept.stylizer = load_stylizer(options, spec, events.on_message)


def _runs(options: ConvertOptions, roots: list[Path], batch: list[Path]
          ) -> list[ConvertOptions]:
    """The batch as convert runs: its files named, mirrored under OUT as a walk of their
    folder would (relative to it, or to --base); files gone since are left out quietly."""
    present = [p for p in batch if os.path.lexists(p)]
    if options.base is not None:
        return [dataclasses.replace(options, inputs=[str(p) for p in present])] if present else []
    runs = []
    for root in roots:
        mine = [p for p in present if _within(p, root)]
        present = [p for p in present if not _within(p, root)]
        if mine:
            runs.append(dataclasses.replace(options, inputs=[str(p) for p in mine], base=root))
    return runs


def _news_only(on_result: Callable[[FileResult], None]) -> Callable[[FileResult], None]:
    """Results of a batch worth a line: an up-to-date file (touched, read again) is not."""
    def report(result: FileResult) -> None:
        if result.status != "skipped":
            on_result(result)
    return report


def _wanted(roots: list[Path], output: Path, recursive: bool) -> Callable[[Path], bool]:
    """Whether an event's path is an input a walk of the folders would take."""
    suffixes = supported_extensions() | kinds.walked_suffixes()
    out = output.resolve()
    folders = [root.resolve() for root in roots]

    def wanted(path: Path) -> bool:
        if path.suffix.lower() not in suffixes:
            return False
        resolved = Path(os.path.realpath(path.parent), path.name)  # a symlinked file counts
        if _within(resolved, out):
            return False  # OUT is never an input, even inside a watched folder
        return any(resolved.parent == f if not recursive else _within(resolved, f)
                   for f in folders)
    return wanted


def _within(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents
