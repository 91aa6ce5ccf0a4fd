"""Issue 23 item 4: animated GIF, APNG and animated WebP in, an animation of the same format
out, through the CLI (a folder converted): every frame styled, durations, loop count and
transparency kept; a still GIF stays an image; re-runs skip; a damaged one fails alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.records.embedded import read_embedded
from animegan_cli.stylizer import Stylizer
from tests.conftest import make_image, photo_like

TINY = ["--size", "64", "--backend", "torch", "--num-workers", "0"]
DURATIONS = [20, 30, 40, 50, 60, 70, 80, 90, 100, 110]  # ms: GIF stores hundredths
LOOPS = {"GIF": 3, "PNG": 2, "WEBP": 4}
SUFFIX = {"GIF": ".gif", "PNG": ".png", "WEBP": ".webp"}
HOLE = 8  # the transparent square at the top left of every frame, in input pixels


def frames_in(width: int = 40, height: int = 28) -> list[Image.Image]:
    """Ten different frames, each with a transparent square in its top-left corner."""
    frames = []
    for seed in range(len(DURATIONS)):
        rgba = np.dstack([photo_like(width, height, seed), np.full((height, width), 255)])
        rgba[:HOLE, :HOLE, 3] = 0
        frames.append(Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    return frames


def make_animation(path: Path, fmt: str) -> Path:
    frames = frames_in()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:],
                   duration=DURATIONS, loop=LOOPS[fmt], disposal=2, **extra)
    return path


def convert(inputs: list[Path], out: Path, checkpoint: Path, *extra: str):
    return CliRunner().invoke(main, ["convert", *map(str, inputs), "-o", str(out),
                                     "--weights", str(checkpoint), "--json", *TINY, *extra])


def results(run) -> dict[str, dict]:
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return {Path(r["input"]).name: r for r in lines if "input" in r}


def read_out(path: Path) -> tuple[str, int | None, list[Image.Image], list[float]]:
    with Image.open(path) as img:
        fmt, loop = img.format, img.info.get("loop")
        frames, durations = [], []
        for index in range(img.n_frames):
            img.seek(index)
            frames.append(img.convert("RGBA"))
            durations.append(img.info.get("duration"))
    return fmt, loop, frames, durations


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_item4_animation_keeps_frames_durations_loop_and_transparency(tmp_path, checkpoint, fmt):
    source = make_animation(tmp_path / "in" / f"anim{SUFFIX[fmt]}", fmt)
    run = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert run.exit_code == 0, run.output
    result = results(run)[source.name]
    assert result["status"] == "converted" and result["frames"] == 10
    assert result["duration"] == pytest.approx(sum(DURATIONS) / 1000)
    out = tmp_path / "out" / source.name
    got_fmt, loop, frames, durations = read_out(out)
    assert (got_fmt, loop, len(frames)) == (fmt, LOOPS[fmt], 10)
    assert durations == DURATIONS
    assert {f.size for f in frames} == {(64, 44)}  # every frame went through the model
    alpha = [np.array(f.getchannel("A")) for f in frames]
    assert all(a[:4, :4].max() == 0 and a[20:, 20:].min() == 255 for a in alpha)
    # Each frame is its own styled frame (lossless formats: exactly what Stylizer gives).
    styled = Stylizer.load(weights=checkpoint, size=64, backend="torch").stylize(frames_in())
    for got, want in zip(frames, styled):
        got_px, want_px = np.array(got).astype(int), np.array(want).astype(int)
        opaque = want_px[..., 3] == 255
        error = np.abs(got_px - want_px)[opaque].mean()
        assert error < (1 if fmt == "PNG" else 12), error  # GIF: a palette; WebP: lossy
    assert read_embedded(out) is not None  # the provenance record travels in the file


@pytest.mark.slow
def test_item4_still_gif_stays_an_image_and_walks_take_gifs(tmp_path, checkpoint):
    make_image(tmp_path / "in" / "still.gif")
    make_animation(tmp_path / "in" / "anim.gif", "GIF")
    run = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert run.exit_code == 0, run.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()
                  if not p.name.startswith(".")) == ["anim.gif", "still.png"]
    assert "frames" not in results(run)["still.gif"]
    with Image.open(tmp_path / "out" / "still.png") as img:
        assert not getattr(img, "is_animated", False)
    assert ".gif file(s)" not in run.stderr  # no GIF left out of the walk


@pytest.mark.slow
def test_item4_rerun_skips_an_animation_and_dry_run_reads_its_header(tmp_path, checkpoint):
    make_animation(tmp_path / "in" / "anim.webp", "WEBP")
    dry = convert([tmp_path / "in"], tmp_path / "out", checkpoint, "--dry-run")
    record = results(dry)["anim.webp"]
    assert record["status"] == "would-convert" and record["frames"] == 10
    first = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert results(first)["anim.webp"]["status"] == "converted", first.output
    again = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert results(again)["anim.webp"]["status"] == "skipped", again.output
    (tmp_path / "out" / ".animegan-manifest.jsonl").unlink(missing_ok=True)
    for manifest in (tmp_path / "out").glob(".animegan*"):
        manifest.unlink()
    embedded = convert([tmp_path / "in"], tmp_path / "out", checkpoint)  # the record alone
    assert results(embedded)["anim.webp"]["status"] == "skipped", embedded.output


@pytest.mark.slow
def test_item4_truncated_animation_fails_alone_with_one_line(tmp_path, checkpoint):
    good = make_animation(tmp_path / "in" / "good.gif", "GIF")
    data = make_animation(tmp_path / "in" / "cut.gif", "GIF").read_bytes()
    (tmp_path / "in" / "cut.gif").write_bytes(data[: len(data) * 2 // 3])
    make_image(tmp_path / "in" / "photo.png")
    run = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    found = results(run)
    assert found["cut.gif"]["status"] == "failed"
    assert found["cut.gif"]["error"].startswith("cannot decode frame ")  # one line, which
    assert "\n" not in found["cut.gif"]["error"]
    assert found[good.name]["status"] == "converted"
    assert found["photo.png"]["status"] == "converted"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()
                  if not p.name.startswith(".")) == ["good.gif", "photo.png"]


@pytest.mark.slow
def test_item4_animation_over_the_memory_budget_is_refused_from_its_header(tmp_path, checkpoint):
    # 12 frames of 2000x2000 held at full size (--keep-size) need ~380 MB beside the run's
    # base: over a 1G budget, refused before any frame is decoded; the photo is converted.
    frames = [Image.new("RGB", (2000, 2000), (20 * i, 90, 160)) for i in range(12)]
    make_image(tmp_path / "in" / "photo.png")
    frames[0].save(tmp_path / "in" / "big.gif", save_all=True, append_images=frames[1:],
                   duration=50)
    run = convert([tmp_path / "in"], tmp_path / "out", checkpoint, "--keep-size",
                  "--max-memory", "1G")
    found = results(run)
    assert found["big.gif"]["status"] == "failed"
    assert "of memory to style and hold until written" in found["big.gif"]["error"]
    assert found["photo.png"]["status"] == "converted"
