"""``animegan convert``: parse the flags into ConvertOptions, run convert, report the end."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from animegan_cli.cli.common import (
    CONFIG_ERROR,
    CommandEntry,
    raise_for,
    refuse_style_with_weights,
    stderr_is_terminal,
)
from animegan_cli.cli.options import EXIT_FAILED, EXIT_USAGE, CommandError, by_param, options
from animegan_cli.cli.progress import (
    Ending,
    RunBar,
    convert_events,
    print_ending,
    save_report,
    show_engine_log,
)
from animegan_cli.core.errors import AnimeganError, UsageError
from animegan_cli.core.signals import Interrupted, stop_on_signals
from animegan_cli.faces.detect import FaceSettings
from animegan_cli.media.inputs import read_path_list
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, convert
from animegan_cli.records.selection import parse_shard, parse_since
from animegan_cli.settings import fields
from animegan_cli.settings.config import load_config


class ConvertCommand(click.Command):
    """convert: a usage error found while parsing still writes the --report it names."""

    def make_context(self, info_name, args, parent=None, **extra):  # noqa: ANN001, ANN201
        report_file = _report_argument(list(args))
        try:
            config_error = parent.meta.get(CONFIG_ERROR) if parent is not None else None
            if config_error is not None:
                raise_for(config_error)
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            if report_file is not None and report_file.parent.is_dir():
                ending = Ending(exc.exit_code, error=exc.format_message())
                save_report(report_file, ending, None)
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


# convert's flags by setting name: the config file's keys as click's default_map names them.
CONVERT_PARAMS = {s.name: s.param for s in fields.CONVERT_OPTIONS}


@click.command("convert", cls=ConvertCommand)
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
    refuse_style_with_weights(weights)
    if report_file is not None:
        _check_report_folder(report_file)
    if verbose and not quiet:
        show_engine_log()
    show_bar = not quiet and stderr_is_terminal()
    bar = RunBar(disable=not show_bar)
    events = convert_events(bar, dry_run, as_json, quiet)
    params = click.get_current_context().params
    ending, options, crashed = _run_convert(params, show_bar, events, bar)
    with contextlib.suppress(BrokenPipeError):  # stderr into `| head`: the report still counts
        print_ending(ending, quiet, verbose, dry_run)
    status = save_report(report_file, ending, options) if report_file else ending.status
    if crashed is not None:
        raise crashed
    if status:
        sys.exit(status)


def _run_convert(params: Mapping[str, Any], progress: bool, events: ConvertEvents, bar: RunBar
                 ) -> tuple[Ending, ConvertOptions | None, Exception | None]:
    """Run convert and say how it ended, with the options it ran with and any crash."""
    options: ConvertOptions | None = None
    ending = Ending()
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


def _check_report_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"--report: folder {folder} does not exist", EXIT_USAGE)
    if path.is_dir():
        raise CommandError(f"--report: {path} is a folder", EXIT_USAGE)


def _stdin_paths(null: bool) -> list[str]:
    # Bytes, decoded as file names are: a name that is not UTF-8 works in every locale.
    return read_path_list(sys.stdin.buffer, null_separated=null)


def read_convert_defaults() -> dict[str, dict[str, Any]]:
    """convert's defaults from the config file, as click's default_map entry."""
    return {"convert": {CONVERT_PARAMS[k]: v for k, v in load_config().items()}}


def convert_config_defaults(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """read_convert_defaults; an unreadable file is left for convert to raise, once it knows
    its --report."""
    try:
        return read_convert_defaults()
    except AnimeganError as exc:
        ctx.meta[CONFIG_ERROR] = exc
        return {}


ENTRY = CommandEntry(convert_command, convert_config_defaults, stops_on_signals=True)
