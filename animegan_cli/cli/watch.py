"""``animegan watch``: convert's flags into ConvertOptions, one call to watch(), the end said."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from animegan_cli.cli.common import CommandEntry, raise_for, refuse_style_with_weights, say
from animegan_cli.cli.convert import read_convert_defaults
from animegan_cli.cli.options import by_param, options
from animegan_cli.cli.progress import RunBar, convert_events, show_engine_log
from animegan_cli.core.errors import AnimeganError
from animegan_cli.core.signals import Interrupted, stop_on_signals
from animegan_cli.faces.detect import FaceSettings
from animegan_cli.pipeline.convert import ConvertOptions
from animegan_cli.pipeline.report import one_line
from animegan_cli.pipeline.results import ConvertEvents, FileResult
from animegan_cli.settings import fields
from animegan_cli.watch.run import Totals, watch

# The declared settings ConvertOptions holds as they are (faces: grouped below).
_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(ConvertOptions)) - {
    "faces", "progress", "inputs", "listed"}


@click.command("watch")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(file_okay=False))
@options(fields.WATCH_OPTIONS)
def watch_command(inputs: tuple[str, ...], weights: Path | None, as_json: bool, quiet: bool,
                  verbose: bool, settle: float, poll: bool, **flags: object) -> None:
    """Style photos and clips as they arrive in folders, into OUTPUT.

    Starts like convert (what is up to date is skipped), then follows the folders: a file
    is styled once its size and mtime have been still for --settle seconds; a file moved
    in is picked up, a changed one restyled, a deleted input's output left in place. The
    model is loaded once. SIGTERM or Ctrl-C finishes the batch in flight and exits 0.

    \b
    Example:
        animegan watch ~/Sync/Camera -o ~/Pictures/anime --json
    """
    refuse_style_with_weights(weights)
    if verbose and not quiet:
        show_engine_log()
    params = click.get_current_context().params
    totals = Totals()
    events = _log_each(convert_events(RunBar(disable=True), False, as_json, quiet),
                       as_json or quiet)
    try:
        with stop_on_signals():
            watch(_options(params), settle, poll, events, totals)
    except Interrupted:
        pass  # a stop asked for: the batch in flight was finished
    except AnimeganError as exc:
        raise_for(exc)
    if not quiet:
        say(f"watch stopped: {totals.converted} converted, {totals.skipped} up to date, "
            f"{totals.failed} failed")


def _options(params: dict[str, Any]) -> ConvertOptions:
    declared = by_param(params, [s for s in fields.WATCH_OPTIONS if s.name in _OPTION_FIELDS])
    faces = FaceSettings(*by_param(params, fields.FACES_GROUP).values())
    return ConvertOptions(**declared, inputs=list(params["inputs"]), faces=faces)


def _log_each(events: ConvertEvents, silent: bool) -> ConvertEvents:
    """convert's events, and a line on stderr per file styled (not with --json or -q)."""
    if silent:
        return events
    on_result = events.on_result

    def report(result: FileResult) -> None:
        on_result(result)
        if result.status == "converted":
            say(f"styled {one_line(result.input)} -> {one_line(result.output or '')} "
                f"({result.seconds:.2f} s)")
    return dataclasses.replace(events, on_result=report)


def _config_defaults(ctx: click.Context) -> dict[str, dict[str, Any]]:
    """convert's defaults from the config file ([convert]): watch runs with the same."""
    return {"watch": read_convert_defaults()["convert"]}


ENTRY = CommandEntry(watch_command, _config_defaults, stops_on_signals=True)
