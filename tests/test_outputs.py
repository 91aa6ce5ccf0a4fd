"""Tests for output naming, format choice and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animegan_cli.core.errors import UsageError
from animegan_cli.media import outputs
from animegan_cli.media.inputs import InputFile, discover_inputs
from animegan_cli.media.outputs import (
    TEMP_PREFIX,
    fail_collisions,
    format_for,
    image_has_alpha,
    plan_outputs,
    write_image_atomic,
)
from tests.conftest import make_image, photo_like


def item(rel: str, root: Path | None = None) -> InputFile:
    base = root if root is not None else Path("/photos")
    return InputFile(base / rel, Path(rel))


def no_alpha(_: Path) -> bool:
    return False


def names(paths: list[Path], out: Path) -> list[str]:
    return [p.relative_to(out).as_posix() for p in paths]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    ("name", "ext", "pil"),
    [
        ("a.jpg", ".jpg", "JPEG"),
        ("a.JPEG", ".jpg", "JPEG"),
        ("a.jpeg", ".jpg", "JPEG"),
        ("a.png", ".png", "PNG"),
        ("a.webp", ".webp", "WEBP"),
        ("a.tif", ".tif", "TIFF"),
        ("a.TIFF", ".tif", "TIFF"),
        ("a.bmp", ".bmp", "BMP"),
        ("a.heic", ".jpg", "JPEG"),
        ("a.weird", ".png", "PNG"),
    ],
)
def test_format_for_same(name: str, ext: str, pil: str):
    fmt = format_for(Path(name), "same")
    assert (fmt.extension, fmt.pil_name) == (ext, pil)


@pytest.mark.parametrize("requested", ["png", "jpg", "webp"])
def test_format_for_requested_ignores_input(requested: str):
    assert format_for(Path("x.tif"), requested).extension == "." + requested


def test_plan_same_format_mapping(tmp_path: Path):
    out = tmp_path / "out"
    inputs = [item(n) for n in ["a.jpg", "b.jpeg", "c.tif", "d.png", "e.tiff", "f.webp"]]
    planned = plan_outputs(inputs, out, "same", has_alpha=no_alpha)
    assert names(planned, out) == ["a.jpg", "b.jpg", "c.tif", "d.png", "e.tif", "f.webp"]


@pytest.mark.parametrize("requested", ["png", "jpg", "webp"])
def test_plan_requested_format(tmp_path: Path, requested: str):
    out = tmp_path / "out"
    inputs = [item(n) for n in ["a.jpg", "b.png", "c.webp"]]
    planned = plan_outputs(inputs, out, requested, has_alpha=no_alpha)
    assert names(planned, out) == [f"{s}.{requested}" for s in "abc"]


def test_plan_unknown_format_is_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="gif"):
        plan_outputs([item("a.jpg")], tmp_path, "gif", has_alpha=no_alpha)


def test_plan_suffix_goes_before_extension(tmp_path: Path):
    out = tmp_path / "out"
    planned = plan_outputs([item("a.jpg"), item("sub/b.png")], out, "same", "_anime",
                           has_alpha=no_alpha)
    assert names(planned, out) == ["a_anime.jpg", "sub/b_anime.png"]


def test_plan_mirrors_tree(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    planned = plan_outputs(discover_inputs([photo_dir]), out)
    assert names(planned, out) == ["a.jpg", "b.png", "nested/c.webp"]


def test_plan_collision_is_not_renamed_but_fails_each_member(tmp_path: Path):
    out = tmp_path / "out"
    inputs = [item("a.jpg"), item("a.png"), item("b.jpg")]
    planned = plan_outputs(inputs, out, "png", has_alpha=no_alpha)
    assert names(planned, out) == ["a.png", "a.png", "b.png"]
    marked = fail_collisions(inputs, planned, "png")
    assert marked[0].error == (f"its output {out / 'a.png'} would also be the output of "
                               "/photos/a.png; not converted (use --format same, or a separate "
                               "run with another --suffix, or rename one)")
    assert marked[1].error is not None and "output of /photos/a.jpg;" in marked[1].error
    assert marked[2] == inputs[2]


def test_plan_name_of_an_input_does_not_depend_on_the_others(tmp_path: Path):
    out = tmp_path / "out"
    alone = plan_outputs([item("a_jpg.jpg")], out, has_alpha=no_alpha)
    together = plan_outputs([item("a.jpg"), item("a_jpg.jpg")], out, has_alpha=no_alpha)
    assert names(alone, out) == ["a_jpg.jpg"] and names(together, out) == ["a.jpg", "a_jpg.jpg"]


def test_collisions_are_case_folded_and_name_the_fix(tmp_path: Path):
    out = tmp_path / "out"
    inputs = [item("a.jpg"), item("A.JPG"), InputFile(Path("/other/a.jpg"), Path("a.jpg"))]
    marked = fail_collisions(inputs, plan_outputs(inputs, out, has_alpha=no_alpha))
    assert all(m.error for m in marked)
    assert marked[2].error.endswith(
        "/photos/a.jpg, /photos/A.JPG; not converted (use --base DIR to mirror their full "
        "paths, or rename one)")


def test_failed_inputs_are_neither_opened_nor_colliding(tmp_path: Path):
    def explode(path: Path) -> bool:
        raise AssertionError(f"opened {path}")

    out = tmp_path / "out"
    gone = InputFile(Path("/photos/a.png"), Path("a.png"), error="file not found")
    inputs = [gone, item("a.jpg")]
    planned = plan_outputs(inputs, out, "png", has_alpha=no_alpha)
    assert fail_collisions(inputs, planned, "png") == inputs
    assert plan_outputs([gone], out, "jpg", has_alpha=explode) == [out / "a.jpg"]


def test_plan_same_name_in_different_folders_does_not_collide(tmp_path: Path):
    out = tmp_path / "out"
    planned = plan_outputs([item("x/a.jpg"), item("y/a.jpg")], out, "png", has_alpha=no_alpha)
    assert names(planned, out) == ["x/a.png", "y/a.png"]


def test_plan_rgba_png_to_jpg_stays_png(tmp_path: Path):
    src = tmp_path / "src"
    make_image(src / "alpha.png", mode="RGBA")
    make_image(src / "opaque.png", mode="RGB")
    make_image(src / "photo.jpg")
    out = tmp_path / "out"
    planned = plan_outputs(discover_inputs([src]), out, "jpg")
    assert names(planned, out) == ["alpha.png", "opaque.jpg", "photo.jpg"]


def test_plan_alpha_kept_for_palette_transparency(tmp_path: Path):
    src = tmp_path / "src"
    make_image(src / "pal.png", mode="P", transparency=0)
    out = tmp_path / "out"
    assert names(plan_outputs(discover_inputs([src]), out, "jpg"), out) == ["pal.png"]


def test_plan_alpha_target_that_holds_alpha_is_kept(tmp_path: Path):
    src = tmp_path / "src"
    make_image(src / "alpha.png", mode="RGBA")
    out = tmp_path / "out"
    assert names(plan_outputs(discover_inputs([src]), out, "webp"), out) == ["alpha.webp"]


def test_image_has_alpha(tmp_path: Path):
    assert image_has_alpha(make_image(tmp_path / "a.png", mode="RGBA"))
    assert image_has_alpha(make_image(tmp_path / "la.png", mode="LA"))
    assert not image_has_alpha(make_image(tmp_path / "b.png", mode="RGB"))
    assert not image_has_alpha(make_image(tmp_path / "c.jpg"))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert not image_has_alpha(bad)
    assert not image_has_alpha(tmp_path / "missing.png")


def test_plan_refuses_to_overwrite_inputs(photo_dir: Path):
    inputs = discover_inputs([photo_dir])
    with pytest.raises(UsageError, match="would overwrite"):
        plan_outputs(inputs, photo_dir)


def test_plan_refuses_to_overwrite_explicit_input_via_relative_out_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    photo = make_image(tmp_path / "p.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="p.jpg"):
        plan_outputs(discover_inputs([photo]), Path("."))


def test_plan_into_input_dir_with_suffix_is_allowed(photo_dir: Path):
    planned = plan_outputs(discover_inputs([photo_dir]), photo_dir, suffix="_anime")
    assert names(planned, photo_dir) == ["a_anime.jpg", "b_anime.png", "nested/c_anime.webp"]


def test_write_atomic_png_rgba(tmp_path: Path):
    img = Image.fromarray(photo_like(20, 12), "RGB")
    img.putalpha(Image.linear_gradient("L").resize((20, 12)))
    dest = tmp_path / "deep" / "out.png"
    write_image_atomic(img, dest)
    with Image.open(dest) as back:
        assert back.format == "PNG"
        assert back.mode == "RGBA"
        assert np.array_equal(np.asarray(back), np.asarray(img))
    assert os.listdir(dest.parent) == ["out.png"]


@pytest.mark.parametrize(
    ("name", "fmt"), [("o.jpg", "JPEG"), ("o.webp", "WEBP"), ("o.tif", "TIFF"), ("o.JPG", "JPEG")]
)
def test_write_atomic_format_from_extension(tmp_path: Path, name: str, fmt: str):
    write_image_atomic(Image.fromarray(photo_like(16, 16), "RGB"), tmp_path / name, fsync=False)
    with Image.open(tmp_path / name) as back:
        assert back.format == fmt
        assert back.mode == "RGB"
        assert back.size == (16, 16)


def test_write_atomic_rgba_to_jpg_becomes_rgb(tmp_path: Path):
    img = Image.new("RGBA", (8, 8), (200, 10, 10, 50))
    write_image_atomic(img, tmp_path / "o.jpg")
    with Image.open(tmp_path / "o.jpg") as back:
        assert back.format == "JPEG"
        assert back.mode == "RGB"
        r, g, b = np.asarray(back).reshape(-1, 3).mean(axis=0)
        assert r > 150 and g < 60 and b < 60


def test_write_atomic_quality_changes_jpeg_size(tmp_path: Path):
    img = Image.fromarray(photo_like(64, 64), "RGB")
    write_image_atomic(img, tmp_path / "lo.jpg", quality=20)
    write_image_atomic(img, tmp_path / "hi.jpg", quality=98)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_write_atomic_replaces_existing(tmp_path: Path):
    dest = tmp_path / "o.png"
    dest.write_bytes(b"old")
    write_image_atomic(Image.new("RGB", (4, 4), "red"), dest)
    with Image.open(dest) as back:
        assert back.getpixel((0, 0)) == (255, 0, 0)


def test_write_atomic_respects_umask_not_0600(tmp_path: Path):
    dest = tmp_path / "o.png"
    write_image_atomic(Image.new("RGB", (4, 4)), dest)
    mode = stat.S_IMODE(dest.stat().st_mode)
    assert mode == 0o666 & ~current_umask()
    if current_umask() == 0o022:
        assert mode == 0o644


def test_write_atomic_leaves_no_temp_on_success(tmp_path: Path):
    for i in range(3):
        write_image_atomic(Image.new("RGB", (4, 4)), tmp_path / f"{i}.png", fsync=False)
    assert sorted(os.listdir(tmp_path)) == ["0.png", "1.png", "2.png"]
    assert not any(n.startswith(TEMP_PREFIX) for n in os.listdir(tmp_path))


def test_write_atomic_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    dest = tmp_path / "out" / "o.png"
    with pytest.raises(OSError, match="No space left"):
        write_image_atomic(Image.new("RGB", (4, 4)), dest)
    assert os.listdir(dest.parent) == []


def test_write_atomic_failure_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dest = tmp_path / "o.jpg"
    dest.write_bytes(b"previous")

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_image_atomic(Image.new("RGB", (4, 4)), dest)
    assert dest.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["o.jpg"]


def test_temp_prefix_is_hidden_and_recognisable():
    assert outputs.TEMP_PREFIX.startswith(".")
    assert "animegan" in outputs.TEMP_PREFIX


@pytest.mark.parametrize(("name", "fmt"), [("o.jpeg", "JPEG"), ("o.tiff", "TIFF")])
def test_write_atomic_long_extensions(tmp_path: Path, name: str, fmt: str):
    write_image_atomic(Image.new("RGB", (8, 8), "blue"), tmp_path / name, fsync=False)
    with Image.open(tmp_path / name) as back:
        assert back.format == fmt
