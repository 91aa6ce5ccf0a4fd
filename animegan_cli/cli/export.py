"""``animegan export``: write a style as ONNX and/or OpenVINO IR, verified by running it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from animegan_cli.cli.common import (
    CommandEntry,
    model_options,
    raise_for,
    refuse_style_with_weights,
)
from animegan_cli.cli.options import options
from animegan_cli.core.errors import AnimeganError
from animegan_cli.settings import fields

# export's --align-corners: the setting, without a variable or config key (a file's own choice).
_EXPORT_ALIGN_CORNERS = dataclasses.replace(
    fields.ALIGN_CORNERS, help="Upsampling mode baked into the exported model.", envvar=None,
    config=())


@click.command("export")
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

    refuse_style_with_weights(weights)
    request = ExportRequest(style=style, weights=weights, onnx=onnx_file,
                            openvino=openvino_dir, size=size or fields.SIZE.default,
                            align_corners=align_corners)
    try:
        written = export_checkpoint(request, on_message=lambda m: click.echo(f"animegan: {m}",
                                                                             err=True))
    except AnimeganError as exc:
        raise_for(exc)
    for path, verification in written:
        click.echo(f"wrote {path}; {verification.line()}")


ENTRY = CommandEntry(export_command)
