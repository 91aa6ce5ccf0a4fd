"""The kinds of input a run converts (image, video clip, animation): one registry entry each.

A kind owns what sets it apart: the suffixes a folder walk takes for it, how a file is
recognised (``recognises``: by suffix, by header, for a file named on the command line by
whether PyAV or Pillow opens it), its unit of planning and styling (``unit``), its output
extension rule, where its provenance record is embedded and how it is read back, and the
fields it adds to a ``FileResult`` (and to ``--json``). ``kind_of`` asks the kinds in order;
the first that recognises a file has it, and ``image`` takes the rest. ``output_kind`` tells
the kind that wrote an output by its suffix, for reading its record back (``records``).

Units: an ``image`` is decoded and batched in convert's loop (the Ray actors included); a
``file`` kind is styled whole, one output per input, by its runner (``runner``: a module
with ``convert_all(options, targets, stylizer, load, manifest, held, summary, events,
started) -> Stylizer | None``) after the images, through the same Stylizer.

This module imports no decoder: the probes import theirs (PyAV, Pillow) when they run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from animegan_cli.media import animation, formats, video

IMAGE = "image"
VIDEO = "video"
ANIMATION = "animation"
UNIT_IMAGE = "image"  # decoded and batched in the run's loop with every other image
UNIT_FILE = "file"  # styled whole by the kind's runner: one output per input

# (path, its lower-case suffix, named on the command line, the image suffixes) -> is it one
Recognise = Callable[[Path, str, bool, frozenset[str]], bool]
# (input path, --format, --video-format) -> the output's extension; None: the image rule
OutputExtension = Callable[[Path, str, str], str]
# (an output path) -> the record text embedded in it; None without one (or unreadable)
ReadRecord = Callable[[Path], str | bytes | None]


@dataclass(frozen=True)
class InputKind:
    """One kind of input and everything about it that differs from the others."""

    name: str
    walked: frozenset[str]  # suffixes a folder walk takes (and offers to ``recognises``)
    recognises: Recognise
    unit: str  # UNIT_IMAGE or UNIT_FILE
    output_extension: OutputExtension | None  # None: the image rule (--format, alpha)
    record: str  # where an output's record is embedded (docs; the code is in ``media``)
    result_fields: tuple[str, ...] = ()  # FileResult fields it fills (in --json, --report)
    runner: str | None = None  # module converting its targets (UNIT_FILE)
    dry_run: str | None = None  # "module:function" adding its header's facts to a dry run
    # Output suffixes only this kind writes (a clip's containers), and how the record of
    # such an output is read back; every other output is an image file of the format table.
    output_suffixes: frozenset[str] = frozenset()
    read_record: ReadRecord = formats.read_file_record

    def load_runner(self) -> ModuleType:
        """The runner's module, imported now (it may import PyAV, torch)."""
        assert self.runner is not None
        return importlib.import_module(self.runner)


def _is_clip(path: Path, suffix: str, named: bool, images: frozenset[str]) -> bool:
    """A clip by its suffix, or (named, with no image suffix) when PyAV opens it."""
    if suffix in video.VIDEO_EXTENSIONS:
        return True
    return named and suffix not in images and video.can_open(path)


def _is_animation(path: Path, suffix: str, named: bool, images: frozenset[str]) -> bool:
    """An animated GIF/PNG/WebP by its header: read for its suffixes, or any named file
    without a clip's suffix (a GIF is never a clip, though PyAV opens one)."""
    if suffix in video.VIDEO_EXTENSIONS:
        return False
    if suffix not in animation.ANIMATION_EXTENSIONS and not (named and suffix not in images):
        return False
    return animation.animated_format(path) is not None


def _animation_extension(path: Path, requested: str, video_format: str) -> str:
    """The input's own format (never --format): its suffix, or its format's extension."""
    suffix = path.suffix.lower()
    if suffix in animation.ANIMATION_EXTENSIONS:
        return path.suffix
    found = animation.animated_format(path)
    return animation.ANIMATED_FORMATS[found].extension if found else ".png"


def _clip_extension(path: Path, requested: str, video_format: str) -> str:
    return video.output_extension(path, video_format)  # --video-format, never --format


def _never(path: Path, suffix: str, named: bool, images: frozenset[str]) -> bool:
    return False  # the kind of whatever no other kind recognises


# In the order they are asked: an animation's header is read before PyAV is tried.
# A file kind's runner and dry-run hook are modules in runners/, a layer above media, named
# as strings (imported when a run needs them) so that a kind stays one entry: a known
# exception to the layers that import-linter does not see (docs/architecture.md, "Layers").
KINDS: dict[str, InputKind] = {
    ANIMATION: InputKind(
        ANIMATION, animation.ANIMATION_EXTENSIONS, _is_animation, UNIT_FILE,
        _animation_extension, "as its format's image (PNG text chunk, WebP XMP, GIF comment)",
        ("frames", "duration"), "animegan_cli.runners.animation_run",
        "animegan_cli.runners.animation_run:with_probe"),
    VIDEO: InputKind(
        VIDEO, video.VIDEO_EXTENSIONS, _is_clip, UNIT_FILE, _clip_extension,
        "a container tag", ("frames", "duration"), "animegan_cli.runners.video_run",
        "animegan_cli.runners.video_run:with_probe", video.VIDEO_EXTENSIONS, video.read_record),
    IMAGE: InputKind(IMAGE, frozenset(), _never, UNIT_IMAGE, None,
                     "the output format's (media/formats.py)"),
}


def kind_of(path: Path, named: bool, images: frozenset[str]) -> str:
    """The name of the kind ``path`` is: the first kind that recognises it, else an image."""
    suffix = path.suffix.lower()
    for kind in KINDS.values():
        if kind.recognises(path, suffix, named, images):
            return kind.name
    return IMAGE


def output_kind(output: Path) -> InputKind:
    """The kind that wrote ``output``, by its suffix: the kind whose own output suffixes have
    it (a clip's container), else the image kind (an animation's output is an image file)."""
    suffix = output.suffix.lower()
    return next((k for k in KINDS.values() if suffix in k.output_suffixes), KINDS[IMAGE])


def read_output_record(output: Path) -> str | bytes | None:
    """The record text embedded in an output, read back where the kind that wrote it puts it."""
    return output_kind(output).read_record(output)


def walked_suffixes() -> frozenset[str]:
    """Suffixes a folder walk takes beside the image suffixes (each kind's own)."""
    return frozenset().union(*(kind.walked for kind in KINDS.values()))


def is_file_unit(kind: str) -> bool:
    """Whether inputs of this kind are styled whole by their kind's runner."""
    return KINDS[kind].unit == UNIT_FILE


def dry_run_probe(kind: str) -> Callable[..., Any] | None:
    """The kind's dry-run hook (a FileResult in, the same with its header's facts), or None."""
    hook = KINDS[kind].dry_run
    if hook is None:
        return None
    module, _, name = hook.partition(":")
    return getattr(importlib.import_module(module), name)
