"""Face detection and the --faces settings: real photos from scikit-image's bundled data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from animegan_cli.core.errors import UsageError
from animegan_cli.faces.detect import (
    DETECTORS,
    Box,
    FaceSettings,
    crop_output,
    face_styles,
    find_faces,
    reading_order,
    style_note,
)
from animegan_cli.media import data

skimage_data = pytest.importorskip("skimage.data")

# Where the astronaut's face is, found by an independent detector: scikit-image's bundled LBP
# cascade (skimage.feature.Cascade, min 60 px, scale 1.2) puts it at row 70, column 175, 93 px.
KNOWN_FACE = Box(175, 70, 93, 93)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    h = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = w * h
    return inter / (a.w * a.h + b.w * b.h - inter)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def detector():
    return FaceSettings("crop").build_detector()


def test_astronaut_is_bundled_not_downloaded():
    import skimage

    assert (Path(skimage.__file__).parent / "data" / "astronaut.png").is_file()


@pytest.mark.parametrize("name", list(DETECTORS))
def test_each_detector_finds_the_astronauts_face(astronaut, name):
    [face] = find_faces(FaceSettings("crop", detector=name).build_detector(), astronaut)
    assert iou(face, KNOWN_FACE) > 0.7


def test_no_face_on_photos_without_one(detector):
    for photo in (skimage_data.coffee(), skimage_data.rocket(), skimage_data.camera()):
        assert find_faces(detector, Image.fromarray(photo)) == []


def test_tiny_image_gives_no_face_and_no_error(detector):
    assert find_faces(detector, Image.new("RGB", (3, 2), "gray")) == []


def test_huge_image_box_in_the_full_images_pixels(detector, astronaut):
    canvas = Image.new("RGB", (4096, 3072), (90, 110, 130))
    canvas.paste(astronaut.resize((1536, 1536)), (2000, 1000))  # face scaled by 3
    [face] = find_faces(detector, canvas)
    expected = Box(2000 + KNOWN_FACE.x * 3, 1000 + KNOWN_FACE.y * 3, KNOWN_FACE.w * 3,
                   KNOWN_FACE.h * 3)
    assert iou(face, expected) > 0.6


def test_rgba_and_grey_images(detector, astronaut):
    rgba = astronaut.copy()
    rgba.putalpha(200)
    assert len(find_faces(detector, rgba)) == 1
    assert len(find_faces(detector, astronaut.convert("L"))) == 1


def test_exif_rotated_photo_is_searched_upright(detector, astronaut, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    astronaut.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    upright = data.decode_image(path)
    [face] = find_faces(detector, upright)
    assert iou(face, KNOWN_FACE) > 0.6


def test_min_face_leaves_smaller_faces_out(astronaut):
    assert find_faces(FaceSettings("crop", min_face=150).build_detector(), astronaut) == []


def test_reading_order_rows_then_left_to_right():
    boxes = [Box(300, 12, 50, 50), Box(10, 200, 60, 60), Box(20, 0, 50, 50),
             Box(200, 210, 40, 40), Box(150, 5, 55, 55)]
    assert [(b.x, b.y) for b in reading_order(boxes)] == [
        (20, 0), (150, 5), (300, 12), (10, 200), (200, 210)
    ]


def test_crop_output_names():
    assert crop_output(Path("out/a/IMG_1.jpg"), 3) == Path("out/a/IMG_1_face3.jpg")


def test_settings_record_nothing_when_off_and_everything_when_on():
    assert FaceSettings().record() == {}
    record = FaceSettings("paste", margin=1.5).record()
    assert record["faces"] == "paste" and record["face_margin"] == 1.5
    assert record["face_detector"] == "haar-alt2" and record["min_face"] == 40


@pytest.mark.parametrize("settings, message", [
    (FaceSettings("crop", margin=0.5), "--face-margin must be between 1.0 and 4.0"),
    (FaceSettings("crop", min_face=2), "--min-face must be at least 8 (px)"),
    (FaceSettings("crop", neighbours=0), "--face-neighbours must be at least 1"),
])
def test_bad_settings_are_usage_errors(settings, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        settings.validate()


def test_faces_and_reuse_similar_refused():
    with pytest.raises(UsageError, match="cannot be combined"):
        FaceSettings("paste").validate(reuse_similar=True)
    FaceSettings("off").validate(reuse_similar=True)


def test_which_styles_were_trained_on_faces():
    assert {"face_paint_512_v1", "face_paint_512_v2"} <= set(face_styles())
    assert "paprika" not in face_styles()
    assert "paprika was not trained on faces" in style_note("paprika", None)
    assert style_note("face_paint_512_v2", None) is None
