"""The output format table: consistent entries, and records in the layouts files already have."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from animegan_cli.media.formats import FORMATS, format_by_extension, format_named, read_record_text
from animegan_cli.media.outputs import FORMAT_CHOICES, format_of

RECORD = '{"style":"a <b> & \\u00fc"}'
# The XMP packet exactly as earlier versions wrote it (with the record XML-escaped).
OLD_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:animegan="urn:animegan:provenance:1">'
    '<animegan:provenance>{"style":"a &lt;b&gt; &amp; \\u00fc"}</animegan:provenance>'
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
).encode()


def test_the_table_is_consistent():
    extensions = [ext for fmt in FORMATS.values() for ext in fmt.extensions]
    assert len(extensions) == len(set(extensions))
    assert all(ext.startswith(".") and ext == ext.lower() for ext in extensions)
    for fmt in FORMATS.values():
        assert (fmt.embed is None) == (fmt.read is None), fmt.pil_name
        assert format_named(fmt.pil_name) is fmt
        assert all(format_by_extension(ext.upper()) is fmt for ext in fmt.extensions)
    assert FORMAT_CHOICES == ("same", "jpg", "jpeg", "png", "webp")  # jpeg: the same as jpg
    assert format_by_extension(".heic") is None
    # GIF is written for animations only (issue 23 item 4): no --format choice, and a still
    # GIF comes out as PNG.
    assert not format_named("GIF").offered and format_of(Path("a.gif")).pil_name == "PNG"


def old_file(tmp_path: Path, pil_name: str) -> Path:
    """A file carrying RECORD where earlier versions put it, written without formats.py."""
    path = tmp_path / f"old.{pil_name.lower()}"
    image = Image.new("RGB", (8, 6), (10, 200, 30))
    if pil_name == "PNG":
        info = PngInfo()
        info.add_text("animegan", RECORD)
        image.save(path, format="PNG", pnginfo=info)
    elif pil_name == "TIFF":
        image.save(path, format="TIFF", tiffinfo={270: RECORD})
    elif pil_name == "BMP":
        image.save(path, format="BMP")
    else:
        image.save(path, format=pil_name, xmp=OLD_XMP)
    return path


@pytest.mark.parametrize("pil_name", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_records_in_the_layout_earlier_versions_wrote_are_read(tmp_path, pil_name):
    with Image.open(old_file(tmp_path, pil_name)) as img:
        assert read_record_text(img) == RECORD


@pytest.mark.parametrize("key", ["jpg", "webp"])
def test_the_xmp_packet_written_is_the_one_earlier_versions_wrote(key):
    assert FORMATS[key].save_kwargs(90, RECORD) == {"quality": 90, "xmp": OLD_XMP}


def test_bmp_has_no_room_for_a_record(tmp_path):
    assert FORMATS["bmp"].save_kwargs(90, RECORD) == {}
    with Image.open(old_file(tmp_path, "BMP")) as img:
        assert read_record_text(img) is None


def test_the_png_level_is_a_save_option_of_png_only():
    assert FORMATS["png"].save_kwargs(90, None, level=1) == {"compress_level": 1}
    assert FORMATS["png"].save_kwargs(90, None, level="rle") == {"compress_type": zlib.Z_RLE}
    assert FORMATS["png"].save_kwargs(90, None) == {}  # None: Pillow's own default
    assert FORMATS["jpg"].save_kwargs(90, None, level=1) == {"quality": 90}
