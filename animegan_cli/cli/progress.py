"""What convert shows and writes as it runs: the progress bars, a line per failed (or, in a
dry run, planned) input, --json records, the summary and timing lines, and --report."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from animegan_cli.cli.common import quiet_stdout
from animegan_cli.cli.options import EXIT_FAILED
from animegan_cli.core.signals import Interrupted
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, FileResult, Summary
from animegan_cli.pipeline.report import build_report, json_safe, one_line, write_report

if TYPE_CHECKING:  # tqdm (~50 ms) is imported by the commands that show a progress bar
    from tqdm import tqdm


@dataclass
class Ending:
    """How a convert run ended: its exit status, what it did, and why it stopped."""

    status: int = 0
    summary: Summary | None = None
    error: str | None = None
    interrupted_by: str | None = None


def convert_events(bar: RunBar, dry_run: bool, as_json: bool, quiet: bool) -> ConvertEvents:
    """Progress bar, error lines on stderr and --json records on stdout."""
    from tqdm import tqdm


    def on_plan(to_convert: int, skipped: int) -> None:
        bar.start(total=to_convert + skipped)

    @_stop_when_reader_goes
    def on_result(result: FileResult) -> None:
        bar.update(1)
        if result.status == "failed":
            tqdm.write(f"animegan: error: {one_line(result.input)}: {one_line(result.error or '')}",
                       file=sys.stderr)
        if dry_run and not as_json and result.status != "failed":
            tqdm.write(_dry_run_line(result), file=sys.stderr)
        if as_json:
            record = {k: json_safe(v) if isinstance(v, str) else v
                      for k, v in result.as_dict().items()}
            click.echo(json.dumps(record, ensure_ascii=False))

    @_stop_when_reader_goes
    def on_message(message: str) -> None:
        if not quiet:
            tqdm.write(f"animegan: {message}", file=sys.stderr)

    frames = FrameBar(bar.disable)
    return ConvertEvents(on_plan, frames.closing(on_result), on_message, frames.update)


class RunBar:
    """The run's bar, in images: shown once planning knows how many there are (a bar made
    before that said "0img [00:00, ?img/s]" for as long as planning took)."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: tqdm | None = None

    def start(self, total: int) -> None:
        """Show the bar, at 0 of ``total``."""
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=self.disable,
                        dynamic_ncols=True)

    def update(self, done: int) -> None:
        """Count ``done`` more inputs (before the plan, nothing is shown)."""
        if self.bar is not None:
            self.bar.update(done)

    def close(self) -> None:
        """Close the bar (tqdm leaves it on the terminal, finished)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class FrameBar:
    """The per-video bar, in frames (frames/s and ETA), below the run's bar."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: tqdm | None = None
        self.path: Path | None = None

    def update(self, path: Path, done: int, total: int) -> None:
        """Move (or start) the bar of the clip being styled."""
        if self.bar is None or path != self.path:
            from tqdm import tqdm

            self.close()
            self.path = path
            self.bar = tqdm(total=total or None, unit="frame", file=sys.stderr, leave=False,
                            desc=one_line(path.name), disable=self.disable, position=1,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Remove the clip's bar (it is done)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def closing(self, on_result: Callable[[FileResult], None]) -> Callable[[FileResult], None]:
        """on_result, which first removes the bar of the clip just finished."""

        def report(result: FileResult) -> None:
            if result.input == self.path:
                self.close()
            on_result(result)

        return report


class _TqdmLogHandler(logging.Handler):
    """Library log lines (-v) on stderr as ``animegan: ...``, above the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        with contextlib.suppress(BrokenPipeError):
            tqdm.write(f"animegan: {record.getMessage()}", file=sys.stderr)


def show_engine_log() -> None:
    """-v: show what the engine logs (each shape OpenVINO compiles for, and how long)."""
    logger = logging.getLogger("animegan_cli")
    if not any(isinstance(h, _TqdmLogHandler) for h in logger.handlers):
        logger.addHandler(_TqdmLogHandler())
    logger.setLevel(logging.INFO)


def _stop_when_reader_goes(report: Callable[..., None]) -> Callable[..., None]:
    """A write into a pipe whose reader went away (`| head`) stops the run as a signal does."""

    @functools.wraps(report)
    def reporting(*args: object) -> None:
        try:
            report(*args)
        except BrokenPipeError:
            quiet_stdout()
            raise Interrupted(signal.SIGPIPE) from None

    return reporting


def print_ending(ending: Ending, quiet: bool, verbose: bool, dry_run: bool) -> None:
    """The error, the 'stopped by' line, the summary and (-v) the timing, on stderr."""
    summary = ending.summary
    if ending.error:
        click.echo(f"animegan: error: {one_line(ending.error)}", err=True)
    if ending.interrupted_by and summary is None:
        click.echo(f"animegan: stopped by {ending.interrupted_by} while starting", err=True)
    elif ending.interrupted_by and summary is not None:
        left = _counted(*summary.not_done(), plural="(s)")
        rest = (f"{left} not converted (run again to convert them)" if left
                else "nothing left unconverted" if summary.found else "before any image")
        click.echo(f"animegan: stopped by {ending.interrupted_by}; {rest}", err=True)
    if summary is not None and not quiet:
        click.echo(_summary_line(summary, dry_run), err=True)
    if summary is not None and verbose and not dry_run:
        click.echo(_timing_line(summary), err=True)


def save_report(path: Path, ending: Ending, options: ConvertOptions | None) -> int:
    """Write --report; returns the exit status (1 where it was 0 and the report failed)."""
    report = build_report(ending.summary, options, ending.status, ending.error,
                          ending.interrupted_by)
    try:
        write_report(path, report)
    except OSError as exc:
        click.echo(f"animegan: error: cannot write report {one_line(path)}: "
                   f"{exc.strerror or exc}", err=True)
        # A stale report from an earlier run must not pass for this one's.
        with contextlib.suppress(OSError):
            if not path.is_dir():
                path.unlink()
        return ending.status or EXIT_FAILED
    return ending.status


def _summary_line(summary: Summary, dry_run: bool = False) -> str:
    reused = f" ({summary.reused} reused)" if summary.reused else ""
    excluded = f", excluded {summary.excluded}" if summary.excluded else ""
    # Images alone keep the plain count; clips are named, with frames/s (not img/s).
    converted = _counted(summary.images, summary.clips) if summary.clips else summary.converted
    if dry_run:
        failed = f", would fail {summary.failed}" if summary.failed else ""
        return (f"dry run: would convert {converted}{reused}, "
                f"would skip {summary.skipped}{failed}{excluded}")
    rates = [f"{summary.images_per_second:.2f} img/s"] if summary.images else []
    if summary.frames:
        rates.append(f"{summary.frames} frames, {summary.frames_per_second:.2f} frames/s")
    rate = f" ({'; '.join(rates)})" if rates else ""
    return (
        f"converted {converted}{reused}, skipped {summary.skipped}, "
        f"failed {summary.failed}{excluded} "
        f"in {summary.seconds:.1f} s{rate}"
    )


def _counted(images: int, clips: int, plural: str = "") -> str:
    """'3 images and 2 clips', '1 clip', '2 image(s)' (``plural`` "(s)"): clips named apart."""
    named = [(images, "image"), (clips, "clip")]
    return " and ".join(
        f"{count} {noun}{plural or ('s' if count != 1 else '')}" for count, noun in named if count
    )


def _timing_line(summary: Summary) -> str:
    done = max(summary.converted, 1)
    busy = summary.engine_seconds / summary.seconds * 100 if summary.seconds else 0.0
    return (
        f"engine: {summary.engine}; start-up {summary.startup_seconds:.2f} s; per image: "
        f"decode+resize {summary.prepare_seconds / done * 1000:.0f} ms, "
        f"model {summary.engine_seconds / done * 1000:.0f} ms, "
        f"encode+write {summary.write_seconds / done * 1000:.0f} ms; "
        f"engine busy {busy:.0f}% of the wall time"
    )


def _dry_run_line(result: FileResult) -> str:
    clip = (f", {result.frames} frames, {result.duration:.1f} s" if result.frames is not None
            else "")
    if result.status == "would-convert":
        return f"would convert {result.input} -> {result.output} ({result.reason}{clip})"
    return f"would skip {result.input} ({result.reason})"

