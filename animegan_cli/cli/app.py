"""The ``animegan`` command line: parse, call the library, report. Nothing else."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from animegan_cli import __version__
from animegan_cli.cli.options import (
    EXIT_FAILED,
    EXIT_USAGE,
    CommandError,
    by_param,
    options,
)
from animegan_cli.core.errors import AnimeganError, UsageError, install_hint
from animegan_cli.core.signals import Interrupted, release_early, stop_on_signals
from animegan_cli.faces.detect import FaceSettings
from animegan_cli.media.inputs import read_path_list
from animegan_cli.model.weights import STYLES, WeightsStore
from animegan_cli.pipeline.convert import (
    ConvertEvents,
    ConvertOptions,
    FileResult,
    Summary,
    convert,
)
from animegan_cli.pipeline.report import build_report, json_safe, one_line, write_report
from animegan_cli.records.provenance import find_provenance
from animegan_cli.records.selection import parse_shard, parse_since
from animegan_cli.serve.access import LOCAL_HOSTS
from animegan_cli.settings import fields
from animegan_cli.settings.config import SERVE_KEYS, load_config, save_config
from animegan_cli.tools.system import describe_auto, describe_system, torch_details
from animegan_cli.tools.tune import Trial, TuneRequest, TuneResult, run_tune

if TYPE_CHECKING:  # tqdm (~50 ms) is imported by the commands that show a progress bar
    from tqdm import tqdm

# The shell's status for a program whose reader went away (128 + SIGPIPE), as `ls | head`.
EXIT_PIPE = 128 + signal.SIGPIPE


def _raise_for(exc: AnimeganError) -> None:
    code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    raise CommandError(str(exc), code) from exc


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (CliRunner): nothing will flush into a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _Commands(click.Group):
    """The top-level group: a reader that goes away (`| head`) ends any command quietly."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(EXIT_PIPE)


_CONFIG_ERROR = "animegan.config_error"


@click.group(cls=_Commands,
             context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="animegan")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Turn folders of photos into anime-style images with AnimeGANv2.

    Defaults come from the config file that `animegan tune` writes
    (~/.config/animegan/config.toml), then ANIMEGAN_* environment variables, then flags.

    \b
    Example:
        animegan convert ./photos -o ./out --batch-size 8
    """
    if ctx.invoked_subcommand != "convert":
        release_early()  # only convert turns a signal into a clean stop
    if ctx.invoked_subcommand not in ("convert", "info", "tune", "serve") or ctx.resilient_parsing:
        return
    try:
        settings = load_config()
        serve_settings = load_config(section="serve") if ctx.invoked_subcommand == "serve" else {}
    except AnimeganError as exc:
        if ctx.invoked_subcommand == "convert":
            ctx.meta[_CONFIG_ERROR] = exc  # raised by convert, once it knows its --report
            return
        _raise_for(exc)
    ctx.default_map = {
        "convert": {_CONVERT_PARAMS[k]: v for k, v in settings.items()},
        # tune measures the model convert will run: the same style and size.
        "tune": {k: v for k, v in settings.items() if k in _TUNE_KEYS},
        # serve runs the model convert runs (what tune measured), unless [serve] says otherwise.
        "serve": {**{k: v for k, v in settings.items() if k in SERVE_KEYS}, **serve_settings},
    }


class _ConvertCommand(click.Command):
    """convert: a usage error found while parsing still writes the --report it names."""

    def make_context(self, info_name, args, parent=None, **extra):  # noqa: ANN001, ANN201
        report_file = _report_argument(list(args))
        try:
            config_error = parent.meta.get(_CONFIG_ERROR) if parent is not None else None
            if config_error is not None:
                _raise_for(config_error)
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            if report_file is not None and report_file.parent.is_dir():
                ending = _Ending(exc.exit_code, error=exc.format_message())
                _write_report(report_file, ending, None)
            raise


def _report_argument(args: list[str]) -> Path | None:
    """The FILE of ``--report FILE`` (or ``--report=FILE``) in raw arguments, if any."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--report" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--report="):
            return Path(arg.split("=", 1)[1])
    return None


# The model options convert, serve, tune and export share; convert's own, in --help order.
model_options = options((fields.STYLE, fields.WEIGHTS, fields.SIZE))
_CONVERT_PARAMS = {s.name: s.param for s in fields.CONVERT_OPTIONS}
_TUNE_KEYS = {s.name for s in fields.MODEL_GROUP}  # tune reads the model settings' keys


def _refuse_style_with_weights(weights: Path | None) -> None:
    style_source = click.get_current_context().get_parameter_source("style")
    if weights is not None and style_source == ParameterSource.COMMANDLINE:
        # A style from the config file or ANIMEGAN_STYLE is a default: --weights overrides it.
        raise CommandError("give --style or --weights, not both", EXIT_USAGE)


@main.command("convert", cls=_ConvertCommand)
@click.argument("inputs", nargs=-1, required=True)
@options(fields.CONVERT_OPTIONS)
def convert_command(inputs: tuple[str, ...], weights: Path | None, dry_run: bool,
                    as_json: bool, quiet: bool, verbose: bool, report_file: Path | None,
                    **flags: object) -> None:  # the other flags reach ConvertOptions as params
    """Convert images (files, folders, or '-' for a list on stdin) into OUTPUT.

    Each output records what made it (input hash, style, checkpoint, settings); an output
    whose record matches is skipped, so re-running converts only new or changed photos.
    Identical inputs are styled once. Exit status: 0 all converted or skipped, 1 some
    inputs failed, 2 usage error, 130/143 stopped by Ctrl-C/SIGTERM (what was written
    stays; a rerun converts the rest).

    \b
    Examples:
        animegan convert ./photos -o ./out --batch-size 8
        find ~/Pictures -name '*.jpg' -print0 | animegan convert - -0 --base ~/Pictures \\
            -o ./out --json
        animegan convert ./photos -o ./out --since 7d --shard 0/4 --dry-run
    """
    _refuse_style_with_weights(weights)
    if report_file is not None:
        _check_report_folder(report_file)
    if verbose and not quiet:
        _show_engine_log()
    show_bar = not quiet and _stderr_is_terminal()
    bar = _RunBar(disable=not show_bar)
    events = _convert_events(bar, dry_run, as_json, quiet)
    params = click.get_current_context().params
    ending, options, crashed = _run_convert(params, show_bar, events, bar)
    with contextlib.suppress(BrokenPipeError):  # stderr into `| head`: the report still counts
        _print_ending(ending, quiet, verbose, dry_run)
    status = _write_report(report_file, ending, options) if report_file else ending.status
    if crashed is not None:
        raise crashed
    if status:
        sys.exit(status)


def _run_convert(params: Mapping[str, Any], progress: bool, events: ConvertEvents, bar: _RunBar
                 ) -> tuple[_Ending, ConvertOptions | None, Exception | None]:
    """Run convert and say how it ended, with the options it ran with and any crash."""
    options: ConvertOptions | None = None
    ending = _Ending()
    crashed: Exception | None = None
    try:
        # First: a SIGTERM from here on (or held since start-up) still ends in a report.
        with stop_on_signals():
            options = _convert_options(params, progress)
            ending.summary = convert(options, events)
        ending.status = EXIT_FAILED if ending.summary.failed else 0
    except Interrupted as exc:
        ending.summary, ending.status = exc.summary, exc.exit_status  # type: ignore[assignment]
        ending.interrupted_by = signal.Signals(exc.signum).name
    except AnimeganError as exc:
        ending.summary = getattr(exc, "summary", None)
        ending.status = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
        ending.error = str(exc)
    except Exception as exc:
        # A bug, not a user error: the report still accounts for the run, then the traceback.
        crashed = exc
        ending.status, ending.error = EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}"
    finally:
        bar.close()
    return ending, options, crashed


def _convert_options(params: Mapping[str, Any], progress: bool) -> ConvertOptions:
    """convert's flags as ConvertOptions: stdin read for '-', --since and --shard parsed."""
    p = params
    listed = _stdin_paths(p["null"]) if "-" in p["inputs"] else []
    since = parse_since(p["since"]) if p["since"] is not None else None
    shard = parse_shard(p["shard"]) if p["shard"] is not None else None
    declared = by_param(p, [s for s in fields.CONVERT_OPTIONS if s.name in _OPTION_FIELDS])
    faces = FaceSettings(*by_param(p, fields.FACES_GROUP).values())
    return ConvertOptions(**declared, inputs=list(p["inputs"]), listed=listed, since=since,
                          shard=shard, faces=faces, progress=progress)


# The declared settings ConvertOptions holds as they are (since, shard: parsed above).
_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(ConvertOptions)) - {
    "since", "shard", "faces", "progress", "inputs", "listed"}


@dataclass
class _Ending:
    """How a convert run ended: its exit status, what it did, and why it stopped."""

    status: int = 0
    summary: Summary | None = None
    error: str | None = None
    interrupted_by: str | None = None


def _convert_events(bar: _RunBar, dry_run: bool, as_json: bool, quiet: bool) -> ConvertEvents:
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

    frames = _FrameBar(bar.disable)
    return ConvertEvents(on_plan, frames.closing(on_result), on_message, frames.update)


class _RunBar:
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


class _FrameBar:
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


def _show_engine_log() -> None:
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
            _quiet_stdout()
            raise Interrupted(signal.SIGPIPE) from None

    return reporting


def _print_ending(ending: _Ending, quiet: bool, verbose: bool, dry_run: bool) -> None:
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


def _write_report(path: Path, ending: _Ending, options: ConvertOptions | None) -> int:
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


def _check_report_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"--report: folder {folder} does not exist", EXIT_USAGE)
    if path.is_dir():
        raise CommandError(f"--report: {path} is a folder", EXIT_USAGE)


def _stdin_paths(null: bool) -> list[str]:
    # Bytes, decoded as file names are: a name that is not UTF-8 works in every locale.
    return read_path_list(sys.stdin.buffer, null_separated=null)


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


@main.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
def inspect_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Show what made an output: input hash, style, checkpoint and pixel settings.

    The record is read from the file itself (PNG text chunk, JPEG/WebP XMP, TIFF
    description) or, failing that, from the manifest of the output folder above it.
    Exit status 1 when a file has no record.

    \b
    Example:
        animegan inspect out/holiday/beach.jpg
    """
    missing = 0
    for path in files:
        try:
            record = find_provenance(path) if path.exists() else None
        except ValueError as exc:
            click.echo(f"animegan: error: {path}: invalid animegan provenance record ({exc})",
                       err=True)
            missing += 1
            continue
        if record is None:
            reason = "no such file" if not path.exists() else (
                "no animegan provenance (not written by animegan convert, or stripped)")
            click.echo(f"animegan: error: {path}: {reason}", err=True)
            missing += 1
        elif as_json:
            click.echo(json.dumps({"file": str(path), **record.to_dict()}, ensure_ascii=False))
        else:
            click.echo(str(path))
            for line in record.describe():
                click.echo(line)
    if missing:
        sys.exit(EXIT_FAILED)


@main.group("weights")
def weights_group() -> None:
    """List, download and import the AnimeGANv2 checkpoints."""


@weights_group.command("list")
def weights_list() -> None:
    """Show each published style, what it was trained on, and where it is installed.

    \b
    Example:
        animegan weights list
    """
    store = WeightsStore.from_env()
    for status in store.status():
        where = str(status.path) if status.path else "not installed"
        click.echo(f"{status.style.name:<18} {where}\n    {status.style.trained_on}")
    for name, path in store.custom().items():
        click.echo(f"{name:<18} {path}\n    custom checkpoint (imported)")


@weights_group.command("download")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Download every published style.")
def weights_download(names: tuple[str, ...], all_: bool) -> None:
    """Download published checkpoints into the cache, verified by their git blob id.

    \b
    Example:
        animegan weights download paprika face_paint_512_v2
    """
    chosen = list(STYLES) if all_ else list(names)
    if not chosen:
        raise CommandError("name at least one style, or give --all", EXIT_USAGE)
    store = WeightsStore.from_env()
    unknown = next((name for name in chosen if name not in STYLES), None)
    if unknown is not None:
        _raise_for(store.unknown_style(unknown))  # before any download
    failed = 0
    for name in chosen:
        # One style that cannot be fetched does not keep the others from being tried.
        try:
            path = store.download(name, progress=_stderr_is_terminal())
        except AnimeganError as exc:
            click.echo(f"animegan: error: {one_line(str(exc))}", err=True)
            failed += 1
            continue
        click.echo(f"{name}: {path}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


@weights_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", default=None, help="Style name to store it under (default: file stem).")
@click.option("--force", is_flag=True,
              help="Replace a checkpoint already installed under that name.")
def weights_import(file: Path, name: str | None, force: bool) -> None:
    """Copy a checkpoint into the store (for machines without internet, or custom ones).

    A published name is verified against its git blob id; any other name is checked for
    the generator's exact keys and shapes. A name already installed (with other bytes)
    is refused unless --force.

    \b
    Example:
        animegan weights import ~/Downloads/paprika.pt
    """
    try:
        imported = WeightsStore.from_env().import_checkpoint(file, name, force=force)
    except AnimeganError as exc:
        _raise_for(exc)
    if imported.already:
        click.echo(f"already imported: {imported.path} holds the same bytes; nothing changed",
                   err=True)
    else:
        click.echo(f"imported {file} as {imported.path}", err=True)


_SERVE_EXTRA = frozenset({"fastapi", "starlette", "uvicorn", "prometheus_client",
                          "python_multipart", "multipart"})


@main.command("serve")
@options(fields.SERVE_OPTIONS)
def serve_command(**params: Any) -> None:
    """Serve the model over HTTP: POST /animeify, a page to try it at /, /metrics.

    One process holds one model; an engine thread batches images across requests. A full
    queue answers 503 with Retry-After; SIGTERM finishes in-flight requests, then exits 0.

    \b
    Example:
        animegan serve --port 8000
        curl -F files=@photo.jpg http://127.0.0.1:8000/animeify -o anime.png
    """
    _refuse_style_with_weights(params["weights"])
    try:
        from animegan_cli.serve import app as serve
        from animegan_cli.serve import transport as serve_transport
        from animegan_cli.serve.service import ServeSettings
        from animegan_cli.stylizer import Stylizer
    except ModuleNotFoundError as exc:
        if exc.name not in _SERVE_EXTRA:
            raise
        raise CommandError(f"serve needs FastAPI and uvicorn: {install_hint('serve')}",
                           EXIT_USAGE) from None
    settings = ServeSettings.from_values(by_param(params, fields.SERVE_GROUP))
    host, port = params["host"], params["port"]
    try:
        settings.validate()
        stylizer = Stylizer.load(**by_param(params, fields.STYLIZER_SETTINGS),
                                 progress=_stderr_is_terminal(), on_message=_say)
        settings = settings.for_model(params["size"], stylizer.spec.precision)
    except AnimeganError as exc:
        _raise_for(exc)
    if host not in LOCAL_HOSTS and not settings.token:
        click.echo(f"animegan: warning: listening on {host} without --token: anyone who can "
                   "reach this port can use the model", err=True)
    click.echo(f"animegan: serving {stylizer.style} on {stylizer.description} at "
               f"http://{host}:{port}/", err=True)
    fatal = serve_transport.run_server(serve.create_app(stylizer, settings), host, port,
                                       settings, on_message=_say)
    if fatal:  # a server that can never serve must not look healthy: say why, exit 1
        raise CommandError(fatal, EXIT_FAILED)


def _say(message: str) -> None:
    click.echo(f"animegan: {message}", err=True)


_SOURCES: dict[ParameterSource | None, str] = {
    ParameterSource.DEFAULT: "built-in",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.COMMANDLINE: "flag",
}


@main.command("info")
@click.option("--torch", "with_torch", is_flag=True,
              help="Also show torch's thread count and CUDA GPU (imports torch: ~1.5 s).")
@click.pass_context
def info_command(ctx: click.Context, with_torch: bool) -> None:
    """Show versions, the CPU features that matter, paths, weights and convert's defaults.

    Each convert default says where it came from: built-in, config file (written by
    `animegan tune`) or environment (ANIMEGAN_*).

    \b
    Example:
        animegan info --torch
    """
    # Everything is worked out before the first line: a bad ANIMEGAN_* variable is one
    # usage error, not half the output followed by one.
    defaults = _convert_defaults(ctx)
    report = describe_system()
    if with_torch:
        report.update(torch_details())
    # One first column for every section, the defaults' sources in a column of their own.
    width = max(len(key) for rows in [*report.values(), dict(defaults).keys()] for key in rows)
    for section, rows in report.items():
        click.echo(f"{section}:")
        for key, value in rows.items():
            click.echo(f"  {key:<{width}}  {value}")
    click.echo("convert defaults:")
    shown_width = max(len(shown) for _, (shown, _) in defaults)
    for option, (shown, source) in defaults:
        click.echo(f"  {option:<{width}}  {shown:<{shown_width}}  [{source}]")


def _convert_defaults(ctx: click.Context) -> list[tuple[str, tuple[str, str]]]:
    """Per convert option: its default here (with what `auto` becomes) and its source."""
    convert_ctx = convert_command.make_context(
        "convert", ["INPUT", "-o", "OUT"], parent=ctx.find_root()
    )
    lines: list[tuple[str, tuple[str, str]]] = []
    for param in convert_command.params:
        if not isinstance(param, click.Option) or param.name in ("output",):
            continue
        value = convert_ctx.params[param.name]
        source = _SOURCES.get(convert_ctx.get_parameter_source(param.name), "built-in")
        if source == "environment" and param.envvar:
            source = f"environment ({param.envvar})"
        resolved = describe_auto(param.name, value, convert_ctx.params)
        shown = f"{'auto' if value is None else value} -> {resolved}" if resolved else str(value)
        lines.append((param.opts[-1], (shown, source)))
    return lines


@main.command("tune")
@model_options
@click.option("--budget", type=float, default=120.0, help="Seconds to spend measuring.")
@click.option("--photos", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="Tune on these photos (default: generated ones).")
@click.option("--objective", type=click.Choice(["throughput", "latency"]),
              default="throughput", help="Most images per second, or fastest single image.")
@click.option("--dry-run", is_flag=True, help="Print the table and winner; write nothing.")
def tune_command(style: str, weights: Path | None, size: int, budget: float,
                 photos: Path | None, objective: str, dry_run: bool) -> None:
    """Measure engine, precision, batch size, threads and workers; save the fastest.

    Writes the winner, with the --size it was measured at, to the config file that convert
    reads its defaults from.

    \b
    Example:
        animegan tune --size 512 --budget 120 --photos ./photos
    """
    from tqdm import tqdm

    request = TuneRequest(size=size, budget=budget, photos=photos, objective=objective,
                          style=style, weights=weights)
    bar = tqdm(total=round(budget), unit="s", file=sys.stderr, desc="tuning",
               disable=not _stderr_is_terminal(), bar_format="{l_bar}{bar}| {n:.0f}/{total} s")
    started = time.perf_counter()

    def on_trial(trial: Trial) -> None:
        bar.n = min(time.perf_counter() - started, budget)
        bar.refresh()

    try:
        result = run_tune(request, on_trial=on_trial,
                          on_message=lambda m: tqdm.write(f"animegan: {m}", file=sys.stderr))
    except AnimeganError as exc:
        _raise_for(exc)
    finally:
        bar.close()
    click.echo(tune_table(result))
    winner = result.winner
    assert winner is not None
    click.echo(f"\nbest for {objective} at {result.shape[1]}x{result.shape[0]}: "
               + ", ".join(f"{k}={v}" for k, v in winner.settings().items()))
    if dry_run:
        click.echo("dry run: config not written")
        return
    comment = (f"Written by animegan tune on {time.strftime('%Y-%m-%d %H:%M')}: {objective} "
               f"at --size {size}, {winner.images_per_second:.2f} img/s measured.")
    # The batch size (and the engine's speed) hold at the size measured: saved together, so
    # that convert's default size is the one they were measured at.
    path = save_config({"size": size, **winner.settings()}, comment=comment)
    click.echo(f"wrote {path} (size={size} with the settings measured at it)")


# export's --align-corners: the setting, without a variable or config key (a file's own choice).
_EXPORT_ALIGN_CORNERS = dataclasses.replace(
    fields.ALIGN_CORNERS, help="Upsampling mode baked into the exported model.", envvar=None,
    config=())


@main.command("export")
@model_options
@click.option("--onnx", "onnx_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, metavar="FILE", help="Write an ONNX file (dynamic batch, H, W).")
@click.option("--openvino", "openvino_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, metavar="DIR", help="Write an OpenVINO IR pair (NAME.xml/.bin).")
@options((_EXPORT_ALIGN_CORNERS,))
def export_command(style: str, weights: Path | None, size: int, onnx_file: Path | None,
                   openvino_dir: Path | None, align_corners: bool) -> None:
    """Export a style or checkpoint as ONNX and/or OpenVINO IR, verified by running it.

    Each exported model is run (onnxruntime, OpenVINO) on a test image of --size and
    compared with the torch fp32 model; one that does not match is not left behind.

    \b
    Example:
        animegan export --style paprika --onnx paprika.onnx --openvino ./ir
    """
    from animegan_cli.tools.export import ExportRequest, export_checkpoint

    _refuse_style_with_weights(weights)
    request = ExportRequest(style=style, weights=weights, onnx=onnx_file,
                            openvino=openvino_dir, size=size or fields.SIZE.default,
                            align_corners=align_corners)
    try:
        written = export_checkpoint(request, on_message=lambda m: click.echo(f"animegan: {m}",
                                                                             err=True))
    except AnimeganError as exc:
        _raise_for(exc)
    for path, verification in written:
        click.echo(f"wrote {path}; {verification.line()}")


def tune_table(result: TuneResult) -> str:
    """The trials as a Markdown table: engine, batch size, throughput, memory, latency."""
    rows = ["| backend | precision | batch size | threads | streams | workers | img/s "
            "| peak memory (MB) | latency per batch (ms) | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for t in result.trials:
        workers = "-" if t.num_workers is None else str(t.num_workers)
        latency = f"{t.latency_ms:.0f}" if t.latency_ms else "-"
        rows.append(f"| {t.backend} | {t.precision} | {t.batch_size} | {t.threads} "
                    f"| {t.streams} | {workers} "
                    f"| {t.images_per_second:.2f} | {t.peak_mb:.0f} | {latency} | {t.note} |")
    return "\n".join(rows)
