"""Tiles (issue 24, items 2 and 4): --tile auto|off|N in convert, Stylizer and serve.

With the same supplied normalisation statistics a tiled result equals the untiled one
(>= 60 dB) at several tile sizes, odd image sizes and on both engines; an image over
--max-memory converts in tiles with --tile auto and is refused with --tile off; what an
output records of its tiling makes it stale only where pixels change; serve styles an
upload over its --max-memory in tiles instead of refusing it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.core.errors import UsageError
from animegan_cli.core.limits import MIN_TILE, TILE_OVERLAP
from animegan_cli.engines import tiling
from animegan_cli.engines.base import EngineContext, create_engine, resolve_spec, stats_engine
from animegan_cli.engines.memory import BASE_BYTES, estimate_peak
from animegan_cli.model.weights import load_generator, load_state_dict
from animegan_cli.records.embedded import read_embedded
from tests.conftest import make_image, photo_like

MIB = 2**20
# A 400x300 model input needs ~899 MiB by the estimate: over this budget whole, while a
# ~276 px tile (and the image's buffers) fits it.
BUDGET = 850 * MIB


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def pixels_of(width: int, height: int, seed: int = 1) -> torch.Tensor:
    return torch.from_numpy(photo_like(width, height, seed)).permute(2, 0, 1).contiguous()


def engine_for(backend: str, checkpoint: Path, cache: Path, variant: str = "torch"):
    spec = resolve_spec("cpu", backend, "fp32", 1)
    generator = load_generator(load_state_dict(checkpoint), variant=variant)
    return stats_engine(create_engine(generator, spec, EngineContext("e" * 40, cache)), spec, "t")


def tiled_against_untiled(engine, width: int, height: int, tile: int,
                          half_pixel: bool = True) -> tuple[float, int]:
    """PSNR of the tiled result against the untiled one with the same statistics, and the
    number of tiles; the tiles are cut and blended as convert does (TiledImage)."""
    pixels = pixels_of(width, height)
    plan = tiling.TilePlan((height, width), tile, (height // 2, width // 2))
    stats = tiling.measure_stats(engine, pixels, plan)
    whole, _ = engine.run_stats(pixels[None], stats[None])
    image = tiling.TiledImage(pixels, plan, stats)
    for part in image.tiles:
        styled = tiling.run_batch(engine, image.crop(part)[None], [stats], [plan.full],
                                  [part.origin], half_pixel)
        image.add(part, styled[0])
    return psnr(image.result(), whole[0]), len(image.tiles)


# ---------------------------------------------------------------- planning (no model)


def test_auto_tiles_only_what_does_not_fit_and_off_never() -> None:
    assert estimate_peak(400 * 300) > BUDGET
    plan = tiling.plan_tiles(400, 300, "auto", BUDGET)
    assert plan is not None and plan.full == (300, 400)
    assert MIN_TILE <= plan.tile < 400 and plan.tile % 4 == 0
    assert plan.stats_size == (150, 200)  # half the sides: they fit
    assert tiling.plan_tiles(400, 300, "off", BUDGET) is None
    assert tiling.plan_tiles(200, 150, "auto", BUDGET) is None  # fits whole
    assert tiling.plan_tiles(400, 300, "auto", BUDGET, align_corners=True) is None
    assert tiling.plan_tiles(400, 300, 512, BUDGET) is None  # one tile would hold it
    forced = tiling.plan_tiles(600, 500, 256, 8 * 2**30)
    assert forced is not None and forced.tile == 256 and forced.stats_size == (250, 300)


def test_statistics_come_from_the_largest_size_that_fits_when_half_does_not() -> None:
    plan = tiling.plan_tiles(6000, 4000, "auto", 2 * 2**30)
    assert plan is not None
    h, w = plan.stats_size
    assert w < 3000 and abs(w / h - 1.5) < 0.01
    room = 2 * 2**30 - BASE_BYTES - tiling.TILED_IMAGE_BYTES_PER_PIXEL * 24_000_000
    assert estimate_peak(w * h) - BASE_BYTES <= room


@pytest.mark.parametrize("length", [257, 300, 401, 1000, 1003, 2048, 4000, 6000])
@pytest.mark.parametrize("tile", [256, 300, 852, 1024])
def test_tiles_sit_on_the_4_pixel_grid_overlap_enough_and_cover_the_axis(length, tile) -> None:
    spans = tiling.axis_spans(length, tile)
    if length <= tile:
        assert spans == [(0, length)]
        return
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(start % 4 == 0 for start, _ in spans)
    pieces = {end - start for start, end in spans[:-1]}
    assert len(pieces) == 1 and max(pieces) <= tile  # one tile shape (and the last's)
    assert 0 <= (spans[-1][1] - spans[-1][0]) - max(pieces) <= 3
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end - start >= TILE_OVERLAP


def test_tiles_are_balanced_so_overlap_costs_no_more_than_it_must() -> None:
    # 2048 px needs three tiles of at most 1024: three of 760 cover it (11% more pixels
    # than the axis), not three of 1024 (50% more).
    spans = tiling.axis_spans(2048, 1024)
    assert len(spans) == 3 and {end - start for start, end in spans} == {760}
    assert sum(end - start for start, end in tiling.axis_spans(1024, 768)) <= 1.12 * 1024


def test_blend_weights_sum_to_one_everywhere() -> None:
    plan = tiling.TilePlan((301, 517), 256, (150, 258))
    image = tiling.TiledImage(pixels_of(517, 301), plan, np.zeros((24, 2), np.float32))
    for part in image.tiles:
        done = image.add(part, torch.full((*part.size, 3), 200, dtype=torch.uint8))
    assert done and bool((image.result() == 200).all())


def test_tile_values_are_checked() -> None:
    assert tiling.parse_tile("AUTO") == "auto" and tiling.parse_tile("512") == 512
    with pytest.raises(UsageError, match="at least 256"):
        tiling.parse_tile("64")
    with pytest.raises(UsageError, match="auto, off or a number"):
        tiling.parse_tile("big")


@pytest.mark.slow
def test_a_tiny_tiled_image_equals_the_untiled_one_with_the_same_statistics(
        checkpoint: Path, tmp_path: Path) -> None:
    """Below MIN_TILE (the planner's floor), only to keep the default run fast."""
    engine = engine_for("torch", checkpoint, tmp_path)
    value, tiles = tiled_against_untiled(engine, 203, 177, 160)
    assert tiles == 4 and value >= 60


@pytest.mark.slow
def test_tiles_of_a_tf1_checkpoint_sample_as_its_graph_does(checkpoint: Path,
                                                              tmp_path: Path) -> None:
    """AnimeGANv2's TensorFlow graph resizes without half-pixel centres: so do its tiles."""
    engine = engine_for("torch", checkpoint, tmp_path, variant="tf1")
    value, _ = tiled_against_untiled(engine, 203, 177, 160, half_pixel=False)
    assert value >= 60
    wrong, _ = tiled_against_untiled(engine, 203, 177, 160, half_pixel=True)
    assert wrong < value


@pytest.mark.slow
def test_run_tiled_with_given_statistics_batches_tiles(checkpoint: Path, tmp_path: Path) -> None:
    """What a clip's frame at native size uses: its (smoothed) statistics, tiles batched."""
    engine = engine_for("torch", checkpoint, tmp_path)
    pixels = pixels_of(203, 177, seed=2)
    plan = tiling.TilePlan((177, 203), 160, (88, 101))
    _, stats = engine.run_stats(pixels_of(101, 88, seed=3)[None])  # another image's
    whole, _ = engine.run_stats(pixels[None], stats)
    tiled = tiling.run_tiled(engine, pixels, plan, batch_size=2, stats=stats[0])
    assert psnr(tiled, whole[0]) >= 60


# ---------------------------------------------------- the "Done when": >= 60 dB, both engines


SIZES = [(400, 300, 256), (417, 301, 256), (333, 290, 300), (263, 401, 260)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_tiled_equals_untiled_with_the_same_statistics(backend: str, checkpoint: Path,
                                                       tmp_path: Path) -> None:
    engine = engine_for(backend, checkpoint, tmp_path)
    for width, height, tile in SIZES:
        value, tiles = tiled_against_untiled(engine, width, height, tile)
        assert tiles > 1
        assert value >= 60, (width, height, tile, value)


# ------------------------------------------------------------------- convert (the CLI)


def convert(args: list[str]) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(main, ["convert", *args, "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines


@pytest.mark.slow
def test_an_image_over_the_budget_converts_in_tiles_and_is_refused_with_tile_off(
        checkpoint: Path, tmp_path: Path) -> None:
    source = make_image(tmp_path / "in" / "big.png", 400, 300, seed=4)
    base = [str(source.parent), "--weights", str(checkpoint), "--backend", "torch",
            "--precision", "fp32", "--size", "0", "--max-memory", "850M"]
    code, lines = convert([*base, "-o", str(tmp_path / "off"), "--tile", "off"])
    assert code == 1 and lines[0]["status"] == "failed"
    assert "more than the budget" in lines[0]["error"]
    assert not (tmp_path / "off" / "big.png").exists()

    out = tmp_path / "out"
    code, lines = convert([*base, "-o", str(out)])  # --tile auto, the default
    assert code == 0 and lines[0]["status"] == "converted", lines
    with Image.open(out / "big.png") as styled:
        assert styled.size == (400, 300)
    settings = read_embedded(out / "big.png").settings  # type: ignore[union-attr]
    plan = tiling.plan_tiles(400, 300, "auto", BUDGET)
    assert plan is not None
    assert settings["tiles"] == f"{plan.tile}px" and settings["tile_stats"] == "200x150"

    # Another tile side, the same statistics: the same pixels, so up to date.
    code, lines = convert([*base, "-o", str(out), "--tile", "300"])
    assert code == 0 and lines[0]["status"] == "skipped", lines
    # Untiled would change the pixels: stale (and then refused by the budget).
    code, lines = convert([*base, "-o", str(out), "--tile", "off", "--dry-run"])
    assert lines[0]["status"] == "would-convert" and "tile_stats 200x150 -> None" in (
        lines[0]["reason"])


@pytest.mark.slow
def test_an_image_that_fits_is_styled_whole_and_records_nothing_new(
        checkpoint: Path, tmp_path: Path) -> None:
    source = make_image(tmp_path / "in" / "a.png", 40, 28)
    outs = []
    for tile in ("auto", "off"):
        out = tmp_path / tile
        code, _ = convert([str(source.parent), "-o", str(out), "--weights", str(checkpoint),
                           "--backend", "torch", "--precision", "fp32", "--size", "64",
                           "--tile", tile])
        assert code == 0
        outs.append((out / "a.png").read_bytes())
        assert "tiles" not in read_embedded(out / "a.png").settings  # type: ignore[union-attr]
    assert outs[0] == outs[1]


def test_tile_needs_an_engine_with_statistics(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    make_image(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(main, [
        "convert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
        str(checkpoint), "--backend", "onnxruntime", "--tile", "512"])
    assert result.exit_code == 2
    assert "--tile 512 needs an engine that takes normalisation statistics" in result.output


# --------------------------------------------------------------------------- Stylizer


@pytest.mark.slow
def test_stylizer_stylize_takes_tile(checkpoint: Path) -> None:
    from animegan_cli import Stylizer

    s = Stylizer.load(weights=checkpoint, size=0, backend="torch", precision="fp32", threads=1)
    photo = Image.fromarray(photo_like(300, 260, 5))
    [tiled] = s.stylize([photo], tile=256)
    [whole] = s.stylize([photo], tile="off")
    assert tiled.size == whole.size == (300, 260)
    a, b = (torch.from_numpy(np.array(i)) for i in (tiled, whole))
    assert 20 < psnr(a, b) < 60  # statistics from the half-size pass: close, not equal
    [auto] = s.stylize([photo])  # fits the default budget: whole, today's pixels
    assert np.array_equal(np.array(auto), np.array(whole))


@pytest.mark.slow
def test_an_openvino_engine_built_from_its_cache_converts_its_statistics_variant(
        checkpoint: Path) -> None:
    """A run whose plain IR is cached builds the engine without the generator (no torch);
    its first tiles parse the checkpoint then, for the statistics IR, once."""
    pytest.importorskip("openvino")
    from animegan_cli import Stylizer

    photo = Image.fromarray(photo_like(300, 260, 6))
    load = dict(weights=checkpoint, size=0, backend="openvino", precision="fp32", threads=1)
    [first] = Stylizer.load(**load).stylize([photo], tile=256)  # converts both IRs
    from animegan_cli.model.weights import engine_cache_dir

    variants = list(engine_cache_dir("openvino").glob("*-stats*"))
    assert variants
    for path in variants:  # the plain IR stays cached, its statistics variant does not
        path.unlink()
    cached = Stylizer.load(**load)
    assert cached.engine.from_cache  # type: ignore[attr-defined]
    [again] = cached.stylize([photo], tile=256)
    assert np.array_equal(np.array(first), np.array(again))


# ----------------------------------------------------------------------------- serve


@pytest.mark.slow
def test_serve_styles_an_upload_over_its_budget_in_tiles(checkpoint: Path,
                                                         tmp_path: Path) -> None:
    from tests.test_serve import Server, photo_bytes

    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    upload = {"files": ("big.png", photo_bytes(400, 300, fmt="PNG"))}
    for tile, status in (("auto", 200), ("off", 413)):
        server = Server(checkpoint, "--size", "0", "--max-memory", "850M", "--tile", tile,
                        env=env)
        try:
            reply = server.client.post("/animeify", files=upload)
        finally:
            server.stop()
        assert reply.status_code == status, reply.text
        if status == 200:
            with Image.open(io.BytesIO(reply.content)) as styled:
                assert styled.size == (400, 300)
        else:  # refused as before tiles: the native server's size the budget holds
            assert "over this server's --max-size of 256" in reply.json()["detail"]
