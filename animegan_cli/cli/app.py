"""The ``animegan`` group: the commands it registers, the config file defaults it hands them,
and a reader that goes away (`| head`). Each command lives in a module of its own."""

from __future__ import annotations

import signal

import click

from animegan_cli import __version__
from animegan_cli.cli import convert, export, info, inspect, serve, tune, watch, weights
from animegan_cli.cli.common import CommandEntry, quiet_stdout, raise_for
from animegan_cli.core.errors import AnimeganError
from animegan_cli.core.signals import release_early

# The shell's status for a program whose reader went away (128 + SIGPIPE), as `ls | head`.
EXIT_PIPE = 128 + signal.SIGPIPE

# Every command: a new one is a module with an ENTRY, and its line here.
COMMANDS: tuple[CommandEntry, ...] = (
    convert.ENTRY,
    watch.ENTRY,
    inspect.ENTRY,
    weights.ENTRY,
    serve.ENTRY,
    info.ENTRY,
    tune.ENTRY,
    export.ENTRY,
)


class _Commands(click.Group):
    """The top-level group: a reader that goes away (`| head`) ends any command quietly."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            quiet_stdout()
            ctx.exit(EXIT_PIPE)


@click.group(cls=_Commands, commands=[entry.command for entry in COMMANDS],
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
    entry = next((e for e in COMMANDS if e.command.name == ctx.invoked_subcommand), None)
    if entry is None or not entry.stops_on_signals:
        release_early()  # only convert turns a signal into a clean stop (a report)
    if entry is None or entry.config_defaults is None or ctx.resilient_parsing:
        return
    try:
        ctx.default_map = entry.config_defaults(ctx) or None
    except AnimeganError as exc:
        raise_for(exc)
