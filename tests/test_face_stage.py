"""--faces end to end through convert(): paste exactness, crop files, re-runs, fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.faces.blend import output_region, square_crop
from animegan_cli.faces.detect import Box, FaceSettings
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, convert
from animegan_cli.records.embedded import read_embedded

skimage_data = pytest.importorskip("skimage.data")


def options(src: Path, out: Path, checkpoint: Path, faces: FaceSettings, **kw) -> ConvertOptions:
    kw.setdefault("size", 128)
    kw.setdefault("num_workers", 0)
    kw.setdefault("backend", "torch")
    return ConvertOptions(inputs=[str(src)], output=out, weights=checkpoint, faces=faces, **kw)


def astronaut(path: Path, mode: str = "RGB") -> Path:
    image = Image.fromarray(skimage_data.astronaut())
    if mode == "RGBA":
        image.putalpha(180)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def group(path: Path, people: int) -> Path:
    """``people`` astronauts side by side, 40 px apart (faces of about 60 px, one row).

    (Without the gap, Haar also takes one astronaut's chest badge for a face.)
    """
    one = Image.fromarray(skimage_data.astronaut()).resize((300, 300))
    canvas = Image.new("RGB", (340 * people, 300), (128, 128, 128))
    for i in range(people):
        canvas.paste(one, (340 * i, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


class Heard(ConvertEvents):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.results = []
        self.on_message = self.messages.append
        self.on_result = self.results.append


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_paste_equals_the_plain_conversion_outside_every_face(tmp_path, checkpoint):
    src = astronaut(tmp_path / "in" / "astronaut.png")
    convert(options(src, tmp_path / "plain", checkpoint, FaceSettings()))
    heard = Heard()
    convert(options(src, tmp_path / "paste", checkpoint, FaceSettings("paste")), heard)
    [result] = heard.results
    [box] = [Box(*b) for b in result.faces["boxes"]]
    plain, pasted = rgb(tmp_path / "plain" / "astronaut.png"), rgb(tmp_path / "paste" /
                                                                    "astronaut.png")
    region = output_region(square_crop(box, 1.3, 512, 512), (512, 512), (128, 128))
    inside = np.zeros(plain.shape[:2], bool)
    inside[region.y:region.y + region.h, region.x:region.x + region.w] = True
    assert np.array_equal(plain[~inside], pasted[~inside])  # bit for bit
    assert np.abs(plain[inside] - pasted[inside]).mean() > 1
    record = read_embedded(tmp_path / "paste" / "astronaut.png")
    assert record.settings["faces"] == "paste" and record.settings["face_count"] == 1


@pytest.mark.slow
def test_paste_keeps_alpha_and_margin_change_redoes_it(tmp_path, checkpoint):
    src = astronaut(tmp_path / "in" / "a.png", "RGBA")
    out = tmp_path / "out"
    convert(options(src, out, checkpoint, FaceSettings("paste")))
    with Image.open(out / "a.png") as img:
        assert img.mode == "RGBA" and img.getchannel("A").getextrema() == (180, 180)
    heard = Heard()
    summary = convert(options(src, out, checkpoint, FaceSettings("paste", margin=1.6)), heard)
    assert summary.converted == 1
    assert heard.results[0].reason == "settings changed: face_margin 1.3 -> 1.6"
    assert convert(options(src, out, checkpoint, FaceSettings("paste", margin=1.6))).skipped == 1


@pytest.mark.slow
def test_crop_writes_one_512px_file_per_face_and_handles_fewer_faces(tmp_path, checkpoint):
    src, out = tmp_path / "in" / "team.png", tmp_path / "out"
    group(src, 2)
    heard = Heard()
    summary = convert(options(src, out, checkpoint, FaceSettings("crop")), heard)
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["team_face1.png", "team_face2.png"]
    assert summary.converted == 2
    xs = [r.faces["boxes"][r.faces["index"] - 1][0] for r in heard.results]
    assert xs == sorted(xs)  # face K is the K-th from the left
    for name in names:
        with Image.open(out / name) as img:
            assert img.size == (512, 512)
    first = (out / "team_face1.png").read_bytes()

    again = convert(options(src, out, checkpoint, FaceSettings("crop")))
    assert (again.converted, again.skipped) == (0, 1)

    (out / "team_face2.png").unlink()  # a sibling gone: the input is redone
    heard = Heard()
    assert convert(options(src, out, checkpoint, FaceSettings("crop")), heard).converted == 2
    assert heard.results[0].reason == "face crop team_face2.png missing or from another input"
    assert (out / "team_face1.png").read_bytes() == first  # same name, same face, same pixels

    group(src, 1)  # one person left: the second crop must not stay, claiming to be current
    heard = Heard()
    assert convert(options(src, out, checkpoint, FaceSettings("crop")), heard).converted == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["team_face1.png"]
    assert any("removed team_face2.png" in m for m in heard.messages)


@pytest.mark.slow
def test_crop_without_a_face_fails_or_falls_back_to_the_whole_image(tmp_path, checkpoint):
    src, out = tmp_path / "in" / "coffee.png", tmp_path / "out"
    src.parent.mkdir()
    Image.fromarray(skimage_data.coffee()).save(src)
    heard = Heard()
    summary = convert(options(src, out, checkpoint, FaceSettings("crop")), heard)
    assert summary.failed == 1 and heard.results[0].error.startswith("no face found")
    assert not list(out.glob("*.png"))

    whole = FaceSettings("crop", fallback="whole")
    assert convert(options(src, out, checkpoint, whole)).converted == 1
    assert [p.name for p in out.glob("*.png")] == ["coffee.png"]
    assert read_embedded(out / "coffee.png").settings["face_count"] == 0
    assert convert(options(src, out, checkpoint, whole)).skipped == 1  # up to date


@pytest.mark.slow
def test_crop_of_an_exif_rotated_photo_is_upright(tmp_path, checkpoint):
    src, out = tmp_path / "in" / "turned.jpg", tmp_path / "out"
    src.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(skimage_data.astronaut()).transpose(Image.Transpose.ROTATE_90).save(
        src, exif=exif, quality=95
    )
    heard = Heard()
    convert(options(src, out, checkpoint, FaceSettings("crop")), heard)
    [result] = heard.results
    x, y, w, h = result.faces["boxes"][0]
    assert abs(x - 175) < 20 and abs(y - 70) < 20  # the upright astronaut's face


def test_dry_run_says_faces_are_found_when_decoding(tmp_path, checkpoint):
    src = astronaut(tmp_path / "in" / "a.png")
    heard = Heard()
    summary = convert(options(src, tmp_path / "out", checkpoint, FaceSettings("crop"),
                              dry_run=True), heard)
    assert summary.converted == 1 and heard.results[0].output.name == "a_face1.png"
    assert any("faces are found only when images are decoded" in m for m in heard.messages)


def test_cli_refuses_faces_with_reuse_similar(tmp_path):
    src = astronaut(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "out"),
                                       "--faces", "paste", "--reuse-similar", "4"])
    assert result.exit_code == 2
    assert "--faces and --reuse-similar cannot be combined" in result.output


@pytest.mark.slow
def test_cli_json_and_report_give_face_boxes(tmp_path, checkpoint):
    src = astronaut(tmp_path / "in" / "a.png")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "convert", str(src), "-o", str(tmp_path / "out"), "--weights", str(checkpoint),
        "--backend", "torch", "--size", "128", "--faces", "paste", "--json",
        "--report", str(report),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[0])
    assert line["faces"]["count"] == 1 and len(line["faces"]["boxes"][0]) == 4
    written = json.loads(report.read_text())
    assert written["faces"][0]["count"] == 1
    assert written["settings"]["faces"]["mode"] == "paste"
