"""``animegan weights``: list, download and import checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from animegan_cli.cli.common import CommandEntry, raise_for, stderr_is_terminal
from animegan_cli.cli.options import EXIT_FAILED, EXIT_USAGE, CommandError
from animegan_cli.core.errors import AnimeganError
from animegan_cli.model.originals import LICENCE, ORIGINALS
from animegan_cli.model.weights import STYLES, WeightsStore
from animegan_cli.pipeline.report import one_line


@click.group("weights")
def weights_group() -> None:
    """List, download and import the AnimeGANv2 checkpoints."""


@weights_group.command("list")
def weights_list() -> None:
    """Show each published style, what it was trained on, and where it is installed; then
    AnimeGANv2's own TensorFlow styles (where to get them, their licence) and checkpoints
    imported under names of their own.

    \b
    Example:
        animegan weights list
    """
    store = WeightsStore.from_env()
    for status in store.status():
        where = str(status.path) if status.path else "not installed"
        click.echo(f"{status.style.name:<18} {where}\n    {status.style.trained_on}")
    for original in ORIGINALS.values():
        found = store.find(original.name)
        where = str(found) if found else "not installed: get the folder, then weights import it"
        click.echo(f"{original.name:<18} {where}\n    {original.trained_on}\n"
                   f"    TensorFlow checkpoint {original.folder}/{original.checkpoint}: "
                   f"{original.url}\n    licence: {LICENCE}")
    for name, path in store.custom().items():
        if name not in ORIGINALS:
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
        raise_for(store.unknown_style(unknown))  # before any download
    failed = 0
    for name in chosen:
        # One style that cannot be fetched does not keep the others from being tried.
        try:
            path = store.download(name, progress=stderr_is_terminal())
        except AnimeganError as exc:
            click.echo(f"animegan: error: {one_line(str(exc))}", err=True)
            failed += 1
            continue
        click.echo(f"{name}: {path}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


@weights_group.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", default=None,
              help="Style name to store it under (default: the file's stem; for a TensorFlow "
                   "checkpoint its style, e.g. hayao). One FILE only.")
@click.option("--force", is_flag=True,
              help="Replace a checkpoint already installed under that name.")
def weights_import(files: tuple[Path, ...], name: str | None, force: bool) -> None:
    """Copy checkpoints into the store (for machines without internet, or custom ones).

    Each FILE is a PyTorch checkpoint, or one of AnimeGANv2's own TensorFlow checkpoints:
    its folder, its PREFIX or PREFIX.index (read without TensorFlow, every tensor's crc32c
    checked, stored with the TensorFlow graph's resize and norm details). A published
    name is verified against its git blob id; any other name is checked for the
    generator's exact keys and shapes. A name already installed (with other bytes) is
    refused unless --force. With several FILEs, each failure is one line and the exit
    status is 1 if any failed.

    \b
    Examples:
        animegan weights import ~/Downloads/paprika.pt
        animegan weights import AnimeGANv2/checkpoint/generator_Hayao_weight
    """
    if name is not None and len(files) > 1:
        raise CommandError("--name names one checkpoint: import one FILE with it", EXIT_USAGE)
    store = WeightsStore.from_env()
    failed = 0
    for file in files:
        try:
            imported = store.import_checkpoint(file, name, force=force)
        except AnimeganError as exc:
            if len(files) == 1:
                raise_for(exc)
            click.echo(f"animegan: error: {one_line(str(exc))}", err=True)
            failed += 1
            continue
        if imported.already:
            click.echo(f"already imported: {imported.path} holds the same bytes; "
                       "nothing changed", err=True)
        else:
            click.echo(f"imported {file} as {imported.path}", err=True)
    if failed:
        sys.exit(EXIT_FAILED)


ENTRY = CommandEntry(weights_group)
