"""--video-smoothing stats: a clip's normalisation statistics smoothed from frame to frame."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.core.errors import UsageError
from animegan_cli.pipeline.convert import ConvertOptions, convert
from animegan_cli.records.manifest import find_provenance
from animegan_cli.runners.clip_smoothing import CUT_DISTANCE, cut_distance, thumbnail
from tests.conftest import photo_like
from tests.test_video import audio_packets, decoded_frames, mux_tone, video_pts

av = pytest.importorskip("av")
TIME_BASE = Fraction(1, 90000)


def make_static_clip(path: Path, frames: int = 16, width: int = 64, height: int = 36, *,
                     cut_at: int | None = None, audio: bool = True) -> Path:
    """A static camera (benchmarks/video_bench.py's flicker clip, small): a fixed scene,
    fresh sensor noise each frame, brightness rising 15% over the clip, and a flickering
    lamp (the top-left twelfth, on or off at random each frame: a local change that moves
    the frame's statistics); from ``cut_at`` on, another shot (a cut). Lossless H.264."""
    rng = np.random.default_rng(3)
    scene = photo_like(width, height, seed=11).astype(np.float64)
    scenes = [scene, scene[::-1, ::-1, ::-1]]  # another shot: colours and layout swapped
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.time_base, stream.options = TIME_BASE, {"qp": "0"}
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i in range(frames):
            scene = scenes[int(cut_at is not None and i >= cut_at)]
            pixels = scene * (0.85 + 0.15 * i / (frames - 1)) + rng.normal(0, 4, scene.shape)
            pixels[: height // 3, : width // 4] = 240 if rng.random() < 0.5 else 20
            frame = av.VideoFrame.from_ndarray(np.clip(pixels, 0, 255).astype(np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = i * 3000, TIME_BASE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            mux_tone(out, sound, frames * 44100 // 30 // 1024)
    return path


def mean_abs_step(path: Path) -> float:
    """The flicker measure: mean absolute difference between consecutive frames."""
    frames = [np.asarray(f, np.float32) for f in decoded_frames(path)]
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(frames, frames[1:])]))


def styled(clip: Path, out: Path, checkpoint: Path, smoothing: str, size: int = 64) -> Path:
    """The clip styled losslessly (--video-crf 0: x264's own noise left out)."""
    summary = convert(ConvertOptions(inputs=[str(clip)], output=out, weights=checkpoint,
                                     size=size, num_workers=0, backend="torch",
                                     precision="fp32", video_crf=0,
                                     video_smoothing=smoothing))
    assert summary.converted == 1
    return out / clip.name


def test_video_smoothing_is_checked(tmp_path, checkpoint):
    with pytest.raises(UsageError, match="--video-smoothing must be one of off, stats"):
        convert(ConvertOptions(inputs=[str(tmp_path)], output=tmp_path / "o",
                               weights=checkpoint, video_smoothing="ema"))


def test_a_cut_changes_most_blocks_and_noise_a_fade_or_a_light_does_not():
    import torch

    rng = np.random.default_rng(0)
    scene = photo_like(64, 36, seed=1).astype(np.float64)

    def frame(pixels, light=None):
        pixels = pixels + rng.normal(0, 4, pixels.shape)
        if light is not None:
            pixels[:12, :16] = light
        clipped = np.clip(pixels, 0, 255).astype(np.uint8)
        return thumbnail(torch.from_numpy(clipped).permute(2, 0, 1))

    first = frame(scene, light=20)
    for same_shot in (frame(scene, 20), frame(scene * 1.05, 20), frame(scene, light=240)):
        assert cut_distance(first, same_shot) < CUT_DISTANCE / 2
    # Another shot with the same colours (the histogram is the same), or the same layout in
    # other colours: cuts all the same.
    assert cut_distance(first, frame(scene[::-1, ::-1])) > CUT_DISTANCE
    assert cut_distance(first, frame(255 - scene)) > CUT_DISTANCE


@pytest.mark.slow
def test_smoothing_lowers_flicker_and_keeps_frames_timestamps_and_audio(tmp_path, checkpoint):
    # 256 px wide: the lamp is farther from most of the frame than the generator's reach
    # (52 px), so only the statistics carry its flicker there (on a 64 px frame the lamp's
    # reach covers the frame, and smoothing has little to take away).
    clip = make_static_clip(tmp_path / "in" / "static.mp4", frames=10, width=256, height=144)
    off = styled(clip, tmp_path / "off", checkpoint, "off", size=256)
    on = styled(clip, tmp_path / "on", checkpoint, "stats", size=256)
    assert mean_abs_step(on) < mean_abs_step(off) < mean_abs_step(clip)
    assert video_pts(on) == video_pts(off) == video_pts(clip)
    assert audio_packets(on) == audio_packets(clip)
    record = find_provenance(on)
    assert record is not None and record.settings["video_smoothing"] == "stats"
    assert "video_smoothing" not in find_provenance(off).settings  # as before the option


@pytest.mark.slow
def test_a_scene_cut_starts_the_average_again(tmp_path, checkpoint):
    clip = make_static_clip(tmp_path / "in" / "cut.mp4", frames=12, cut_at=7, audio=False)
    off = [np.asarray(f, np.float32)
           for f in decoded_frames(styled(clip, tmp_path / "off", checkpoint, "off"))]
    on = [np.asarray(f, np.float32)
          for f in decoded_frames(styled(clip, tmp_path / "on", checkpoint, "stats"))]
    assert len(on) == len(off) == 12
    # The first frame of each scene is its own, unsmoothed result; the ones after are not.
    for first in (0, 7):
        assert np.abs(on[first] - off[first]).max() <= 1
        assert np.abs(on[first + 4] - off[first + 4]).mean() > 0.3


@pytest.mark.slow
def test_changing_video_smoothing_makes_the_clip_stale(tmp_path, checkpoint):
    make_static_clip(tmp_path / "in" / "clip.mp4", frames=3, audio=False)
    args = ["convert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights",
            str(checkpoint), "--size", "64", "--backend", "torch", "--precision", "fp32",
            "--json"]
    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, [*args, "--video-smoothing", "off"])
    assert '"skipped"' in again.output and '"converted"' not in again.output
    smoothed = runner.invoke(main, [*args, "--video-smoothing", "stats"])
    assert smoothed.exit_code == 0, smoothed.output
    assert '"converted"' in smoothed.output and "video_smoothing None -> stats" in smoothed.output
    same = runner.invoke(main, [*args, "--video-smoothing", "stats"])
    assert '"skipped"' in same.output and '"converted"' not in same.output


@pytest.mark.slow
def test_an_engine_without_statistics_fails_each_clip_alone(tmp_path, checkpoint):
    pytest.importorskip("onnxruntime")
    clip = make_static_clip(tmp_path / "in" / "clip.mp4", frames=2, audio=False)
    from animegan_cli.pipeline.results import ConvertEvents

    results = []
    summary = convert(ConvertOptions(inputs=[str(clip)], output=tmp_path / "out",
                                     weights=checkpoint, size=64, num_workers=0,
                                     backend="onnxruntime", video_smoothing="stats"),
                      ConvertEvents(on_result=results.append))
    [result] = results
    assert result.status == "failed" and summary.failed == 1
    assert "--video-smoothing stats needs an engine that takes normalisation" in result.error
    assert not (tmp_path / "out" / "clip.mp4").exists()
