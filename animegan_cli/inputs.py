"""Finding the input images: walking files and folders, or reading a list of paths."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from animegan_cli.errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})


def supported_extensions() -> frozenset[str]:
    """Extensions accepted as input; HEIC/HEIF only when pillow-heif is installed."""
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return IMAGE_EXTENSIONS
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS


@dataclass(frozen=True)
class InputFile:
    """An image to convert: where it is, and its path relative to the root it was found under."""

    path: Path
    relative: Path


def read_path_list(stream: TextIO, null_separated: bool = False) -> list[str]:
    """Read newline- (or NUL-) separated paths from a stream, skipping empty entries."""
    data = stream.read()
    if null_separated:
        return [p for p in data.split("\0") if p]
    # Only "\n" (and a CRLF's "\r") ends a line: splitlines() would also split on
    # form feeds and Unicode separators, which are legal in file names.
    return [p.removesuffix("\r") for p in data.split("\n") if p.removesuffix("\r")]


def discover_inputs(
    sources: Iterable[str | Path],
    recursive: bool = True,
    exclude: Path | None = None,
    extensions: frozenset[str] | None = None,
) -> list[InputFile]:
    """Expand files and folders into a sorted, de-duplicated list of images.

    A file named explicitly is taken whatever its extension (the decoder will say if it is
    not an image); files found by walking a folder must have an image extension. Nothing
    under ``exclude`` (the output folder) is taken from a walk.
    """
    exts = supported_extensions() if extensions is None else extensions
    excluded = exclude.resolve() if exclude is not None else None
    found: list[InputFile] = []
    seen: set[Path] = set()
    for source in sources:
        root = Path(source)
        if not root.exists() and not root.is_symlink():
            raise UsageError(f"input not found: {root}")
        if root.is_dir():
            if excluded is not None and root.resolve() == excluded:
                raise UsageError(
                    f"the output folder {exclude} is also an input folder; choose another -o"
                )
            candidates: Iterable[InputFile] = (
                InputFile(p, p.relative_to(root)) for p in _walk(root, recursive, excluded, exts)
            )
        else:
            candidates = [InputFile(root, Path(root.name))]
        for item in candidates:
            key = Path(os.path.abspath(item.path))
            if key not in seen:
                seen.add(key)
                found.append(item)
    return found


def _walk(
    root: Path, recursive: bool, excluded: Path | None, exts: frozenset[str]
) -> Iterator[Path]:
    """Yield image files under root in a stable (sorted) order."""
    if excluded is not None and _is_within(root.resolve(), excluded):
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False  # a symlink loop, say: listed, so that the decoder reports it
        if is_dir:
            # Symlinked folders are not followed: that is how loops and escapes happen.
            if recursive and not entry.is_symlink():
                yield from _walk(path, recursive, excluded, exts)
        elif path.suffix.lower() in exts:
            yield path


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
