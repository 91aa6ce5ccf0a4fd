"""The output formats, one table entry each: how a file is saved and where its record goes.

A new format (AVIF, say) is one entry in ``FORMATS``: its Pillow name, extensions, whether
it holds alpha and is lossy, its save options, and how a provenance record is embedded in
its files and read back. Everything else (``--format``, naming, ``--format same``, the
recorded quality, ``inspect``, up-to-date checks) reads the table. This module imports
only settings and core from the package, so that ``outputs``, ``kinds`` and ``records`` can
use it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from PIL import Image

from animegan_cli.core.failures import PER_ITEM_ERRORS
from animegan_cli.settings import fields

# How records are stored: files written by every earlier version must still be read, so
# these names and layouts never change.
METADATA_KEY = "animegan"  # PNG tEXt chunk
XMP_NAMESPACE = "urn:animegan:provenance:1"
_XMP_TEMPLATE = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description rdf:about="" xmlns:animegan="{XMP_NAMESPACE}">'
    "<animegan:provenance>{text}</animegan:provenance>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
)
_TIFF_IMAGE_DESCRIPTION = 270
# --png-level: a zlib level 0-9, or "rle", zlib's run-length strategy (what OpenCV writes).
# Its default is declared, with the measurement behind it, in settings/fields.py.
PngLevel = int | str  # 0-9 or PNG_RLE
PNG_RLE = "rle"
DEFAULT_PNG_LEVEL: PngLevel = fields.PNG_LEVEL.default  # PNG_RLE, by measurement


def png_level_problem(level: PngLevel) -> str | None:
    """Why ``level`` is no --png-level, or None when it is one."""
    if level == PNG_RLE or (isinstance(level, int) and not isinstance(level, bool)
                            and 0 <= level <= 9):
        return None
    return f"--png-level must be between 0 and 9, or {PNG_RLE}, not {level!r}"

Embed = Callable[[str], dict[str, object]]  # record JSON -> Pillow save options
Read = Callable[[Image.Image], str | bytes | None]  # an opened file -> its record JSON


def _embed_png_text(text: str) -> dict[str, object]:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(METADATA_KEY, text)
    return {"pnginfo": info}


def _read_png_text(img: Image.Image) -> str | bytes | None:
    return img.info.get(METADATA_KEY)


def _embed_xmp(text: str) -> dict[str, object]:
    return {"xmp": _XMP_TEMPLATE.format(text=escape(text)).encode("utf-8")}


def _read_xmp(img: Image.Image) -> str | None:
    packet = img.info.get("xmp")
    if not packet:
        return None
    try:
        root = ET.fromstring(packet)
    except ET.ParseError:
        return None
    node = root.find(f".//{{{XMP_NAMESPACE}}}provenance")
    return node.text if node is not None else None


def _embed_gif_comment(text: str) -> dict[str, object]:
    return {"comment": text.encode("utf-8")}


def _read_gif_comment(img: Image.Image) -> bytes | None:
    comment = img.info.get("comment")
    # Any GIF may have a comment; only a JSON object is meant to be ours.
    return comment if isinstance(comment, bytes) and comment.lstrip().startswith(b"{") else None


def _embed_tiff_description(text: str) -> dict[str, object]:
    return {"tiffinfo": {_TIFF_IMAGE_DESCRIPTION: text}}


def _read_tiff_description(img: Image.Image) -> str | None:
    text = img.tag_v2.get(_TIFF_IMAGE_DESCRIPTION)  # type: ignore[attr-defined]
    # Any TIFF may have a description; only a JSON object is meant to be ours.
    return text if isinstance(text, str) and text.lstrip().startswith("{") else None


@dataclass(frozen=True)
class OutputFormat:
    """A format we can write, and how its files carry a provenance record."""

    pil_name: str  # Pillow's name, as Image.save(format=...) takes and Image.format gives
    extensions: tuple[str, ...]  # lower case; the first is the one outputs are named with
    holds_alpha: bool
    lossy: bool = False  # takes --quality, which its outputs then record
    offered: bool = False  # a choice of --format (the others come only from --format same)
    save_options: Mapping[str, object] = field(default_factory=dict, compare=False)
    embed: Embed | None = None  # None: no room for a record (the manifest is its only one)
    read: Read | None = None
    # The Pillow save option that takes a zlib level (--png-level); lossless, so the pixels
    # and the record do not depend on it and it never makes an output stale.
    level_option: str | None = None
    # The longest side the format can store (0: no limit of its own); the name it is told by.
    max_side: int = 0
    label: str = ""

    @property
    def extension(self) -> str:
        """The extension outputs of this format are named with."""
        return self.extensions[0]

    @property
    def embeds_record(self) -> bool:
        """Whether files of this format carry their own record."""
        return self.embed is not None

    def save_kwargs(
        self, quality: int, metadata: str | None = None, level: PngLevel | None = None
    ) -> dict[str, object]:
        """Pillow save options for one output: quality where lossy, the record where it fits.

        ``level`` is the compression level where the format takes one (None: Pillow's), or
        PNG_RLE: zlib's run-length strategy at its default level.
        """
        options = dict(self.save_options)
        if self.lossy:
            options["quality"] = quality
        if level == PNG_RLE and self.level_option is not None:
            options["compress_type"] = zlib.Z_RLE  # Pillow passes it to deflateInit2
        elif level is not None and self.level_option is not None:
            options[self.level_option] = level
        if metadata is not None and self.embed is not None:
            options.update(self.embed(metadata))
        return options


FORMATS: dict[str, OutputFormat] = {
    "jpg": OutputFormat("JPEG", (".jpg", ".jpeg"), holds_alpha=False, lossy=True, offered=True,
                        embed=_embed_xmp, read=_read_xmp),
    "png": OutputFormat("PNG", (".png",), holds_alpha=True, offered=True,
                        embed=_embed_png_text, read=_read_png_text,
                        level_option="compress_level"),
    "webp": OutputFormat("WEBP", (".webp",), holds_alpha=True, lossy=True, offered=True,
                         embed=_embed_xmp, read=_read_xmp, max_side=16383, label="WebP"),
    # Written only for animated GIFs (media/animation.py): a still GIF comes out as PNG
    # (outputs.SAME_FORMAT), so GIF is no --format choice. Its record: a comment extension.
    "gif": OutputFormat("GIF", (".gif",), holds_alpha=True, embed=_embed_gif_comment,
                        read=_read_gif_comment),
    "bmp": OutputFormat("BMP", (".bmp",), holds_alpha=False),
    "tiff": OutputFormat("TIFF", (".tif", ".tiff"), holds_alpha=True,
                         embed=_embed_tiff_description, read=_read_tiff_description),
}

_BY_PIL_NAME = {fmt.pil_name: fmt for fmt in FORMATS.values()}
# Extension -> format key, from the table: every extension a format's files may have.
BY_EXTENSION = {ext: key for key, fmt in FORMATS.items() for ext in fmt.extensions}


def size_problem(fmt: OutputFormat, width: int, height: int) -> str | None:
    """Why ``fmt`` cannot hold an output of ``width`` x ``height``, or None when it can."""
    if not fmt.max_side or max(width, height) <= fmt.max_side:
        return None
    return (f"output would be {width}x{height}, over {fmt.label or fmt.pil_name}'s limit of "
            f"{fmt.max_side} px per side")


def format_named(pil_name: str | None) -> OutputFormat | None:
    """The format Pillow calls ``pil_name`` (an opened file's ``Image.format``), if we write it."""
    return _BY_PIL_NAME.get(pil_name or "")


def format_by_extension(suffix: str) -> OutputFormat | None:
    """The format whose files have this extension (any case), if we write it."""
    key = BY_EXTENSION.get(suffix.lower())
    return FORMATS[key] if key is not None else None


def read_record_text(img: Image.Image) -> str | bytes | None:
    """The record text embedded in an opened image, by its format (None where there is none)."""
    fmt = format_named(img.format)
    return fmt.read(img) if fmt is not None and fmt.read is not None else None


def read_file_record(path: Path) -> str | bytes | None:
    """The record text embedded in an image file, read from its header; None without one."""
    try:
        with Image.open(path) as img:
            return read_record_text(img)
    except PER_ITEM_ERRORS:  # a damaged file in OUT is an output without a record
        return None
