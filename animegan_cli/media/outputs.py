"""Output files: naming, encoding, atomic writes and the skip-existing policy."""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from animegan_cli.core.atomic import TEMP_PREFIX as TEMP_PREFIX  # re-exported for older importers
from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import InputImageError, UsageError
from animegan_cli.core.failures import PER_ITEM_ERRORS
from animegan_cli.media.formats import BY_EXTENSION, FORMATS, OutputFormat, PngLevel, size_problem
from animegan_cli.media.inputs import InputFile
from animegan_cli.media.kinds import KINDS
from animegan_cli.settings import fields

# --format names: each offered format's key and the other names of its extensions (jpeg
# is jpg), from the table.
FORMAT_NAMES = {name: key for key, fmt in FORMATS.items() if fmt.offered
                for name in (key, *(ext.lstrip(".") for ext in fmt.extensions))}
FORMAT_CHOICES = ("same", *FORMAT_NAMES)

# Input extension -> output format for --format same: an input keeps its format. HEIC
# cannot be written without a plugin that may be absent, so phones' photos come out as JPEG;
# a still GIF comes out as PNG (GIF's 256 colours would band a styled image; an animated
# GIF is the animation kind's, which keeps GIF).
SAME_FORMAT = {**BY_EXTENSION, ".heic": "jpg", ".heif": "jpg", ".gif": "png"}


def format_for(input_path: Path, requested: str) -> OutputFormat:
    """The output format for one input given ``--format`` (same keeps the input's format)."""
    return format_of(input_path) if requested == "same" else FORMATS[FORMAT_NAMES[requested]]


def format_key(requested: str) -> str:
    """A --format name as the table's key (jpeg -> jpg; same and unknown names unchanged)."""
    return FORMAT_NAMES.get(requested, requested)


def format_of(path: Path) -> OutputFormat:
    """The format a file name asks for, by its extension (unknown ones get PNG)."""
    return FORMATS[SAME_FORMAT.get(path.suffix.lower(), "png")]


def image_has_alpha(path: Path) -> bool:
    """Whether a file's header says it has transparency (reads the header only)."""
    try:
        with Image.open(path) as img:
            return "A" in img.getbands() or "transparency" in img.info
    except PER_ITEM_ERRORS:  # a damaged header: decoding will fail it with the reason
        return False


def plan_outputs(
    inputs: Sequence[InputFile],
    out_dir: Path,
    requested_format: str = "same",
    suffix: str = "",
    has_alpha: Callable[[Path], bool] = image_has_alpha,
    video_format: str = fields.VIDEO_FORMAT.default,
) -> list[Path]:
    """Output path for each input: ``out_dir/<its relative path>`` with this run's format.

    An input with transparency whose target format cannot hold it is written as PNG. A path
    depends only on its input's own path and the flags, never on the other inputs: inputs
    that would share one are not renamed (``fail_collisions`` turns them into failures).
    """
    if requested_format not in FORMAT_CHOICES:
        choices = ", ".join(FORMAT_CHOICES)
        raise UsageError(f"unknown format {requested_format!r}; choose from: {choices}")
    planned = []
    for item in inputs:
        kind_extension = KINDS[item.kind].output_extension
        if kind_extension is not None:  # a clip's (--video-format), an animation's (its own)
            rel = item.relative
            extension = kind_extension(item.path, requested_format, video_format)
            planned.append(out_dir / rel.parent / f"{rel.stem}{suffix}{extension}")
            continue
        fmt = format_for(item.path, requested_format)
        # An input that already failed is not opened: it may be a FIFO that never answers.
        if not fmt.holds_alpha and item.error is None:
            # A JPEG input has no alpha: not opened to ask.
            jpeg = item.path.suffix.lower() in FORMATS["jpg"].extensions
            if not jpeg and has_alpha(item.path):
                fmt = FORMATS["png"]
        rel = item.relative
        planned.append(out_dir / rel.parent / f"{rel.stem}{suffix}{fmt.extension}")
    _refuse_overwriting_inputs(inputs, planned)
    return planned


def fail_collisions(
    inputs: Sequence[InputFile], planned: Sequence[Path], requested_format: str = "same"
) -> list[InputFile]:
    """The inputs, each one whose output another input also maps to marked as failing.

    Compared case-folded, as on macOS and Windows file systems. Renaming by arrival order
    would give an input another name in a run with other inputs, so none of them is written.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (item, path) in enumerate(zip(inputs, planned)):
        if item.error is None:
            groups[str(path).casefold()].append(i)
    marked = list(inputs)
    for members in groups.values():
        if len(members) < 2:
            continue
        fix = _collision_fix([inputs[i].path for i in members], requested_format)
        for i in members:
            others = [str(inputs[j].path) for j in members if j != i]
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3
                                             else "")
            reason = f"its output {planned[i]} would also be the output of {shown}; {fix}"
            marked[i] = dataclasses.replace(inputs[i], error=reason)
    return marked


def _collision_fix(paths: Sequence[Path], requested_format: str) -> str:
    stems = {os.path.splitext(os.path.abspath(p))[0].casefold() for p in paths}
    if len(stems) == 1:  # a.jpg beside a.png (or a.jpeg): only the extension differs
        same = "--format same, or " if requested_format != "same" else ""
        return f"not converted (use {same}a separate run with another --suffix, or rename one)"
    return "not converted (use --base DIR to mirror their full paths, or rename one)"


def _refuse_overwriting_inputs(inputs: Sequence[InputFile], planned: Sequence[Path]) -> None:
    sources = {os.path.realpath(item.path) for item in inputs}
    for item, out in zip(inputs, planned):
        if os.path.realpath(out) in sources:
            raise UsageError(
                f"output {out} would overwrite the input {item.path}; "
                "choose another output folder or add --suffix"
            )


def write_image_atomic(
    image: Image.Image,
    path: Path,
    quality: int = fields.QUALITY.default,
    fsync: bool = True,
    metadata: str | None = None,
    root: Path | None = None,
    before_rename: Callable[[os.stat_result], None] | None = None,
    png_level: PngLevel | None = None,
) -> None:
    """Encode ``image`` to ``path`` via a temp file and rename: never a half-written file.

    ``metadata`` (a provenance record's JSON) is embedded where the format has room for it
    (see :mod:`animegan_cli.media.formats`: PNG text chunk, JPEG/WebP XMP, TIFF ImageDescription;
    BMP has none). ``root`` (the output folder) and ``before_rename`` are passed to
    :func:`atomic.atomic_write`: with ``root``, a symlinked folder below it is refused,
    never written through. ``png_level`` is PNG's zlib level or "rle" (None: Pillow's, 6).
    """
    fmt = format_of(path)
    atomic_write(
        path,
        lambda handle: encode_image(image, handle, fmt, quality, metadata, png_level),
        root=root,
        fsync=fsync,
        before_rename=before_rename,
    )


def encode_image(
    image: Image.Image,
    handle: BinaryIO,
    fmt: OutputFormat,
    quality: int = fields.QUALITY.default,
    metadata: str | None = None,
    png_level: PngLevel | None = None,
) -> None:
    """Encode ``image`` into an open file as ``fmt``: the one encoder convert and serve share.

    InputImageError, before anything is written, for an image the format cannot hold.
    """
    problem = size_problem(fmt, *image.size)
    if problem is not None:
        raise InputImageError(problem)
    if image.mode == "RGBA" and not fmt.holds_alpha:
        image = image.convert("RGB")
    image.save(handle, format=fmt.pil_name, **fmt.save_kwargs(quality, metadata, png_level))
