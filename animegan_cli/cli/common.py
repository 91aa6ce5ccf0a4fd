"""What every command shares: the error an AnimeganError becomes, stderr lines, the model
options, and the entry a command module hands to the group's registry."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from animegan_cli.cli.options import EXIT_FAILED, EXIT_USAGE, CommandError, options
from animegan_cli.core.errors import AnimeganError, UsageError
from animegan_cli.settings import fields

# Where the group leaves a config file error for a command that raises it itself (convert,
# once it knows its --report).
CONFIG_ERROR = "animegan.config_error"

# The model options convert, serve, tune and export share; convert's own, in --help order.
model_options = options((fields.STYLE, fields.WEIGHTS, fields.SIZE))


@dataclass(frozen=True)
class CommandEntry:
    """A command as the group registers it (app.COMMANDS lists one per command module)."""

    command: click.Command
    # The defaults this command reads from the config file, as click's default_map entries
    # (by command name); called with the group's context only when this command runs. A
    # file it cannot read (AnimeganError) is the run's usage error.
    config_defaults: Callable[[click.Context], dict[str, dict[str, Any]]] | None = None
    # Whether the command turns SIGINT/SIGTERM into a clean stop (the others release them).
    stops_on_signals: bool = False


def raise_for(exc: AnimeganError) -> NoReturn:
    """The library's error as the command's: its message, exit status 2 (usage) or 1."""
    code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    raise CommandError(str(exc), code) from exc


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def say(message: str) -> None:
    click.echo(f"animegan: {message}", err=True)


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (CliRunner): nothing will flush into a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def refuse_style_with_weights(weights: Path | None) -> None:
    style_source = click.get_current_context().get_parameter_source("style")
    if weights is not None and style_source == ParameterSource.COMMANDLINE:
        # A style from the config file or ANIMEGAN_STYLE is a default: --weights overrides it.
        raise CommandError("give --style or --weights, not both", EXIT_USAGE)
