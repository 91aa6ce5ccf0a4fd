"""Tests for decoding, orientation, resizing, the dataset/loader and shape batching."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan_cli.core.errors import InputImageError
from animegan_cli.media.data import (
    ImageDataset,
    PreparedImage,
    PreprocessSettings,
    ShapeBatcher,
    batch_images,
    decode_image,
    describe_error,
    make_loader,
    own_pixel_limit,
    prepare_image,
    stack_pixels,
    target_size,
    to_output_image,
    to_rgb_or_rgba,
)
from tests.conftest import make_image, photo_like

# EXIF orientation -> the transpose that displays the stored pixels upright.
ORIENT_TRANSPOSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Where the stored image's top-left corner is seen once upright (from the EXIF spec's
# "row 0 is the visual ..., column 0 is the visual ..." table, independent of Pillow).
ORIENT_CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def transposed(img: Image.Image, orientation: int) -> Image.Image:
    method = ORIENT_TRANSPOSE[orientation]
    return img if method is None else img.transpose(method)


def corner_mean(arr: np.ndarray, corner: str, k: int = 6) -> float:
    rows = slice(0, k) if corner[0] == "t" else slice(-k, None)
    cols = slice(0, k) if corner[1] == "l" else slice(-k, None)
    return float(arr[rows, cols].mean())


def diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


# ---------------------------------------------------------------- target_size


@pytest.mark.parametrize(
    ("w", "h", "size"),
    [(640, 480, 512), (480, 640, 512), (1000, 333, 256), (333, 1000, 256), (37, 23, 512),
     (3000, 2000, 1024), (17, 1700, 256), (512, 512, 512), (8, 8, 64)],
)
def test_target_size_long_side_and_multiples(w: int, h: int, size: int):
    tw, th = target_size(w, h, size)
    assert max(tw, th) == size
    assert tw % 4 == 0 and th % 4 == 0
    scale = size / max(w, h)
    assert abs(tw - w * scale) <= 2 and abs(th - h * scale) <= 2
    assert (tw >= th) == (w >= h)


def test_target_size_other_multiple():
    tw, th = target_size(1000, 601, 480, multiple=16)
    assert (tw, th) == (480, 288)


def test_target_size_zero_is_native():
    assert target_size(41, 27, 0) == (41, 27)
    assert target_size(4000, 3000, 0) == (4000, 3000)


def test_target_size_tiny_side_gets_at_least_multiple():
    assert target_size(4000, 10, 256) == (256, 4)
    assert target_size(10, 4000, 256, multiple=8) == (8, 256)


# ---------------------------------------------------------------- decode_image, EXIF


@pytest.fixture
def oriented_source() -> Image.Image:
    """A non-square image with a bright top-left corner and a dark rest."""
    arr = (photo_like(64, 40, seed=5) // 3).astype(np.uint8)
    arr[:10, :10] = 255
    return Image.fromarray(arr, "RGB")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_exif_orientation(tmp_path: Path, oriented_source: Image.Image,
                                         orientation: int):
    exif = oriented_source.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    oriented_source.save(path, exif=exif, quality=95)

    img = decode_image(path)

    assert img.mode == "RGB"
    assert img.size == ((40, 64) if orientation >= 5 else (64, 40))
    arr = np.asarray(img, np.float32)
    corners = {c: corner_mean(arr, c) for c in ("tl", "tr", "bl", "br")}
    bright = ORIENT_CORNER[orientation]
    assert corners[bright] > 200
    assert all(v < 150 for c, v in corners.items() if c != bright)

    # The stored pixels as decoded, before orientation: same JPEG losses as ``img``.
    with Image.open(path) as raw:
        stored = raw.convert("RGB")
    assert stored.size == (64, 40)
    good = diff(img, transposed(stored, orientation))
    assert good < 1
    assert diff(img, transposed(oriented_source, orientation)) < 6
    for other in range(1, 9):
        wrong = transposed(stored, other)
        if other != orientation and wrong.size == img.size:
            assert diff(img, wrong) > 10


def test_decode_png_without_exif_is_unchanged(tmp_path: Path):
    path = make_image(tmp_path / "p.png", 30, 20)
    with Image.open(path) as raw:
        expected = np.asarray(raw.convert("RGB"))
    img = decode_image(path)
    assert img.size == (30, 20)
    assert np.array_equal(np.asarray(img), expected)


def test_decode_jpeg_draft_mode_reduces_large_photo(tmp_path: Path):
    path = make_image(tmp_path / "big.jpg", 2000, 1500, quality=80)
    img = decode_image(path, size=256)
    assert 256 <= max(img.size) < 2000
    assert img.mode == "RGB"
    assert abs(img.size[0] / img.size[1] - 2000 / 1500) < 0.02
    assert decode_image(path).size == (2000, 1500)


def test_decode_draft_then_prepare_hits_exact_size(tmp_path: Path):
    path = make_image(tmp_path / "big.jpg", 2000, 1500, quality=80)
    item = prepare_image(0, path, PreprocessSettings(size=256))
    assert item.error is None
    assert item.shape == (192, 256)


# ---------------------------------------------------------------- to_rgb_or_rgba


def test_mode_l_becomes_gray_rgb():
    img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, "L")
    out = to_rgb_or_rgba(img)
    arr = np.asarray(out)
    assert out.mode == "RGB"
    assert np.array_equal(arr[..., 0], np.asarray(img))
    assert np.array_equal(arr[..., 0], arr[..., 2])


def test_mode_la_keeps_alpha():
    gray = Image.new("L", (4, 4), 90)
    alpha = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 15, "L")
    out = to_rgb_or_rgba(Image.merge("LA", (gray, alpha)))
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(alpha))


def test_mode_p_without_transparency_becomes_rgb():
    src = Image.fromarray(photo_like(8, 8), "RGB").convert("P")
    out = to_rgb_or_rgba(src)
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(src.convert("RGB")))


def test_mode_p_with_transparency_becomes_rgba(tmp_path: Path):
    arr = np.zeros((6, 6), np.uint8)
    arr[:, 3:] = 1
    pal = Image.fromarray(arr, "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    path = tmp_path / "pal.png"
    pal.save(path, transparency=0)
    with Image.open(path) as img:
        assert img.mode == "P"
        out = to_rgb_or_rgba(img)
    assert out.mode == "RGBA"
    alpha = np.asarray(out.getchannel("A"))
    assert (alpha[:, :3] == 0).all() and (alpha[:, 3:] == 255).all()
    assert np.asarray(out)[0, 5, :3].tolist() == [0, 0, 255]


def test_mode_cmyk_becomes_rgb(tmp_path: Path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    out = to_rgb_or_rgba(cmyk)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=95)
    decoded = decode_image(path)
    assert decoded.mode == "RGB"
    r, g, b = np.asarray(decoded).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 50 and b < 50


def test_mode_16_bit_png_is_scaled_not_clipped(tmp_path: Path):
    arr = np.zeros((4, 6), np.uint16)
    arr[:, :2] = 65535
    arr[:, 2:4] = 32768
    arr[:, 4:] = 200
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    img = decode_image(path)
    assert img.mode == "RGB"
    out = np.asarray(img)
    assert (out[:, :2] == 255).all()
    assert (np.abs(out[:, 2:4].astype(int) - 128) <= 1).all()
    # 200 out of 65535 is nearly black; clipping would have kept it at 200.
    assert (out[:, 4:] <= 1).all()


def test_mode_32_bit_int_with_16_bit_values_is_scaled():
    img = Image.fromarray(np.full((2, 2), 65535, np.int32), "I")
    assert np.asarray(to_rgb_or_rgba(img)).min() == 255
    img = Image.fromarray(np.full((2, 2), 32768, np.int32), "I")
    assert abs(int(np.asarray(to_rgb_or_rgba(img))[0, 0, 0]) - 128) <= 1


def test_mode_1_becomes_black_and_white_rgb():
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), "L").convert("1")
    out = to_rgb_or_rgba(bits)
    assert out.mode == "RGB"
    assert np.asarray(out)[:, :, 0].tolist() == [[0, 255], [255, 0]]


def test_mode_rgba_premultiplied_becomes_rgba():
    out = to_rgb_or_rgba(Image.new("RGBa", (2, 2), (100, 50, 25, 128)))
    assert out.mode == "RGBA"
    r, g, b, a = out.getpixel((0, 0))
    assert a == 128
    assert abs(r - 199) <= 2 and abs(g - 99) <= 2 and abs(b - 49) <= 2


def test_rgb_and_rgba_pass_through_unchanged():
    rgb = Image.new("RGB", (2, 2))
    rgba = Image.new("RGBA", (2, 2))
    assert to_rgb_or_rgba(rgb) is rgb
    assert to_rgb_or_rgba(rgba) is rgba


# ---------------------------------------------------------------- prepare_image


@pytest.mark.parametrize(("w", "h", "mode", "name"), [
    (40, 28, "RGB", "a.jpg"), (28, 40, "RGB", "b.png"), (37, 23, "L", "c.png"),
    (36, 36, "RGB", "d.webp"), (30, 50, "RGB", "e.bmp"), (50, 30, "RGB", "f.tif"),
])
def test_prepare_good_image(tmp_path: Path, w: int, h: int, mode: str, name: str):
    path = make_image(tmp_path / name, w, h, mode=mode)
    item = prepare_image(7, path, PreprocessSettings(size=64))
    assert item.error is None
    assert item.index == 7
    assert item.pixels is not None
    assert item.pixels.dtype == torch.uint8
    assert item.pixels.shape[0] == 3
    hh, ww = item.shape
    assert hh % 4 == 0 and ww % 4 == 0
    assert max(hh, ww) == 64
    assert (ww > hh) == (w > h) or w == h
    assert item.original_size == (w, h)
    assert item.alpha is None
    assert item.seconds >= 0


def test_prepare_pixels_match_resized_image(tmp_path: Path):
    path = make_image(tmp_path / "a.png", 64, 32)
    item = prepare_image(0, path, PreprocessSettings(size=64))
    with Image.open(path) as raw:
        expected = np.asarray(raw.convert("RGB"))
    assert np.array_equal(item.pixels.permute(1, 2, 0).numpy(), expected)


def test_prepare_rgba_keeps_alpha_at_original_size(tmp_path: Path):
    path = make_image(tmp_path / "a.png", 50, 30, mode="RGBA")
    item = prepare_image(0, path, PreprocessSettings(size=32))
    assert item.error is None
    assert item.shape == (20, 32)
    assert item.alpha is not None
    assert item.alpha.dtype == torch.uint8
    assert tuple(item.alpha.shape) == (30, 50)
    with Image.open(path) as raw:
        assert np.array_equal(item.alpha.numpy(), np.asarray(raw.getchannel("A")))


def test_prepare_native_size(tmp_path: Path):
    path = make_image(tmp_path / "a.png", 41, 27)
    item = prepare_image(0, path, PreprocessSettings(size=0))
    assert item.error is None
    assert item.shape == (27, 41)


def test_prepare_exif_rotated_reports_upright_size(tmp_path: Path):
    img = Image.fromarray(photo_like(64, 40), "RGB")
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    img.save(path, exif=exif)
    item = prepare_image(0, path, PreprocessSettings(size=32))
    assert item.original_size == (40, 64)
    assert item.shape == (32, 20)


def write_truncated_jpeg(path: Path) -> Path:
    make_image(path.with_suffix(".full.jpg"), 64, 64, quality=95)
    data = path.with_suffix(".full.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_suffix(".full.jpg").unlink()
    return path


def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(os.urandom(2048))
    (tmp_path / "text.png").write_text("hello\nthis is not a picture\n")
    (tmp_path / "folder.jpg").mkdir()
    return {
        "empty": tmp_path / "empty.jpg",
        "noise": tmp_path / "noise.jpg",
        "text": tmp_path / "text.png",
        "truncated": write_truncated_jpeg(tmp_path / "cut.jpg"),
        "directory": tmp_path / "folder.jpg",
        "missing": tmp_path / "missing.jpg",
    }


@pytest.mark.parametrize("kind", ["empty", "noise", "text", "truncated", "directory", "missing"])
def test_prepare_bad_file_gives_one_line_error(tmp_path: Path, kind: str):
    path = bad_inputs(tmp_path)[kind]
    item = prepare_image(3, path, PreprocessSettings(size=64))
    assert item.index == 3
    assert item.pixels is None
    assert item.alpha is None
    assert isinstance(item.error, str) and item.error.strip()
    assert "\n" not in item.error and item.error == item.error.strip()
    assert "Traceback" not in item.error


def test_prepare_bad_file_messages_say_why(tmp_path: Path):
    paths = bad_inputs(tmp_path)
    settings = PreprocessSettings(size=64)

    def reason(kind: str) -> str:
        return prepare_image(0, paths[kind], settings).error or ""

    assert "not an image" in reason("empty")
    assert "not an image" in reason("text")
    assert "directory" in reason("directory")
    assert "not found" in reason("missing")
    assert "truncated" in reason("truncated")


def test_prepare_too_small_image(tmp_path: Path):
    path = make_image(tmp_path / "tiny.png", 3, 3)
    item = prepare_image(0, path, PreprocessSettings(size=0))
    assert item.pixels is None
    assert "too small" in (item.error or "")
    assert "3x3" in (item.error or "")


def test_prepare_extreme_aspect_is_too_small_after_resize(tmp_path: Path):
    path = make_image(tmp_path / "strip.png", 2000, 10)
    item = prepare_image(0, path, PreprocessSettings(size=256))
    assert "too small" in (item.error or "")


def test_prepare_tiny_image_is_upscaled_to_size(tmp_path: Path):
    path = make_image(tmp_path / "tiny.png", 3, 3)
    item = prepare_image(0, path, PreprocessSettings(size=16))
    assert item.error is None
    assert item.shape == (16, 16)


def test_prepare_out_of_memory_fails_the_image(tmp_path: Path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("animegan_cli.media.data.decode_with_size", no_memory)
    item = prepare_image(0, make_image(tmp_path / "a.png"), PreprocessSettings(size=16))
    assert item.error is not None and item.error.startswith("not enough memory to decode it")


def test_describe_error_variants():
    assert describe_error(Image.UnidentifiedImageError("x")) == (
        "not an image, or a format that cannot be read"
    )
    assert describe_error(PermissionError(13, "Permission denied")) == "permission denied"
    assert describe_error(OSError("broken data\n  stream\tended")) == (
        "cannot decode: broken data stream ended"
    )
    assert describe_error(OSError(5, "Input/output error")) == "cannot decode: Input/output error"
    assert describe_error(ValueError()) == "cannot decode: ValueError"
    assert describe_error(InputImageError("image is 3x3, too small")) == "image is 3x3, too small"


# ---------------------------------------------------------------- dataset and loader


def small_dataset(tmp_path: Path, n: int = 6) -> ImageDataset:
    paths = [make_image(tmp_path / f"{i}.png", 12 + 4 * i, 12, seed=i) for i in range(n - 1)]
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    paths.insert(2, tmp_path / "bad.jpg")
    return ImageDataset(paths, PreprocessSettings(size=16))


def test_dataset_items(tmp_path: Path):
    ds = small_dataset(tmp_path)
    assert len(ds) == 6
    assert ds[0].index == 0 and ds[0].error is None
    assert ds[2].error is not None and ds[2].pixels is None


@pytest.mark.parametrize("workers", [0, 2])
def test_make_loader_yields_every_index_once(tmp_path: Path, workers: int):
    ds = small_dataset(tmp_path)
    items = list(make_loader(ds, num_workers=workers, prefetch=2))
    assert all(isinstance(item, PreparedImage) for item in items)
    assert sorted(item.index for item in items) == list(range(len(ds)))
    assert [item.index for item in items if item.error is not None] == [2]
    if workers == 0:
        assert [item.index for item in items] == list(range(len(ds)))


# ---------------------------------------------------------------- batching


def prepared(index: int, h: int, w: int) -> PreparedImage:
    return PreparedImage(index, torch.full((3, h, w), index % 256, dtype=torch.uint8))


def run_batcher(batcher: ShapeBatcher, items: list[PreparedImage]):
    batches, pending_after_add, early_partial = [], [], 0
    for item in items:
        for batch in batcher.add(item):
            if len(batch) < batcher.batch_size:
                early_partial += 1
            batches.append(batch)
        pending_after_add.append(item.index + 1 - sum(len(b) for b in batches))
    flushed = list(batcher.flush())
    return batches, flushed, pending_after_add, early_partial


def test_batcher_single_shape_fixed_size():
    items = [prepared(i, 8, 12) for i in range(10)]
    batches, flushed, _, _ = run_batcher(ShapeBatcher(4), items)
    assert [[it.index for it in b] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [[it.index for it in b] for b in flushed] == [[8, 9]]
    assert list(ShapeBatcher(4).flush()) == []


@pytest.mark.parametrize("max_pending", [0, 5, 30])
def test_batcher_groups_shapes_and_bounds_pending(max_pending: int):
    rng = np.random.default_rng(0)
    shapes = [(8, 8 + 4 * k) for k in range(40)]
    items = [prepared(i, *shapes[rng.integers(len(shapes))]) for i in range(400)]
    batcher = ShapeBatcher(3, max_pending=max_pending)
    batches, flushed, pending, early_partial = run_batcher(batcher, items)

    limit = max(max_pending, 4 * 3)
    assert max(pending) <= limit
    # Forty shapes at batch size 3 leave up to 80 waiting: the bound must have acted.
    assert early_partial > 0
    everything = batches + flushed
    for batch in everything:
        assert 1 <= len(batch) <= 3
        assert len({it.shape for it in batch}) == 1
    assert sorted(it.index for b in everything for it in b) == list(range(400))
    assert not list(batcher.flush())


def test_batch_images_groups_stream():
    items = [prepared(i, 8, 8 if i % 2 else 12) for i in range(7)]
    batches = list(batch_images(items, 2))
    assert sorted(it.index for b in batches for it in b) == list(range(7))
    assert all(len({it.shape for it in b}) == 1 and len(b) <= 2 for b in batches)


def test_batch_images_skips_failed_items():
    items = [prepared(0, 8, 8), PreparedImage(1, error="cannot decode: junk"), prepared(2, 8, 8)]
    batches = list(batch_images(items, 2))
    assert [[it.index for it in b] for b in batches] == [[0, 2]]


def test_stack_pixels():
    batch = [prepared(i, 8, 12) for i in range(3)]
    stacked = stack_pixels(batch)
    assert stacked.shape == (3, 3, 8, 12)
    assert stacked.dtype == torch.uint8
    assert [int(stacked[i, 0, 0, 0]) for i in range(3)] == [0, 1, 2]


# ---------------------------------------------------------------- to_output_image


def hwc(h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(photo_like(w, h, seed=9))


def test_to_output_keep_size_resizes_back():
    img = to_output_image(hwc(32, 48), None, (96, 64), keep_size=True)
    assert img.mode == "RGB"
    assert img.size == (96, 64)


def test_to_output_without_keep_size_stays_model_sized():
    pixels = hwc(32, 48)
    img = to_output_image(pixels, None, (96, 64), keep_size=False)
    assert img.size == (48, 32)
    assert np.array_equal(np.asarray(img), pixels.numpy())


def test_to_output_restores_alpha_at_original_size():
    alpha = torch.from_numpy(np.tile(np.arange(96, dtype=np.uint8) * 2, (64, 1)))
    img = to_output_image(hwc(32, 48), alpha, (96, 64), keep_size=True)
    assert img.mode == "RGBA"
    assert img.size == (96, 64)
    assert np.array_equal(np.asarray(img.getchannel("A")), alpha.numpy())


def test_to_output_resizes_alpha_to_model_size():
    alpha = torch.from_numpy(np.tile(np.arange(96, dtype=np.uint8) * 2, (64, 1)))
    img = to_output_image(hwc(32, 48), alpha, (96, 64), keep_size=False)
    assert img.mode == "RGBA"
    assert img.size == (48, 32)
    a = np.asarray(img.getchannel("A")).astype(int)
    assert a[:, 0].max() < 10 and a[:, -1].min() > 175
    assert (np.diff(a[16]) >= -2).all()


# ---------------------------------------------------------------- pixel limit


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def test_image_over_max_pixels_is_refused_from_its_header(tmp_path: Path):
    bomb = write_png_header(tmp_path / "bomb.png", 50000, 50000)
    with own_pixel_limit():  # as in workers, and around decoding in the main process
        item = prepare_image(0, bomb, PreprocessSettings(size=64, max_pixels=200_000_000))
    assert item.error == (
        "image is 50000x50000 (2500 MP), over the --max-pixels limit of 200 MP; not decoded"
    )


def test_max_pixels_is_configurable_and_zero_means_no_limit(tmp_path: Path):
    path = make_image(tmp_path / "a.png", 40, 30)
    assert "over the --max-pixels limit" in (
        prepare_image(0, path, PreprocessSettings(size=16, max_pixels=1000)).error or "")
    assert prepare_image(0, path, PreprocessSettings(size=16, max_pixels=1200)).error is None
    assert prepare_image(0, path, PreprocessSettings(size=16, max_pixels=0)).error is None


def test_own_pixel_limit_lets_our_message_replace_pillows(tmp_path: Path):
    # Pillow alone would raise its own DecompressionBombError for this header.
    bomb = write_png_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    before = Image.MAX_IMAGE_PIXELS
    with own_pixel_limit():
        with pytest.raises(InputImageError, match="400 MP"):
            decode_image(bomb, 64, max_pixels=200_000_000)
    assert Image.MAX_IMAGE_PIXELS == before


def test_workers_use_max_pixels_not_pillows_limit(tmp_path: Path):
    bomb = write_png_header(tmp_path / "bomb.png", 20000, 20000)
    ds = ImageDataset([bomb], PreprocessSettings(size=64, max_pixels=500_000_000))
    [item] = list(make_loader(ds, num_workers=1, prefetch=1))
    # Allowed by our limit, so it gets as far as decoding the (missing) pixel data.
    assert item.error is not None and "max-pixels" not in item.error
    assert "decompression bomb" not in item.error
