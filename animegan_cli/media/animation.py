"""Animated GIF, APNG and animated WebP in and out with Pillow: recognise, read, write.

An animation is told from its header alone (``animated_format``): a PNG with an ``acTL``
chunk before its image data, a WebP with two ``ANMF`` frames or more, a GIF with a second
image. Frames are read composed (Pillow applies each frame's disposal and blending), so
every frame is the whole canvas, of one size: they batch together through the model. The
output is written in the input's format with each frame's duration and the loop count;
transparency is kept as alpha (APNG, WebP) or as GIF's transparent colour, each frame
disposed to the background so that a transparent area never shows the frame before. The
provenance record goes where the format table puts it (PNG text chunk, WebP XMP, GIF comment
extension).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from animegan_cli.core.errors import InputImageError
from animegan_cli.core.failures import PER_ITEM_ERRORS
from animegan_cli.media.formats import FORMATS, OutputFormat, PngLevel

# Pillow's name of each animated format -> its output format in the table.
ANIMATED_FORMATS = {"GIF": FORMATS["gif"], "PNG": FORMATS["png"], "WEBP": FORMATS["webp"]}
# Suffixes whose files are read for an animation header (a still one stays an image).
ANIMATION_EXTENSIONS = frozenset({".gif", ".png", ".apng", ".webp"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_DISPOSE_TO_BACKGROUND = 2
_HEADER_BYTES = 12


class AnimationError(InputImageError):
    """An animation that cannot be converted; the message is the one-line reason."""


@dataclass(frozen=True)
class Header:
    """What an animation's header says (no frame decoded): its format, canvas and frames."""

    format: str  # Pillow's name: GIF, PNG, WEBP
    width: int
    height: int
    frames: int
    loop: int | None  # times played (0: for ever); None: GIF without a loop extension (once)
    seconds: float  # total of the frames' durations

    @property
    def output_format(self) -> OutputFormat:
        return ANIMATED_FORMATS[self.format]


@dataclass(frozen=True)
class Frame:
    """One composed frame (RGB, or RGBA when the animation has transparency) and its duration."""

    image: Image.Image
    duration: float  # milliseconds


def animated_format(path: Path) -> str | None:
    """Pillow's name of the file's format when its header says it is an animation, else None.

    Reads a few bytes (PNG: chunk headers up to the image data; WebP: chunk headers up to
    the second frame; GIF: up to its second image). A file that cannot be read is no
    animation here: the image path reports what is wrong with it.
    """
    try:
        with open(path, "rb") as handle:
            start = handle.read(_HEADER_BYTES)
            if start.startswith(_PNG_SIGNATURE):
                return "PNG" if _png_is_animated(handle) else None
            if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
                return "WEBP" if _webp_frames(handle) >= 2 else None
            if start[:6] in (b"GIF87a", b"GIF89a"):
                return "GIF" if _gif_is_animated(path) else None
    except PER_ITEM_ERRORS:  # whatever a damaged header makes a parser raise
        return None
    return None


def _png_is_animated(handle: BinaryIO) -> bool:
    """An acTL chunk with two frames or more before the first IDAT (APNG's rule)."""
    handle.seek(len(_PNG_SIGNATURE))
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return False
        length, kind = struct.unpack(">I4s", head)
        if kind == b"acTL":
            frames = struct.unpack(">I", handle.read(4))[0]
            return frames >= 2
        if kind in (b"IDAT", b"IEND"):
            return False
        handle.seek(length + 4, 1)  # the data and its CRC


def _webp_frames(handle: BinaryIO) -> int:
    """ANMF chunks counted up to two (a RIFF container's top-level chunks)."""
    handle.seek(_HEADER_BYTES)
    frames = 0
    while frames < 2:
        head = handle.read(8)
        if len(head) < 8:
            break
        kind, length = struct.unpack("<4sI", head)
        frames += kind == b"ANMF"
        handle.seek(length + (length & 1), 1)  # chunks are padded to an even size
    return frames


def _gif_is_animated(path: Path) -> bool:
    with Image.open(path, formats=["GIF"]) as img:
        return bool(getattr(img, "is_animated", False))


def read_header(path: Path) -> Header:
    """The animation's format, canvas, frame count, loop count and length; AnimationError
    for a file that is not one (or whose header is damaged)."""
    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1))
            if img.format not in ANIMATED_FORMATS or frames < 2:
                raise AnimationError("not an animation (any more): run it again")
            with open(path, "rb") as handle:  # Pillow tells durations only by decoding
                durations = _DURATIONS[img.format](handle)
            return Header(img.format, img.width, img.height, frames, _loop(img),
                          sum(durations) / 1000)
    except AnimationError:
        raise
    except PER_ITEM_ERRORS as exc:  # a damaged header: Pillow's or our parsers' errors
        raise AnimationError(f"cannot read the animation: {_reason(exc)}") from exc


def _gif_durations(handle: BinaryIO) -> list[float]:
    """Each image's delay (ms) from the Graphic Control Extension before it; no pixel read."""
    handle.seek(10)
    packed = handle.read(3)[0]
    if packed & 0x80:  # the global colour table
        handle.seek(3 << ((packed & 7) + 1), 1)
    durations, delay = [], 0.0
    while introducer := handle.read(1):
        if introducer == b"\x21":  # an extension: its label, then sub-blocks
            if handle.read(1) == b"\xf9":
                control = handle.read(handle.read(1)[0])
                delay = float(int.from_bytes(control[1:3], "little") * 10)
            _skip_sub_blocks(handle)
        elif introducer == b"\x2c":  # an image: descriptor, local colour table, LZW data
            packed = handle.read(9)[8]
            if packed & 0x80:
                handle.seek(3 << ((packed & 7) + 1), 1)
            handle.read(1)  # LZW minimum code size
            _skip_sub_blocks(handle)
            durations.append(delay)
        else:  # the trailer (or what a cut file ends with)
            break
    return durations


def _skip_sub_blocks(handle: BinaryIO) -> None:
    while (size := handle.read(1)) and size[0]:
        handle.seek(size[0], 1)


def _png_durations(handle: BinaryIO) -> list[float]:
    """Each fcTL chunk's delay (ms): delay_num / delay_den seconds (den 0 means 100)."""
    handle.seek(len(_PNG_SIGNATURE))
    durations = []
    while len(head := handle.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            break
        payload = handle.read(26) if kind == b"fcTL" else b""
        if len(payload) == 26:
            num, den = struct.unpack(">HH", payload[20:24])
            durations.append(num / (den or 100) * 1000)
        handle.seek(length + 4 - len(payload), 1)  # the rest of the data and its CRC
    return durations


def _webp_durations(handle: BinaryIO) -> list[float]:
    """Each ANMF chunk's duration (ms): 24 bits after the frame's offset and size."""
    handle.seek(_HEADER_BYTES)
    durations = []
    while len(head := handle.read(8)) == 8:
        kind, length = struct.unpack("<4sI", head)
        payload = handle.read(16) if kind == b"ANMF" else b""
        if len(payload) == 16:
            durations.append(float(int.from_bytes(payload[12:15], "little")))
        handle.seek(length + (length & 1) - len(payload), 1)
    return durations


_DURATIONS = {"GIF": _gif_durations, "PNG": _png_durations, "WEBP": _webp_durations}


def _loop(img: Image.Image) -> int | None:
    loop = img.info.get("loop")
    return int(loop) if loop is not None else None


def read_frames(path: Path, header: Header) -> Iterator[Frame]:
    """The composed frames, in order, each decoded when asked for: a run holds one chunk."""
    index = 0
    try:
        with Image.open(path) as img:
            has_alpha = False
            for index in range(header.frames):
                img.seek(index)
                # Once a frame has transparency, later ones keep an alpha channel too.
                has_alpha = has_alpha or _has_alpha(img)
                image = img.convert("RGBA" if has_alpha else "RGB")
                image.info.pop("exif", None)  # frames are upright as the canvas is
                yield Frame(image, float(img.info.get("duration") or 0))
    except PER_ITEM_ERRORS as exc:  # a damaged frame: whatever the decoder raises
        raise AnimationError(f"cannot decode frame {index}: {_reason(exc)}") from exc


def _has_alpha(img: Image.Image) -> bool:
    return "A" in img.getbands() or "transparency" in img.info


def write(
    frames: list[Frame],
    header: Header,
    handle: BinaryIO,
    quality: int,
    record: str | None,
    png_level: PngLevel | None = None,
) -> None:
    """Encode styled frames as an animation in the input's format, durations and loop kept."""
    fmt = header.output_format
    options = fmt.save_kwargs(quality, record, png_level if fmt.level_option else None)
    options.update(save_all=True, append_images=[f.image for f in frames[1:]],
                   duration=[round(f.duration) for f in frames])
    if header.loop is not None:
        options["loop"] = header.loop
    if header.format == "GIF":
        options["disposal"] = _GIF_DISPOSE_TO_BACKGROUND
    frames[0].image.save(handle, format=fmt.pil_name, **options)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
