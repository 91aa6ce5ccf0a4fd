"""Click options made from the settings' declarations (settings/fields.py), nothing typed twice.

``option(setting)`` is the one place a declaration becomes a click option: its flags, default,
``ANIMEGAN_*`` variable, choices and help. A bad value from a variable or the config file is
blamed on where it came from (``_SourcedOption``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from animegan_cli.media.formats import png_level_problem
from animegan_cli.media.outputs import format_key
from animegan_cli.model.weights import STYLES, WeightsStore
from animegan_cli.pipeline.resources import DEFAULT_BUDGET_SHARE, parse_size
from animegan_cli.settings import fields
from animegan_cli.settings.config import config_path
from animegan_cli.settings.fields import Setting

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(click.ClickException):
    """A library error shown as one line ``animegan: error: ...`` with its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"animegan: error: {self.format_message()}", err=True)


def _size_option(unit: int) -> Callable[[click.Context, click.Parameter, str | None], int | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(str(value), unit)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return parse


def _png_level(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """--png-level: a zlib level 0-9 or rle, from a flag, a variable or the config file."""
    text = str(value).strip().lower()
    level: object = int(text) if text.isdigit() else text
    problem = png_level_problem(level)  # type: ignore[arg-type]
    if problem is not None:
        raise click.BadParameter(problem.removeprefix("--png-level "))
    return level


@dataclass(frozen=True)
class _Parser:
    """How the CLI reads a setting's text: a click type, a callback, the default as shown."""

    type: click.ParamType | None = None
    callback: Callable[..., Any] | None = None
    shown: Callable[[Any], object] | None = None  # the default as --help shows (and parses) it


def _millions(value: int) -> str:
    return f"{value // 10**6}M"


# Setting.parse -> how its text is read (a registry: a new kind of value is one line).
PARSERS: dict[str, _Parser] = {
    "file": _Parser(click.Path(path_type=Path, dir_okay=False)),
    "folder": _Parser(click.Path(path_type=Path, file_okay=False)),
    "path": _Parser(click.Path(path_type=Path)),
    "format": _Parser(callback=lambda ctx, param, value: format_key(value)),
    "png_level": _Parser(callback=_png_level),
    "pixels": _Parser(callback=_size_option(1000), shown=_millions),
    "bytes": _Parser(callback=_size_option(1024)),
}
# What a help text's {placeholders} stand for: known above the settings' layer.
HELP_VALUES: dict[str, Callable[[], str]] = {
    "styles": lambda: ", ".join(STYLES),
    "face_styles": lambda: ", ".join(_face_styles()),
    "budget_share": lambda: f"{DEFAULT_BUDGET_SHARE:.0%}",
}


def _face_styles() -> list[str]:
    from animegan_cli.faces.detect import face_styles

    return face_styles()


def help_text(setting: Setting[Any]) -> str:
    """The setting's --help text, its placeholders filled in."""
    if "{" not in setting.help:
        return setting.help
    return setting.help.format_map({k: value() for k, value in HELP_VALUES.items()})


def choices(setting: Setting[Any]) -> list[str] | None:
    """The values a setting with ``choices`` accepts (resolved from its "module:attribute")."""
    if setting.choices is None:
        return None
    module, attribute = setting.choices.split(":")
    return list(getattr(importlib.import_module(module), attribute))


def shown_default(setting: Setting[Any]) -> object:
    """The default as click holds it (and --help shows it): "200M" for 200_000_000."""
    parser = PARSERS.get(setting.parse or "")
    if parser is not None and parser.shown is not None:
        return parser.shown(setting.default)
    return setting.default


def config_key(param_name: str | None) -> str | None:
    """The config key of a click parameter name (format_ -> format)."""
    return next((s.name for s in fields.ALL if s.param == param_name), param_name)


class _SourcedOption(click.Option):
    """An option whose bad value is blamed on where it came from: flag, variable or file."""

    def handle_parse_result(self, ctx: click.Context, opts, args):  # noqa: ANN001, ANN201
        try:
            return super().handle_parse_result(ctx, opts, args)
        except click.BadParameter as exc:
            _, source = self.consume_value(ctx, opts)
            reason = exc.message.rstrip(".")
            if source is ParameterSource.ENVIRONMENT:
                where = f"{self.envvar} (environment)"
            elif source is ParameterSource.DEFAULT_MAP:
                where = f"{config_key(self.name)} (config file {config_path()})"
            else:
                raise
            raise CommandError(f"invalid value for {where}: {reason}", EXIT_USAGE) from None


class _StyleOption(_SourcedOption):
    """--style, whose help also lists the checkpoints imported on this machine."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - click's signature
        super().__init__(*args, **kwargs)
        self.base_help = self.help or ""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        imported = ", ".join(WeightsStore.from_env().custom())
        self.help = self.base_help + (f"; imported here: {imported}" if imported else "")
        return super().get_help_record(ctx)


# Settings whose option is of a class of its own.
_OPTION_CLASSES: dict[str, type[click.Option]] = {"style": _StyleOption}


def option(setting: Setting[Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of ``setting``, everything in it read from the declaration."""
    kwargs: dict[str, Any] = dict(setting.click)
    parser = PARSERS.get(setting.parse or "")
    values = choices(setting)
    if values is not None:
        kwargs["type"] = click.Choice(values)
    elif parser is not None:
        kwargs["type"] = parser.type
    elif setting.python_type is not None and not kwargs.get("is_flag"):
        kwargs["type"] = setting.python_type
    if parser is not None and parser.callback is not None:
        kwargs["callback"] = parser.callback
    if not (kwargs.get("multiple") or kwargs.get("required")):
        kwargs["default"] = shown_default(setting)
    cls = _OPTION_CLASSES.get(setting.name, _SourcedOption)
    return click.option(*setting.flags, setting.param, envvar=setting.envvar, cls=cls,
                        help=help_text(setting), **kwargs)


def apply(command: Callable[..., Any], options: Sequence[Callable[..., Any]]) -> Callable[..., Any]:
    """``command`` with ``options`` applied, the first one listed first in --help."""
    for one in reversed(options):
        command = one(command)
    return command


def options(settings: Sequence[Setting[Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding the click options of ``settings``, in their order."""
    return lambda command: apply(command, [option(s) for s in settings])


def by_param(params: Mapping[str, Any], settings: Sequence[Setting[Any]]) -> dict[str, Any]:
    """The values of ``settings`` in click's ``params``, by setting name."""
    return {s.name: params[s.param] for s in settings}
