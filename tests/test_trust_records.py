"""Issue 23 item 5, the records part: provenance.py split by job, and the layers it broke.

Seams, not user-visible bugs (a refactor keeps every output byte-identical): these tests
check that media.data no longer reaches up into pipeline and records, that records read an
output's record back through the kinds registry instead of importing a feature module, and
that a record's bytes (embedded and in the manifest) are what they were before the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import grimp
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from animegan_cli.media import kinds

PACKAGE = "animegan_cli"
# What each layer below records may import from the package (pyproject's layers contract).
BELOW_RECORDS = ("core", "settings", "model", "media")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_item5_media_data_imports_nothing_above_media(graph) -> None:
    # Before: format_bytes from pipeline.resources (a cycle: resources imports data) and
    # hash_bytes / open_regular from records.provenance; both now live in core.
    imported = graph.find_modules_directly_imported_by(f"{PACKAGE}.media.data")
    above = sorted(m for m in imported if _layer(m) not in BELOW_RECORDS)
    assert above == []


def test_item5_records_read_outputs_through_the_kinds_and_format_registries(graph) -> None:
    # Before: records.provenance imported media.video (is_video, read_record) to read a
    # clip's record; a new kind's record would have meant another import there.
    records = graph.find_children(f"{PACKAGE}.records")
    media = {m for r in records for m in graph.find_modules_directly_imported_by(r)
             if _layer(m) == "media"}
    assert f"{PACKAGE}.media.video" not in media
    assert f"{PACKAGE}.media.animation" not in media
    assert f"{PACKAGE}.records.provenance" not in records  # split by job


def test_item5_an_outputs_record_is_read_back_by_the_kind_that_wrote_it(tmp_path) -> None:
    av = pytest.importorskip("av")
    text = json.dumps({"style": "paprika"})
    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as out:
        out.metadata["animegan"] = text
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_image(Image.new("RGB", (32, 32)))
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    image = tmp_path / "still.png"
    info = PngInfo()
    info.add_text("animegan", text)
    Image.new("RGB", (4, 4)).save(image, pnginfo=info)

    assert kinds.output_kind(clip).name == kinds.VIDEO
    assert kinds.output_kind(image).name == kinds.IMAGE
    assert kinds.output_kind(Path("anim.gif")).name == kinds.IMAGE  # an animation's output
    assert kinds.read_output_record(clip) == text  # the container tag
    assert kinds.read_output_record(image) == text  # the format table's text chunk
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert kinds.read_output_record(tmp_path / "broken.png") is None


# The bytes the code before the split wrote (records/provenance.py at 5365e2e).
RECORD_JSON = (
    '{"tool":"animegan 0.1.0","input_blake2b":"' + "ab" * 32 + '","input_size":1234,'
    '"input_mtime_ns":1700000000123456789,"style":"paprika","checkpoint":"' + "cd" * 20
    + '","settings":{"size":512,"precision":"fp32","backend":"torch","align_corners":false,'
    '"keep_size":false,"quality":95,"note":"\\u00e9"}}'
)
MANIFEST_LINE = (
    b'{"output":"sub/a.png","size":10,"mtime_ns":20,"provenance":'
    + RECORD_JSON[:-1].encode()
    + b',"similar_to":"' + b"ef" * 32 + b'","distance":3}}\n'
)


def test_item5_records_keep_their_bytes() -> None:
    from animegan_cli.records.manifest import Manifest, ManifestEntry
    from animegan_cli.records.record import Provenance, with_reuse

    record = Provenance("ab" * 32, 1234, 1_700_000_000_123_456_789, "paprika", "cd" * 20,
                        {"size": 512, "precision": "fp32", "backend": "torch",
                         "align_corners": False, "keep_size": False, "quality": 95,
                         "note": "\u00e9"}, tool="animegan 0.1.0")
    assert record.to_json() == RECORD_JSON
    reused = with_reuse(record, "ef" * 32, 3)
    assert Manifest._line("sub/a.png", ManifestEntry(10, 20, reused)) == MANIFEST_LINE
    assert Provenance.from_json(RECORD_JSON) == record
