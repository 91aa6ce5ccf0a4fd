"""The record an output carries in its own metadata: read back through the kinds' registry
(a clip's container tag, an image format's chunk or tag), validated as a ``Provenance``."""

from __future__ import annotations

from pathlib import Path

from animegan_cli.media import kinds
from animegan_cli.media.formats import format_named
from animegan_cli.records.record import Provenance


def read_embedded(path: Path) -> Provenance | None:
    """The record stored in an output file's metadata, or None (reads the header only).

    None also for a record that does not validate: such an output is treated as one
    without provenance (``read_embedded_checked`` says why).
    """
    try:
        return read_embedded_checked(path)
    except ValueError:
        return None


def read_embedded_checked(path: Path) -> Provenance | None:
    """Like read_embedded, but ValueError (saying why) for a record that is invalid."""
    text = kinds.read_output_record(path)
    if not text:
        return None
    return Provenance.from_json(text)


def embeds_record(pil_format: str) -> bool:
    """Whether files of this Pillow format carry their own record (BMP does not)."""
    fmt = format_named(pil_format)
    return fmt is not None and fmt.embeds_record
