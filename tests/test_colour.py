"""--colour: keep-brightness and keep-colours at every front end, and what outputs record.

Measured in BT.601 terms (media/colour.py): mean luma as AnimeGANv2's adjust_brightness.py
computes it; chroma as Pillow's YCbCr (JPEG's) Cb and Cr. The tolerances: keep-brightness's
mean luma within 1% of the photo's; keep-colours' mean absolute Cb and Cr difference from the
photo at most CHROMA_TOLERANCE levels (of 255). Without --colour, the random test model is
more than 3% off in brightness and about 15 levels off in chroma, so each check can fail.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.core.errors import UsageError
from animegan_cli.media import colour, data
from animegan_cli.records.embedded import read_embedded
from tests.conftest import photo_like

CHROMA_TOLERANCE = 1.0  # mean |Cb - Cb'| and |Cr - Cr'|, in 8-bit levels
BRIGHTNESS_TOLERANCE = 0.01  # of the photo's mean luma


def dark_photo(path: Path, width: int = 64, height: int = 44, seed: int = 0) -> Path:
    """A colourful photo darker than the random model's results (its mean luma ~55)."""
    pixels = (photo_like(width, height, seed).astype(np.float32) * 0.45).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def rgb(source: Path | bytes | Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8; resized (bicubic, as the model's input is) to ``size`` if given."""
    if isinstance(source, Image.Image):
        img = source.convert("RGB")
    else:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            img = opened.convert("RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return np.array(img)


def mean_luma(pixels: np.ndarray) -> float:
    return colour.mean_luma(torch.from_numpy(np.array(pixels)))


def brightness_gap(result: np.ndarray, photo: np.ndarray) -> float:
    """|mean luma of result - photo's| as a share of the photo's."""
    return abs(mean_luma(result) - mean_luma(photo)) / mean_luma(photo)


def chroma_gap(result: np.ndarray, photo: np.ndarray) -> float:
    """The larger of the mean absolute Cb and Cr differences, in 8-bit levels."""
    def ycbcr(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).convert("YCbCr"), dtype=np.float64)
    gaps = np.abs(ycbcr(result)[..., 1:] - ycbcr(photo)[..., 1:]).mean(axis=(0, 1))
    return float(gaps.max())


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def convert_args(src: Path, out: Path, checkpoint: Path, *extra: str) -> tuple[str, ...]:
    return ("convert", str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "64",
            "--num-workers", "0", "--backend", "torch", "--precision", "fp32", *extra)


# --- the pixel steps themselves -----------------------------------------------------------

def test_keep_brightness_scales_to_the_photos_mean_luma_even_where_255_clips():
    photo = torch.full((40, 40, 3), 200, dtype=torch.uint8)
    styled = torch.zeros((40, 40, 3), dtype=torch.uint8)
    styled[:, :20] = 250  # half very bright: one factor would clip it and fall short
    styled[:, 20:] = 60
    kept = colour.keep_brightness(photo, styled)
    assert abs(colour.mean_luma(kept) - 200) / 200 < BRIGHTNESS_TOLERANCE
    assert (kept[:, :20] == 255).all()  # clipped, as the original's np.clip
    black = torch.zeros_like(styled)
    assert torch.equal(colour.keep_brightness(photo, black), black)  # nothing to scale


def test_keep_colours_takes_luma_from_the_style_and_chroma_from_the_photo():
    photo = torch.from_numpy(photo_like(48, 32, seed=4))
    styled = torch.from_numpy(photo_like(48, 32, seed=5)[..., ::-1] // 2 + 60)  # other tones
    kept = colour.keep_colours(photo, styled)
    assert chroma_gap(kept.numpy(), photo.numpy()) <= CHROMA_TOLERANCE
    assert chroma_gap(styled.numpy(), photo.numpy()) > 5
    assert (colour.luma(kept) - colour.luma(styled)).abs().mean() < 0.6  # rounding only
    assert torch.equal(colour.keep("style", photo.permute(2, 0, 1), styled), styled)


def test_keep_colours_desaturates_a_colour_that_cannot_have_the_styles_luma():
    photo = torch.tensor([[[255, 0, 0], [0, 0, 255]]], dtype=torch.uint8)  # red, blue
    styled = torch.tensor([[[250, 250, 250], [20, 20, 20]]], dtype=torch.uint8)
    kept = colour.keep_colours(photo, styled)
    assert (colour.luma(kept) - colour.luma(styled)).abs().max() < 0.6  # the style's light
    red, blue = kept[0].tolist()
    assert red[0] > red[1] == red[2] and blue[2] > blue[0] == blue[1]  # the photo's hues


def test_a_reference_of_another_size_is_resized_to_the_results():
    photo = torch.from_numpy(photo_like(96, 64, seed=6))
    styled = torch.from_numpy(photo_like(48, 32, seed=7))
    kept = colour.keep("keep-colours", photo.permute(2, 0, 1), styled)
    assert kept.shape == styled.shape
    small = np.asarray(Image.fromarray(photo.numpy()).resize((48, 32), Image.Resampling.BILINEAR))
    assert chroma_gap(kept.numpy(), small) <= 2 * CHROMA_TOLERANCE


# --- convert (the command line) -------------------------------------------------------------

def test_convert_keep_brightness_matches_the_photos_mean_luma(tmp_path, checkpoint):
    src = dark_photo(tmp_path / "in" / "dark.png")
    photo = rgb(src)
    for name, extra in (("style", ()), ("kept", ("--colour", "keep-brightness"))):
        result = run(*convert_args(src, tmp_path / name, checkpoint, *extra))
        assert result.exit_code == 0, result.output
    assert brightness_gap(rgb(tmp_path / "kept" / "dark.png"), photo) <= BRIGHTNESS_TOLERANCE
    assert brightness_gap(rgb(tmp_path / "style" / "dark.png"), photo) > 0.03


def test_convert_keep_colours_keeps_the_photos_chroma(tmp_path, checkpoint):
    src = dark_photo(tmp_path / "in" / "dark.png", seed=1)
    photo = rgb(src)
    for name, extra in (("style", ()), ("kept", ("--colour", "keep-colours"))):
        result = run(*convert_args(src, tmp_path / name, checkpoint, *extra))
        assert result.exit_code == 0, result.output
    kept, styled = rgb(tmp_path / "kept" / "dark.png"), rgb(tmp_path / "style" / "dark.png")
    assert chroma_gap(kept, photo) <= CHROMA_TOLERANCE
    assert chroma_gap(styled, photo) > 5
    # the luma is the style's (within rounding)
    assert np.abs(colour.luma(torch.from_numpy(kept)).numpy()
                  - colour.luma(torch.from_numpy(styled)).numpy()).mean() < 0.6


def test_changing_colour_restyles_and_style_keeps_todays_bytes(tmp_path, checkpoint):
    src = dark_photo(tmp_path / "in" / "p.png")
    out = tmp_path / "out"

    def statuses(*extra: str) -> list[tuple[str, str | None]]:
        result = run(*convert_args(src, out, checkpoint, "--json", *extra))
        assert result.exit_code == 0, result.output
        return [(r["status"], r["reason"]) for r in map(json.loads, result.stdout.splitlines())]

    statuses()
    today = (out / "p.png").read_bytes()
    assert "colour" not in read_embedded(out / "p.png").settings  # the record as before
    assert statuses("--colour", "style")[0][0] == "skipped"
    [(status, reason)] = statuses("--colour", "keep-colours")
    assert status == "converted" and reason == "settings changed: colour None -> keep-colours"
    assert read_embedded(out / "p.png").settings["colour"] == "keep-colours"
    assert statuses("--colour", "keep-colours")[0][0] == "skipped"
    [(status, reason)] = statuses("--colour", "keep-brightness")
    assert reason == "settings changed: colour keep-colours -> keep-brightness"
    assert statuses()[0][0] == "converted"
    assert (out / "p.png").read_bytes() == today


def test_style_is_the_models_own_pixels(tmp_path, checkpoint):
    from animegan_cli.stylizer import Stylizer

    src = dark_photo(tmp_path / "in" / "p.png")
    assert run(*convert_args(src, tmp_path / "out", checkpoint)).exit_code == 0
    s = Stylizer.load(weights=checkpoint, size=64, backend="torch", precision="fp32")
    item = s.prepare(src)
    raw = data.to_output_image(s.run([item])[0], None, item.original_size, False)
    assert np.array_equal(rgb(tmp_path / "out" / "p.png"), np.asarray(raw))


def test_a_bad_colour_is_a_usage_error(tmp_path, checkpoint):
    src = dark_photo(tmp_path / "in" / "p.png")
    result = CliRunner().invoke(main, list(convert_args(src, tmp_path / "out", checkpoint,
                                                        "--colour", "sepia")))
    assert result.exit_code == 2
    assert "'sepia' is not one of 'style', 'keep-brightness', 'keep-colours'" in result.output


# --- the Stylizer -----------------------------------------------------------------------------

def test_stylizer_colour_argument(tmp_path, checkpoint):
    from animegan_cli.stylizer import Stylizer

    photo = Image.open(dark_photo(tmp_path / "p.png", 80, 56, seed=2))
    common = {"weights": checkpoint, "size": 64, "backend": "torch", "precision": "fp32"}
    bright = Stylizer.load(colour="keep-brightness", keep_size=True, **common)
    [result] = bright.stylize([photo])
    assert result.size == (80, 56)
    assert brightness_gap(rgb(result), rgb(photo)) <= BRIGHTNESS_TOLERANCE
    assert bright.settings["colour"] == "keep-brightness"
    colours = Stylizer.load(colour="keep-colours", **common)
    [result] = colours.stylize([photo])
    assert chroma_gap(rgb(result), rgb(photo, result.size)) <= CHROMA_TOLERANCE
    assert "colour" not in Stylizer.load(**common).settings
    with pytest.raises(UsageError, match="--colour must be one of: style, keep-brightness"):
        Stylizer.load(colour="sepia", **common)


# --- serve (a real uvicorn server), a clip, faces ---------------------------------------------

@pytest.mark.slow
def test_serve_colour_from_the_server_and_per_request(checkpoint, tmp_path):
    from tests.test_serve import Server

    upload = io.BytesIO()
    Image.open(dark_photo(tmp_path / "p.png", 128, 84, seed=3)).save(upload, "PNG")
    home = tmp_path / "home"
    env = {"XDG_CACHE_HOME": str(home / "cache"), "XDG_CONFIG_HOME": str(home / "config")}
    server = Server(checkpoint, "--colour", "keep-colours", env=env)  # --size 128: no resize
    try:
        def post(**form: str) -> np.ndarray:
            reply = server.client.post("/animeify", data=form,
                                       files={"files": ("p.png", upload.getvalue())})
            assert reply.status_code == 200, reply.text
            return rgb(reply.content)

        photo = rgb(upload.getvalue())
        assert chroma_gap(post(), photo) <= CHROMA_TOLERANCE  # the server's --colour
        assert chroma_gap(post(colour="style"), photo) > 5
        assert brightness_gap(post(colour="keep-brightness"), photo) <= BRIGHTNESS_TOLERANCE
        assert brightness_gap(post(colour="style"), photo) > 0.03
        bad = server.client.post("/animeify", data={"colour": "sepia"},
                                 files={"files": ("p.png", upload.getvalue())})
        assert bad.status_code == 422
        assert bad.json()["detail"].startswith("colour must be one of: style, keep-brightness")
        assert '<select id="colour">' in server.client.get("/").text  # the page offers it
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_clip_keeps_each_frames_brightness(tmp_path, checkpoint):
    import av

    from tests.test_video import make_clip

    clip = make_clip(tmp_path / "in" / "clip.mp4", frames=4, width=64, height=44, audio=False)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    for name, extra in (("style", ()), ("kept", ("--colour", "keep-brightness"))):
        result = run(*convert_args(clip, tmp_path / name, checkpoint, "--video-crf", "0", *extra))
        assert result.exit_code == 0, result.output
    photos = frames(clip)
    kept, styled = frames(tmp_path / "kept" / "clip.mp4"), frames(tmp_path / "style" / "clip.mp4")
    assert len(kept) == len(photos) == 4
    # Each frame leaves the model within 0.01% of its photo's mean luma; 4:2:0 chroma (the
    # encoder's yuv420p, lossless here) averages the random model's pixel-level colour
    # noise, which moves the decoded mean by ~1% (measured: 125.82 -> 124.49 for 125.81).
    assert max(brightness_gap(k, p) for k, p in zip(kept, photos)) <= 2 * BRIGHTNESS_TOLERANCE
    assert min(brightness_gap(s, p) for s, p in zip(styled, photos)) > 0.03


@pytest.mark.slow
def test_pasted_faces_keep_the_photos_colours_too(tmp_path, checkpoint):
    from animegan_cli.faces.blend import output_region, square_crop
    from animegan_cli.faces.detect import Box
    from tests.test_face_stage import astronaut

    src = astronaut(tmp_path / "in" / "astronaut.png")
    extra = ("--size", "128", "--faces", "paste", "--json")
    found = {}
    for name, more in (("style", ()), ("kept", ("--colour", "keep-colours"))):
        result = run(*convert_args(src, tmp_path / name, checkpoint, *extra, *more))
        assert result.exit_code == 0, result.output
        found[name] = json.loads(result.stdout)["faces"]["boxes"]
    [box] = [Box(*b) for b in found["kept"]]
    region = output_region(square_crop(box, 1.3, 512, 512), (512, 512), (128, 128))
    face = (slice(region.y, region.y + region.h), slice(region.x, region.x + region.w))
    photo = rgb(src, (128, 128))
    kept, styled = rgb(tmp_path / "kept" / "astronaut.png"), rgb(tmp_path / "style" /
                                                                 "astronaut.png")
    assert chroma_gap(kept, photo) <= CHROMA_TOLERANCE
    # the face was styled from the full-size photo and scaled into place: a level more
    assert chroma_gap(kept[face], photo[face]) <= 2 * CHROMA_TOLERANCE
    assert chroma_gap(styled[face], photo[face]) > 5


@pytest.mark.slow
def test_faces_pasted_into_a_clips_frames_keep_the_photos_colours(tmp_path, checkpoint):
    import av

    from tests.test_loop import _face_clip

    src = _face_clip(tmp_path / "in" / "face.mp4")

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    common = ("--size", "256", "--video-crf", "0", "--min-face", "24")
    for name, extra in (("whole", ("--colour", "keep-colours")),
                        ("style", ("--faces", "paste")),
                        ("kept", ("--faces", "paste", "--colour", "keep-colours"))):
        result = run(*convert_args(src, tmp_path / name, checkpoint, *common, *extra))
        assert result.exit_code == 0, result.output
    photos = [rgb(Image.fromarray(p), (256, 226)) for p in frames(src)]
    whole, kept = frames(tmp_path / "whole" / "face.mp4"), frames(tmp_path / "kept" / "face.mp4")
    styled = frames(tmp_path / "style" / "face.mp4")
    for photo, plain, pasted, style in zip(photos, whole, kept, styled):
        changed = np.argwhere(np.any(np.abs(plain.astype(int) - pasted) > 2, axis=2))
        (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0) + 1
        face = (slice(top, bottom), slice(left, right))  # where the face was pasted
        assert chroma_gap(pasted[face], photo[face]) <= 2 * CHROMA_TOLERANCE
        assert chroma_gap(style[face], photo[face]) > 5


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's runs (as tests/test_loop.py starts it)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_actors_keep_colour_as_a_local_run_does(tmp_path, checkpoint, local_ray):
    import av

    from tests.test_video import make_clip

    src = tmp_path / "in"
    dark_photo(src / "p.png")
    make_clip(src / "clip.mp4", frames=2, width=64, height=44, audio=False)
    extra = ("--colour", "keep-brightness", "--video-crf", "0")
    for name, more in (("plain", ()), ("ray", ("--ray", "local"))):
        result = run(*convert_args(src, tmp_path / name, checkpoint, *extra, *more))
        assert result.exit_code == 0, result.output
    assert np.array_equal(rgb(tmp_path / "plain" / "p.png"), rgb(tmp_path / "ray" / "p.png"))
    decoded = {}
    for name in ("plain", "ray"):
        with av.open(str(tmp_path / name / "clip.mp4")) as clip:
            decoded[name] = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    assert len(decoded["ray"]) == 2
    assert all(np.array_equal(a, b) for a, b in zip(decoded["plain"], decoded["ray"]))
    assert read_embedded(tmp_path / "ray" / "p.png").settings["colour"] == "keep-brightness"
    assert brightness_gap(rgb(tmp_path / "ray" / "p.png"), rgb(src / "p.png")) <= 0.01


@pytest.mark.slow
def test_watch_keeps_colour_for_a_dropped_photo(tmp_path, checkpoint):
    import shutil

    from tests.test_watch import Watch

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    staged = dark_photo(tmp_path / "staging" / "p.png")
    watch = Watch([inbox], out, checkpoint, "--colour", "keep-colours", "--backend", "torch")
    try:
        shutil.copy(staged, inbox / "p.png")
        watch.until(lambda: watch.converted("p.png"), 60)
        assert chroma_gap(rgb(out / "p.png"), rgb(staged)) <= CHROMA_TOLERANCE
        assert read_embedded(out / "p.png").settings["colour"] == "keep-colours"
        assert watch.stop() == 0
    finally:
        watch.close()
