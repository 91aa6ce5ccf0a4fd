"""Output files: naming, encoding, atomic writes and the skip-existing policy."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from animegan_cli.errors import UsageError
from animegan_cli.inputs import InputFile
from animegan_cli.provenance import embed_options


@dataclass(frozen=True)
class OutputFormat:
    """A format we can write: Pillow's name, the file extension, and whether it holds alpha."""

    pil_name: str
    extension: str
    holds_alpha: bool


FORMATS: dict[str, OutputFormat] = {
    "jpg": OutputFormat("JPEG", ".jpg", False),
    "png": OutputFormat("PNG", ".png", True),
    "webp": OutputFormat("WEBP", ".webp", True),
    "bmp": OutputFormat("BMP", ".bmp", False),
    "tiff": OutputFormat("TIFF", ".tif", True),
}
FORMAT_CHOICES = ("same", "jpg", "png", "webp")

# Input extension -> output format for --format same. HEIC cannot be written without a
# plugin that may be absent, so phones' photos come out as JPEG.
SAME_FORMAT = {
    ".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp",
    ".tif": "tiff", ".tiff": "tiff", ".heic": "jpg", ".heif": "jpg",
}
TEMP_PREFIX = ".animegan-tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)
"""Temporary files start with this, so a leftover from a killed run is recognisable."""
# Bytes of the output name kept in its temp file's name (prefix, pid, random suffix added).
_TEMP_NAME_BYTES = 200


def format_for(input_path: Path, requested: str) -> OutputFormat:
    """The output format for one input given ``--format`` (same keeps the input's format)."""
    return format_of(input_path) if requested == "same" else FORMATS[requested]


def format_of(path: Path) -> OutputFormat:
    """The format a file name asks for, by its extension (unknown ones get PNG)."""
    return FORMATS[SAME_FORMAT.get(path.suffix.lower(), "png")]


def image_has_alpha(path: Path) -> bool:
    """Whether a file's header says it has transparency (reads the header only)."""
    try:
        with Image.open(path) as img:
            return "A" in img.getbands() or "transparency" in img.info
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def plan_outputs(
    inputs: Sequence[InputFile],
    out_dir: Path,
    requested_format: str = "same",
    suffix: str = "",
    has_alpha: Callable[[Path], bool] = image_has_alpha,
) -> list[Path]:
    """Output path for each input, mirroring the input tree under ``out_dir``.

    An input with transparency whose target format cannot hold it is written as PNG.
    Inputs that would share an output (a.jpg and a.png with --format png) each get their
    source extension in the stem (a_jpg.png, a_png.png), so names stay predictable.
    """
    if requested_format not in FORMAT_CHOICES:
        choices = ", ".join(FORMAT_CHOICES)
        raise UsageError(f"unknown format {requested_format!r}; choose from: {choices}")
    extensions = []
    for item in inputs:
        fmt = format_for(item.path, requested_format)
        if not fmt.holds_alpha and item.path.suffix.lower() not in (".jpg", ".jpeg"):
            if has_alpha(item.path):
                fmt = FORMATS["png"]
        extensions.append(fmt.extension)

    def name(item: InputFile, ext: str, tag: str = "") -> Path:
        rel = item.relative
        return out_dir / rel.parent / f"{rel.stem}{tag}{suffix}{ext}"

    planned = [name(item, ext) for item, ext in zip(inputs, extensions)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(planned):
        # Case-folded so that names which collide on macOS/Windows file systems also split.
        groups[str(path).casefold()].append(i)
    for members in groups.values():
        if len(members) > 1:
            for i in members:
                tag = "_" + inputs[i].path.suffix.lstrip(".")
                planned[i] = name(inputs[i], extensions[i], tag)
    _number_remaining_duplicates(planned)
    _refuse_overwriting_inputs(inputs, planned)
    return planned


def _number_remaining_duplicates(planned: list[Path]) -> None:
    seen: set[str] = set()
    for i, path in enumerate(planned):
        candidate, n = path, 1
        while str(candidate).casefold() in seen:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        seen.add(str(candidate).casefold())
        planned[i] = candidate


def _refuse_overwriting_inputs(inputs: Sequence[InputFile], planned: Sequence[Path]) -> None:
    sources = {os.path.realpath(item.path) for item in inputs}
    for item, out in zip(inputs, planned):
        if os.path.realpath(out) in sources:
            raise UsageError(
                f"output {out} would overwrite the input {item.path}; "
                "choose another output folder or add --suffix"
            )


def temp_prefix(name: str) -> str:
    """Temp-file prefix for output ``name``: recognisable, naming this pid, under NAME_MAX."""
    # The pid lets a later run tell a dead run's leftover from a live one's; the name is
    # cut so that the temp name fits in 255 bytes whenever the output name itself does.
    short = os.fsdecode(os.fsencode(name)[:_TEMP_NAME_BYTES])
    return f"{TEMP_PREFIX}{os.getpid()}-{short}."


def write_image_atomic(
    image: Image.Image,
    path: Path,
    quality: int = 95,
    fsync: bool = True,
    metadata: str | None = None,
    before_rename: Callable[[os.stat_result], None] | None = None,
) -> None:
    """Encode ``image`` to ``path`` via a temp file and rename: never a half-written file.

    ``metadata`` (a provenance record's JSON) is embedded where the format has room for it:
    PNG text chunk, JPEG/WebP XMP, TIFF ImageDescription; BMP has none. ``before_rename``
    is called with the fstat of the complete temp file just before the rename (which keeps
    its size and mtime); if it raises, nothing is renamed.
    """
    fmt = format_of(path)
    if image.mode == "RGBA" and not fmt.holds_alpha:
        image = image.convert("RGB")
    options: dict[str, object] = {}
    if fmt.pil_name in ("JPEG", "WEBP"):
        options["quality"] = quality
    if metadata is not None:
        options.update(embed_options(fmt.pil_name, metadata))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format=fmt.pil_name, **options)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
            handle.flush()
            written = os.fstat(handle.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        if before_rename is not None:
            before_rename(written)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
