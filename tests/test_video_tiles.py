"""Clips over the memory budget (a 4K clip at --size 0): frames styled in tiles (issue 24)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from animegan_cli.engines import tiling
from animegan_cli.pipeline.resources import parse_size
from animegan_cli.records.manifest import find_provenance
from tests.test_tiles import convert
from tests.test_video import decoded_frames, make_clip, psnr, video_pts

av = pytest.importorskip("av")


@pytest.mark.slow
def test_a_clip_over_the_budget_converts_in_tiles_and_is_refused_with_tile_off(
        tmp_path: Path, checkpoint: Path) -> None:
    # 400x300 frames at --size 0 need more than 850M whole (tests/test_tiles.py's image).
    clip = make_clip(tmp_path / "in" / "big.mp4", frames=2, width=400, height=300)
    base = [str(clip), "--weights", str(checkpoint), "--backend", "torch", "--precision",
            "fp32", "--size", "0", "--video-crf", "0"]
    code, lines = convert([*base, "-o", str(tmp_path / "off"), "--max-memory", "850M",
                           "--tile", "off"])
    assert code == 1 and lines[0]["status"] == "failed"
    assert "more than the budget" in lines[0]["error"]
    assert not (tmp_path / "off" / "big.mp4").exists()

    out = tmp_path / "tiled" / "big.mp4"
    code, lines = convert([*base, "-o", str(out.parent), "--max-memory", "850M"])
    assert code == 0 and lines[0]["status"] == "converted", lines
    assert video_pts(out) == video_pts(clip)
    record = find_provenance(out)
    assert record is not None
    # The encoder's frames leave a clip's tiles less room than an image's of the same size.
    image = tiling.plan_tiles(400, 300, "auto", parse_size("850M"), "fp32")
    assert image is not None and record.settings["tile_stats"] == "200x150"
    assert int(str(record.settings["tiles"]).removesuffix("px")) < image.tile
    # Whole frames (a budget they fit) against tiles with statistics from the half-size pass.
    whole = tmp_path / "whole" / "big.mp4"
    code, lines = convert([*base, "-o", str(whole.parent), "--max-memory", "4G"])
    assert code == 0 and "tiles" not in find_provenance(whole).settings  # type: ignore[union-attr]
    tiled_frames, whole_frames = decoded_frames(out), decoded_frames(whole)
    assert len(tiled_frames) == len(whole_frames) == 2
    for got, want in zip(tiled_frames, whole_frames):
        assert got.size == want.size == (400, 300)
        assert psnr(np.asarray(got), np.asarray(want)) >= 30


@pytest.mark.slow
def test_a_tiled_clip_is_smoothed_with_each_frames_smaller_pass(
        tmp_path: Path, checkpoint: Path) -> None:
    clip = make_clip(tmp_path / "in" / "big.mp4", frames=2, width=400, height=300)
    out = tmp_path / "out"
    code, lines = convert([str(clip), "--weights", str(checkpoint), "--backend", "torch",
                           "--precision", "fp32", "--size", "0", "--max-memory", "850M",
                           "--video-smoothing", "stats", "-o", str(out)])
    assert code == 0 and lines[0]["status"] == "converted", lines
    settings = find_provenance(out / "big.mp4").settings  # type: ignore[union-attr]
    assert settings["video_smoothing"] == "stats" and "tiles" in settings
    assert video_pts(out / "big.mp4") == video_pts(clip)
