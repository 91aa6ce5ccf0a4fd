"""Stylizer: the in-memory API gives exactly what convert writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animegan_cli import Stylizer
from animegan_cli.core.errors import InputImageError, UsageError
from animegan_cli.model import weights
from animegan_cli.model.weights import git_blob_id
from animegan_cli.pipeline.convert import ConvertOptions, convert
from tests.conftest import make_image

EXIF_ORIENTATION = 0x0112


def inputs(folder: Path) -> list[Path]:
    """An RGB JPEG, an RGBA PNG and an EXIF-rotated JPEG of different shapes."""
    rgb = make_image(folder / "rgb.jpg", 48, 32, seed=1, quality=95)
    rgba = make_image(folder / "rgba.png", 36, 44, mode="RGBA", seed=2)
    upright = Image.open(make_image(folder / "tmp.png", 40, 24, seed=3)).copy()
    exif = upright.getexif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: displayed rotated by 90 degrees
    rotated = folder / "rotated.jpg"
    upright.save(rotated, exif=exif, quality=95)
    (folder / "tmp.png").unlink()
    return [rgb, rgba, rotated]


def as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGBA" if img.mode == "RGBA" else "RGB"))


@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=pytest.mark.slow)])
@pytest.mark.parametrize("keep_size", [False, True])
def test_stylize_equals_convert_pixel_for_pixel(tmp_path, checkpoint, backend, keep_size):
    files = inputs(tmp_path / "in")
    out = tmp_path / "out"
    summary = convert(ConvertOptions(
        inputs=[str(tmp_path / "in")], output=out, weights=checkpoint, size=32,
        keep_size=keep_size, backend=backend, format="png", num_workers=0,
    ))
    assert summary.converted == 3
    stylizer = Stylizer.load(weights=checkpoint, size=32, keep_size=keep_size, backend=backend)
    results = stylizer.stylize([Image.open(f) for f in files])
    for path, result in zip(files, results):
        with Image.open(out / f"{path.stem}.png") as written:
            assert written.mode == result.mode
            assert np.array_equal(as_array(written), as_array(result)), path.name
    # The EXIF-rotated input comes out upright (24 wide, 40 high at its native size).
    rotated = results[2]
    assert rotated.size == ((24, 40) if keep_size else (20, 32))


def test_files_bytes_and_images_give_the_same_result(tmp_path, checkpoint):
    path = make_image(tmp_path / "x.jpg", 64, 40, seed=4)
    stylizer = Stylizer.load(weights=checkpoint, size=32, backend="torch")
    by_path, by_bytes, by_image = stylizer.stylize([path, path.read_bytes(), Image.open(path)])
    assert np.array_equal(as_array(by_path), as_array(by_bytes))
    assert np.array_equal(as_array(by_path), as_array(by_image))


def test_results_keep_the_order_of_the_inputs_whatever_the_batching(tmp_path, checkpoint):
    shapes = [(40, 28), (28, 40), (40, 28), (32, 32), (40, 28)]
    images = [Image.open(make_image(tmp_path / f"{i}.png", w, h, seed=i))
              for i, (w, h) in enumerate(shapes)]
    stylizer = Stylizer.load(weights=checkpoint, size=0, backend="torch")
    one = stylizer.stylize(images, batch_size=1)
    batched = stylizer.stylize(images, batch_size=3)
    assert [r.size for r in one] == [r.size for r in batched] == shapes
    for a, b in zip(one, batched):
        # Batching changes float summation order only: at most one level of rounding.
        assert np.abs(as_array(a).astype(int) - as_array(b).astype(int)).max() <= 1


def test_describes_itself_for_provenance(checkpoint):
    stylizer = Stylizer.load(weights=checkpoint, size=64, backend="torch", precision="fp32")
    assert stylizer.description == "torch cpu fp32"
    assert stylizer.checkpoint_id == git_blob_id(checkpoint.read_bytes())
    assert stylizer.settings == {"size": 64, "precision": "fp32", "backend": "torch",
                                 "align_corners": False, "keep_size": False}


def test_a_bad_image_raises_convert_s_one_line_reason(tmp_path, checkpoint):
    stylizer = Stylizer.load(weights=checkpoint, size=0, backend="torch")
    with pytest.raises(InputImageError, match="not an image, or a format that cannot be read"):
        stylizer.stylize([b"this is not an image"])
    with pytest.raises(InputImageError, match=r"image is 5x5, too small"):
        stylizer.stylize([Image.new("RGB", (5, 5))])


def test_a_presized_image_prepares_as_the_full_one_would(checkpoint):
    stylizer = Stylizer.load(weights=checkpoint, size=64, backend="torch", max_pixels=12_000)
    full = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8))
    assert stylizer.input_size(120, 90) == (64, 48)
    small = full.resize((64, 48), Image.Resampling.BICUBIC, reducing_gap=3.0)
    sized, whole = stylizer.prepare_sized(small, (120, 90)), stylizer.prepare(full)
    assert sized.original_size == whole.original_size == (120, 90)
    assert np.array_equal(sized.pixels.numpy(), whole.pixels.numpy())
    with pytest.raises(InputImageError, match=r"image is 200x100 .* --max-pixels limit"):
        stylizer.prepare_sized(small, (200, 100))


def test_settings_that_cannot_work_are_usage_errors(checkpoint):
    with pytest.raises(UsageError, match="--size must be 0 or at least"):
        Stylizer.load(weights=checkpoint, size=5)
    with pytest.raises(UsageError, match="--precision int8 needs --backend openvino"):
        Stylizer.load(weights=checkpoint, backend="torch", precision="int8")
    with pytest.raises(UsageError, match="unknown style 'nope'"):
        Stylizer.load("nope")


def test_a_checkpoint_file_is_read_once_and_recorded_by_its_own_name(tmp_path, checkpoint,
                                                                      monkeypatch):
    named_like_a_style = tmp_path / "paprika.pt"
    named_like_a_style.write_bytes(checkpoint.read_bytes())
    reads: list[Path] = []
    real = weights._read_bytes

    def counting(path):  # noqa: ANN001, ANN202
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(weights, "_read_bytes", counting)
    stylizer = Stylizer.load(weights=named_like_a_style, size=32, backend="torch")
    assert reads == [named_like_a_style]
    # Not the published paprika (its git blob id differs): the file's own name is recorded.
    assert stylizer.style == "paprika.pt"


def test_an_installed_style_is_read_once_and_verified(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_DIR", str(tmp_path / "store"))
    weights.WeightsStore.from_env().import_file(checkpoint, "mine")
    reads: list[Path] = []
    real = weights._read_bytes
    monkeypatch.setattr(weights, "_read_bytes", lambda p: reads.append(Path(p)) or real(p))
    stylizer = Stylizer.load("mine", size=32, backend="torch")
    assert reads == [tmp_path / "store" / "mine.pt"]
    assert stylizer.style == "mine"
    assert stylizer.checkpoint_id == weights.git_blob_id(checkpoint.read_bytes())
