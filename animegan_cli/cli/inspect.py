"""``animegan inspect``: show the record an output carries (or its folder's manifest holds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from animegan_cli.cli.common import CommandEntry
from animegan_cli.cli.options import EXIT_FAILED
from animegan_cli.records.manifest import find_provenance


@click.command("inspect")
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


ENTRY = CommandEntry(inspect_command)
