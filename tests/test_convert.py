"""convert(): the whole path from files in to files out, on generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan_cli.core.errors import UsageError
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, convert
from tests.conftest import make_image


def options(src: Path | list[str], out: Path, checkpoint: Path, **kw) -> ConvertOptions:
    inputs = [str(src)] if isinstance(src, Path) else src
    kw.setdefault("size", 32)
    kw.setdefault("num_workers", 0)
    kw.setdefault("backend", "torch")  # OpenVINO has its own tests; conversion costs seconds
    return ConvertOptions(inputs=inputs, output=out, weights=checkpoint, **kw)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGBA" if img.mode == "RGBA" else "RGB"), dtype=np.int16)


def test_converts_a_tree_mirroring_it_under_out(photo_dir, tmp_path, checkpoint):
    out = tmp_path / "out"
    summary = convert(options(photo_dir, out, checkpoint))
    assert (summary.converted, summary.skipped, summary.failed) == (3, 0, 0)
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("[!.]*") if p.is_file())
    assert produced == ["a.jpg", "b.png", "nested/c.webp"]
    for name, fmt in [("a.jpg", "JPEG"), ("b.png", "PNG"), ("nested/c.webp", "WEBP")]:
        with Image.open(out / name) as img:
            assert img.format == fmt
            assert max(img.size) == 32 and img.size[0] % 4 == 0 and img.size[1] % 4 == 0


def test_output_is_styled_not_a_copy(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "x.png", 32, 32)
    out = tmp_path / "out"
    convert(options(src, out, checkpoint, size=0))
    assert np.abs(pixels(out / "x.png") - pixels(src)).mean() > 5


def test_workers_give_the_same_result_as_the_main_process(photo_dir, tmp_path, checkpoint):
    convert(options(photo_dir, tmp_path / "w0", checkpoint, num_workers=0, format="png"))
    convert(options(photo_dir, tmp_path / "w2", checkpoint, num_workers=2, format="png"))
    for name in ["a.png", "b.png", "nested/c.png"]:
        assert np.array_equal(pixels(tmp_path / "w0" / name), pixels(tmp_path / "w2" / name))


def test_batched_result_equals_unbatched(tmp_path, checkpoint):
    src = tmp_path / "in"
    for i in range(5):
        make_image(src / f"{i}.png", 40, 28, seed=i)
    make_image(src / "odd.png", 28, 40, seed=9)  # another shape: must not share a batch
    convert(options(src, tmp_path / "b1", checkpoint, batch_size=1))
    summary = convert(options(src, tmp_path / "b4", checkpoint, batch_size=4))
    assert summary.converted == 6
    for path in sorted((tmp_path / "b1").glob("[!.]*")):
        diff = np.abs(pixels(path) - pixels(tmp_path / "b4" / path.name))
        assert diff.max() <= 1, path.name  # one LSB of float rounding at most


def test_size_zero_keeps_native_size_and_keep_size_restores_it(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "odd.png", 37, 23)
    convert(options(src, tmp_path / "native", checkpoint, size=0))
    with Image.open(tmp_path / "native" / "odd.png") as img:
        assert img.size == (37, 23)
    convert(options(src, tmp_path / "kept", checkpoint, size=16, keep_size=True))
    with Image.open(tmp_path / "kept" / "odd.png") as img:
        assert img.size == (37, 23)


def test_alpha_is_put_back_unchanged(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "t.png", 32, 24, mode="RGBA")
    convert(options(src, tmp_path / "out", checkpoint, size=0))
    with Image.open(tmp_path / "out" / "t.png") as img, Image.open(src) as original:
        assert img.mode == "RGBA"
        assert np.array_equal(np.asarray(img)[..., 3], np.asarray(original)[..., 3])


def test_alpha_input_with_jpg_format_is_written_as_png(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "t.png", 32, 24, mode="RGBA")
    convert(options(src, tmp_path / "out", checkpoint, format="jpg"))
    assert [p.name for p in (tmp_path / "out").glob("[!.]*")] == ["t.png"]


@pytest.mark.parametrize(
    "mode,name,save",
    [
        ("L", "gray.png", {}),
        ("LA", "gray_alpha.png", {}),
        ("P", "palette.png", {}),
        ("CMYK", "cmyk.jpg", {}),
        ("I;16", "deep.png", {}),
        ("1", "bilevel.bmp", {}),
    ],
)
def test_every_image_mode_comes_out_rgb_or_rgba(tmp_path, checkpoint, mode, name, save):
    src = make_image(tmp_path / "in" / name, 30, 20, mode=mode, **save)
    summary = convert(options(src, tmp_path / "out", checkpoint))
    assert summary.converted == 1, summary.failures
    with Image.open(next((tmp_path / "out").glob("[!.]*"))) as img:
        assert img.mode in ("RGB", "RGBA")
        assert max(img.size) == 32


def test_exif_orientation_is_applied(tmp_path, checkpoint):
    src = tmp_path / "in" / "rotated.jpg"
    src.parent.mkdir()
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display: the upright image is 20 wide, 40 high
    img.save(src, exif=exif)
    convert(options(src, tmp_path / "out", checkpoint, size=0))
    with Image.open(tmp_path / "out" / "rotated.jpg") as out:
        assert out.size == (20, 40)
        assert out.getexif().get(0x0112) in (None, 1)


def test_existing_outputs_are_skipped_unless_overwrite(photo_dir, tmp_path, checkpoint):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    stamp = (out / "a.jpg").stat().st_mtime_ns
    again = convert(options(photo_dir, out, checkpoint))
    assert (again.converted, again.skipped) == (0, 3)
    assert (out / "a.jpg").stat().st_mtime_ns == stamp
    forced = convert(options(photo_dir, out, checkpoint, overwrite=True))
    assert (forced.converted, forced.skipped) == (3, 0)


def test_a_bad_file_fails_alone(photo_dir, tmp_path, checkpoint):
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (photo_dir / "empty.png").write_bytes(b"")
    seen = []
    summary = convert(
        options(photo_dir, tmp_path / "out", checkpoint),
        ConvertEvents(on_result=seen.append),
    )
    assert (summary.converted, summary.failed) == (3, 2)
    failed = {r.input.name: r.error for r in seen if r.status == "failed"}
    assert set(failed) == {"broken.jpg", "empty.png"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert not (tmp_path / "out" / "broken.jpg").exists()
    assert not (tmp_path / "out" / "empty.png").exists()
    leftovers = [p for p in (tmp_path / "out").rglob(".animegan-tmp-*")]
    assert leftovers == []


def test_output_inside_the_input_tree_is_not_read_back(photo_dir, checkpoint):
    out = photo_dir / "styled"
    convert(options(photo_dir, out, checkpoint))
    again = convert(options(photo_dir, out, checkpoint))
    assert (again.converted, again.skipped, again.failed) == (0, 3, 0)
    assert not (out / "styled").exists()


def test_refuses_an_output_folder_that_is_an_input_folder(photo_dir, checkpoint):
    with pytest.raises(UsageError, match="also an input folder"):
        convert(options(photo_dir, photo_dir, checkpoint, suffix="_anime"))


def test_refuses_to_overwrite_an_input_file(photo_dir, checkpoint):
    with pytest.raises(UsageError, match="would overwrite the input"):
        convert(options([str(photo_dir / "a.jpg")], photo_dir, checkpoint))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"size": 3}, "--size"),
        ({"quality": 101}, "--quality"),
        ({"num_workers": -1}, "--num-workers"),
    ],
)
def test_bad_option_values_are_usage_errors(photo_dir, tmp_path, checkpoint, change, message):
    with pytest.raises(UsageError, match=message):
        convert(options(photo_dir, tmp_path / "out", checkpoint, **change))


def test_heic_input_with_the_heif_extra_comes_out_as_jpeg(tmp_path, checkpoint):
    pytest.importorskip("pillow_heif")
    src = make_image(tmp_path / "in" / "phone.HEIC", 40, 30)
    summary = convert(options(tmp_path / "in", tmp_path / "out", checkpoint))
    assert summary.converted == 1, summary.failures
    with Image.open(tmp_path / "out" / "phone.jpg") as img:
        assert img.format == "JPEG" and img.size == (32, 24)
    assert src.exists()


def test_keep_size_restores_the_full_size_of_a_draft_decoded_jpeg(tmp_path, checkpoint):
    # 2x --size or more: the JPEG is decoded at a reduced scale (draft mode).
    src = make_image(tmp_path / "in" / "big.jpg", 300, 200)
    convert(options(src, tmp_path / "out", checkpoint, size=32, keep_size=True))
    with Image.open(tmp_path / "out" / "big.jpg") as img:
        assert img.size == (300, 200)
    convert(options(src, tmp_path / "small", checkpoint, size=32))
    with Image.open(tmp_path / "small" / "big.jpg") as img:
        assert img.size == (32, 20)


def test_int8_calibration_reads_the_first_good_images_ahead_and_the_run_still_gets_all():
    from animegan_cli.media.data import PreparedImage
    from animegan_cli.pipeline.convert import CALIBRATION_IMAGES, _ReadAhead

    def item(i: int) -> PreparedImage:
        if i == 1:
            return PreparedImage(i, error="cannot decode: broken")
        return PreparedImage(i, torch.full((3, 4, 4), i, dtype=torch.uint8))

    total = CALIBRATION_IMAGES + 5
    images = _ReadAhead(item(i) for i in range(total))
    calibration = images.calibration()
    assert [int(p[0, 0, 0]) for p in calibration] == [0, *range(2, CALIBRATION_IMAGES + 1)]
    assert [i.index for i in images] == list(range(total))  # read early, processed in order


def test_the_reuse_stage_lets_look_alikes_borrow_and_the_rest_pass():
    from animegan_cli.media.data import PreparedImage
    from animegan_cli.pipeline.similar import Borrowed, ReuseStage

    photo = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 16, 16), np.uint8))
    other = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 16, 16), np.uint8))
    first, early, late, different, lone = (PreparedImage(i, p) for i, p in
                                           enumerate([photo, photo, photo, other, photo]))
    assert ReuseStage(None).admit(first) is None and ReuseStage(None).styled(first, photo) == []
    stage = ReuseStage(4)
    assert stage.admit(first) is None  # styled: it becomes a candidate
    assert stage.admit(early) == []  # waits for the candidate's result
    assert stage.admit(different) is None
    result = torch.zeros(16, 16, 3, dtype=torch.uint8)
    assert stage.styled(first, result) == [Borrowed(early, result, 0, 0)]
    assert stage.admit(late) == [Borrowed(late, result, 0, 0)]  # the kept result, at once
    assert stage.admit(PreparedImage(5, other)) == []  # waits for ``different``
    assert [f.index for f in stage.failed(different)] == [5]
    assert stage.admit(lone) == [Borrowed(lone, result, 0, 0)]


def test_png_level_changes_size_not_pixels_and_leaves_outputs_up_to_date(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_image(src / "a.png", 64, 48, seed=4)
    fast, small = tmp_path / "fast", tmp_path / "small"
    rle = tmp_path / "rle"
    convert(options(src, fast, checkpoint, size=64, png_level=0))
    convert(options(src, small, checkpoint, size=64, png_level=9))
    convert(options(src, rle, checkpoint, size=64))  # the default: zlib's RLE strategy
    assert (fast / "a.png").stat().st_size > (rle / "a.png").stat().st_size  # compressed
    assert np.array_equal(pixels(fast / "a.png"), pixels(small / "a.png"))
    assert np.array_equal(pixels(rle / "a.png"), pixels(small / "a.png"))
    again = convert(options(src, fast, checkpoint, size=64, png_level=9))
    assert (again.converted, again.skipped) == (0, 1)  # the level is no reason to redo it


def test_a_png_level_out_of_range_is_refused(tmp_path, checkpoint):
    for wrong in (10, -1, "fast", True):
        with pytest.raises(UsageError, match="--png-level must be between 0 and 9, or rle"):
            convert(options(tmp_path, tmp_path / "out", checkpoint, png_level=wrong))
