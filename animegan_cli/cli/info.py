"""``animegan info``: versions, CPU features, paths, weights, and convert's defaults."""

from __future__ import annotations

import click
from click.core import ParameterSource

from animegan_cli.cli.common import CommandEntry
from animegan_cli.cli.convert import convert_command, read_convert_defaults
from animegan_cli.tools.system import describe_auto, describe_system, torch_details

_SOURCES: dict[ParameterSource | None, str] = {
    ParameterSource.DEFAULT: "built-in",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.ENVIRONMENT: "environment",
    ParameterSource.COMMANDLINE: "flag",
}


@click.command("info")
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


# info shows convert's defaults: it reads what convert reads from the config file.
ENTRY = CommandEntry(info_command, lambda ctx: read_convert_defaults())
