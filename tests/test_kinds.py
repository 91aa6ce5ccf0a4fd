"""Issue 23 item 4: the registry of input kinds (media/kinds.py) that replaced the boolean
``InputFile.video``. A seam test: each kind declares its suffixes, probe, unit, output rule,
record and result fields; files are told apart by suffix and header as documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from animegan_cli.media import kinds
from animegan_cli.media.inputs import IMAGE_EXTENSIONS, InputFile, find_inputs
from animegan_cli.media.outputs import plan_outputs
from animegan_cli.pipeline.results import FileResult
from tests.conftest import make_image


def animated(path: Path, fmt: str, frames: int = 3) -> Path:
    images = [Image.new("RGB", (40, 28), (60 * i, 90, 160)) for i in range(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format=fmt, save_all=True, append_images=images[1:], duration=40)
    return path


def test_item4_every_kind_declares_what_sets_it_apart():
    assert list(kinds.KINDS) == ["animation", "video", "image"]  # the order they are asked
    result_fields = {f.name for f in dataclasses.fields(FileResult)}
    for name, kind in kinds.KINDS.items():
        assert kind.name == name and kind.unit in (kinds.UNIT_IMAGE, kinds.UNIT_FILE)
        assert set(kind.result_fields) <= result_fields and kind.record
        if kind.unit == kinds.UNIT_FILE:  # styled whole: a runner, an output rule, a dry run
            assert callable(kind.load_runner().convert_all)
            assert kind.output_extension is not None and kinds.dry_run_probe(name) is not None
    assert "video" not in {f.name for f in dataclasses.fields(InputFile)}  # the old boolean


@pytest.mark.parametrize(("name", "make", "kind"), [
    ("still.png", lambda p: make_image(p), "image"),
    ("anim.png", lambda p: animated(p, "PNG"), "animation"),
    ("still.webp", lambda p: make_image(p), "image"),
    ("anim.webp", lambda p: animated(p, "WEBP"), "animation"),
    ("still.gif", lambda p: make_image(p), "image"),
    ("anim.gif", lambda p: animated(p, "GIF"), "animation"),
    ("one.gif", lambda p: animated(p, "GIF", frames=1), "image"),
    ("clip.mp4", lambda p: p.write_bytes(b"x"), "video"),  # a clip by its suffix
    ("cut.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\0"), "image"),  # decoding says
])
def test_item4_a_walk_tells_kinds_by_suffix_and_header(tmp_path, name, make, kind):
    (tmp_path / "in").mkdir()
    make(tmp_path / "in" / name)
    [found] = find_inputs([tmp_path / "in"]).files
    assert found.kind == kind


def test_item4_a_named_animation_without_a_suffix_keeps_its_format(tmp_path):
    source = animated(tmp_path / "download", "GIF")
    still = make_image(tmp_path / "photo", format="PNG")  # no suffix: an image as before
    found = find_inputs([source, still]).files
    assert [f.kind for f in found] == ["animation", "image"]
    assert [p.name for p in plan_outputs(found, tmp_path / "out")] == ["download.gif",
                                                                       "photo.png"]


def test_item4_animations_keep_their_format_whatever_format_is_asked(tmp_path):
    found = find_inputs([animated(tmp_path / "in" / "a.webp", "WEBP"),
                         make_image(tmp_path / "in" / "b.webp")]).files
    assert [p.name for p in plan_outputs(found, tmp_path / "out", "jpg")] == ["a.webp", "b.jpg"]


def test_item4_a_caller_choosing_suffixes_gets_images_only(tmp_path):
    animated(tmp_path / "in" / "a.png", "PNG")
    [found] = find_inputs([tmp_path / "in"], extensions=IMAGE_EXTENSIONS).files
    assert found.kind == "image"

