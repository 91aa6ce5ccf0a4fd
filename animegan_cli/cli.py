"""The ``animegan`` command line: parse, call the library, report. Nothing else."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click
from tqdm import tqdm

from animegan_cli import __version__
from animegan_cli.convert import ConvertEvents, ConvertOptions, FileResult, Summary, convert
from animegan_cli.data import DEFAULT_MAX_PIXELS
from animegan_cli.engine import DEVICES, PRECISIONS
from animegan_cli.errors import AnimeganError, UsageError
from animegan_cli.inputs import read_path_list
from animegan_cli.outputs import FORMAT_CHOICES
from animegan_cli.report import build_report, json_safe, one_line, write_report
from animegan_cli.resources import DEFAULT_BUDGET_SHARE, parse_size
from animegan_cli.signals import Interrupted, stop_on_signals
from animegan_cli.weights import DEFAULT_STYLE, STYLES, WeightsStore

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(click.ClickException):
    """A library error shown as one line ``animegan: error: ...`` with its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"animegan: error: {self.format_message()}", err=True)


def _raise_for(exc: AnimeganError) -> None:
    code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    raise CommandError(str(exc), code) from exc


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _size_option(unit: int) -> Callable[[click.Context, click.Parameter, str | None], int | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value, unit)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return parse


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="animegan")
def main() -> None:
    """Turn folders of photos into anime-style images with AnimeGANv2.

    \b
    Example:
        animegan convert ./photos -o ./out --batch-size 8
    """


@main.command("convert")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output folder; the input tree is mirrored under it.")
@click.option("--style", default=DEFAULT_STYLE, show_default=True,
              help=f"Published style: {', '.join(STYLES)}.")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Use this checkpoint file instead of a published style.")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk input folders recursively.")
@click.option("-0", "--null", is_flag=True,
              help="With '-', paths on stdin are NUL-separated (find -print0).")
@click.option("--suffix", default="", help="Text added to each output file's stem.")
@click.option("--format", "format_", type=click.Choice(FORMAT_CHOICES), default="same",
              show_default=True, help="Output format; 'same' keeps the input's.")
@click.option("--quality", type=int, default=95, show_default=True,
              help="JPEG/WebP quality, 1-100.")
@click.option("--size", type=int, default=512, show_default=True,
              help="Long side of the model input in pixels (multiple of 4); 0 = native size.")
@click.option("--keep-size", is_flag=True, help="Scale each result back to its input's size.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Images of the same shape run through the model together.")
@click.option("--num-workers", type=int, default=1, show_default=True,
              help="Processes decoding and resizing ahead of the model (0 = in the main one).")
@click.option("--threads", type=int, default=None,
              help="Threads for the model (torch.set_num_threads); default: torch's.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto = bf16 where the CPU has AMX/AVX512-BF16 or on CUDA, else fp32.")
@click.option("--align-corners/--no-align-corners", default=False, show_default=True,
              help="Upsampling mode; the upstream command line used --no-align-corners.")
@click.option("--overwrite", is_flag=True, help="Redo outputs that already exist.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per input on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary line.")
@click.option("--max-pixels", default=f"{DEFAULT_MAX_PIXELS // 10**6}M", show_default=True,
              callback=_size_option(1000), metavar="N",
              help="Refuse larger images (width x height, e.g. 50M) from their header, "
                   "before decoding; 0 = no limit.")
@click.option("--max-memory", default=None, callback=_size_option(1024), metavar="SIZE",
              help=f"Memory budget, e.g. 4G or 512M (default: {DEFAULT_BUDGET_SHARE:.0%} of "
                   "available memory). The batch size is lowered to fit.")
@click.option("--wait", is_flag=True,
              help="If another run is writing to OUTPUT, wait for it (default: exit 2).")
@click.option("--report", "report_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Write a JSON summary of the run to this file at the end.")
def convert_command(inputs: tuple[str, ...], output: Path, style: str, weights: Path | None,
                    recursive: bool, null: bool, suffix: str, format_: str, quality: int,
                    size: int, keep_size: bool, batch_size: int, num_workers: int,
                    threads: int | None, device: str, precision: str, align_corners: bool,
                    overwrite: bool, as_json: bool, quiet: bool, max_pixels: int,
                    max_memory: int | None, wait: bool, report_file: Path | None) -> None:
    """Convert images (files, folders, or '-' for a list on stdin) into OUTPUT.

    Existing outputs are skipped, so re-running converts only new photos. Exit status:
    0 all converted or skipped, 1 some inputs failed, 2 usage error, 130/143 stopped by
    Ctrl-C/SIGTERM (what was written stays; a rerun converts the rest).

    \b
    Examples:
        animegan convert ./photos -o ./out --batch-size 8
        find ~/Pictures -name '*.jpg' -print0 | animegan convert - -0 -o ./out --json
    """
    if report_file is not None:
        _check_report_folder(report_file)
    sources = [p for src in inputs for p in (_stdin_paths(null) if src == "-" else [src])]
    show_bar = not quiet and _stderr_is_terminal()
    bar = tqdm(total=0, unit="img", file=sys.stderr, disable=not show_bar, dynamic_ncols=True)

    def on_plan(to_convert: int, skipped: int) -> None:
        bar.reset(total=to_convert + skipped)

    def on_result(result: FileResult) -> None:
        bar.update(1)
        if result.status == "failed":
            tqdm.write(f"animegan: error: {one_line(result.input)}: {one_line(result.error or '')}",
                       file=sys.stderr)
        if as_json:
            record = {k: json_safe(v) if isinstance(v, str) else v
                      for k, v in result.as_dict().items()}
            click.echo(json.dumps(record, ensure_ascii=False))

    def on_message(message: str) -> None:
        if not quiet:
            tqdm.write(f"animegan: {message}", file=sys.stderr)

    options = ConvertOptions(
        inputs=sources, output=output, style=style, weights=weights, recursive=recursive,
        suffix=suffix, format=format_, quality=quality, size=size, keep_size=keep_size,
        batch_size=batch_size, num_workers=num_workers, threads=threads, device=device,
        precision=precision, align_corners=align_corners, overwrite=overwrite,
        progress=show_bar, max_pixels=max_pixels, max_memory=max_memory, wait=wait,
    )
    summary: Summary | None = None
    error = interrupted_by = None
    try:
        with stop_on_signals():
            summary = convert(options, ConvertEvents(on_plan, on_result, on_message))
        status = EXIT_FAILED if summary.failed else 0
    except Interrupted as exc:
        summary, status = exc.summary, exc.exit_status  # type: ignore[assignment]
        interrupted_by = signal.Signals(exc.signum).name
    except AnimeganError as exc:
        summary = getattr(exc, "summary", None)
        status = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
        error = str(exc)
    finally:
        bar.close()
    if error:
        click.echo(f"animegan: error: {one_line(error)}", err=True)
    if interrupted_by and summary is not None:
        left = summary.found - summary.converted - summary.skipped - summary.failed
        rest = (f"{left} image(s) not converted (run again to convert them)" if left > 0
                else "nothing left unconverted" if summary.found else "before any image")
        click.echo(f"animegan: stopped by {interrupted_by}; {rest}", err=True)
    if summary is not None and not quiet:
        click.echo(_summary_line(summary), err=True)
    if report_file is not None:
        try:
            write_report(report_file, build_report(summary, options, status, error,
                                                   interrupted_by))
        except OSError as exc:
            click.echo(f"animegan: error: cannot write report {one_line(report_file)}: "
                       f"{exc.strerror or exc}", err=True)
            status = status or EXIT_FAILED
    if status:
        sys.exit(status)


def _check_report_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"--report: folder {folder} does not exist", EXIT_USAGE)
    if path.is_dir():
        raise CommandError(f"--report: {path} is a folder", EXIT_USAGE)


def _stdin_paths(null: bool) -> list[str]:
    stream = click.get_text_stream("stdin")
    return read_path_list(stream, null_separated=null)


def _summary_line(summary: Summary) -> str:
    return (
        f"converted {summary.converted}, skipped {summary.skipped}, failed {summary.failed} "
        f"in {summary.seconds:.1f} s ({summary.images_per_second:.2f} img/s)"
    )


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
    try:
        for name in chosen:
            if name not in STYLES:
                raise UsageError(f"unknown style {name!r}; choose from: {', '.join(STYLES)}")
            path = store.download(name, progress=_stderr_is_terminal())
            click.echo(f"{name}: {path}", err=True)
    except AnimeganError as exc:
        _raise_for(exc)


@weights_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--name", default=None, help="Style name to store it under (default: file stem).")
def weights_import(file: Path, name: str | None) -> None:
    """Copy a checkpoint into the store (for machines without internet, or custom ones).

    A published name is verified against its git blob id; any other name is checked for
    the generator's exact keys and shapes.

    \b
    Example:
        animegan weights import ~/Downloads/paprika.pt
    """
    try:
        path = WeightsStore.from_env().import_file(file, name)
    except AnimeganError as exc:
        _raise_for(exc)
    click.echo(f"imported {file} as {path}", err=True)
