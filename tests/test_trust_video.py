"""Issue 22, video: a bad clip fails alone, budgets hold for clips, summaries say clips.

Items: 2 (PCM audio into MP4/WebM, decreasing timestamps, the per-clip failure boundary),
14 (--max-memory and --max-pixels for clips), 18 (summary wording), and the "Smaller:"
cases (a second video stream, a PNG named .mp4, a killed clip's .part).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.media import video
from tests.conftest import make_image, photo_like
from tests.test_video import REPO, make_clip

av = pytest.importorskip("av")
TIME_BASE = Fraction(1, 90000)


# --- clips made here ------------------------------------------------------------------


def _video_stream(out, width: int = 64, height: int = 48, **options: str):
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = TIME_BASE
    stream.options = {"crf": "10", **options}
    return stream


def _encode_frames(stream, count: int, width: int = 64, height: int = 48) -> list:
    packets = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(photo_like(width, height, seed=i), format="rgb24")
        frame.pts, frame.time_base = i * 3000, TIME_BASE
        packets += stream.encode(frame)
    return packets + stream.encode()


def pcm_clip(path: Path, rate: int = 48000, layout: str = "stereo", frames: int = 4) -> Path:
    """A Matroska clip with PCM audio (Matroska stores only the channel count)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska") as out:
        stream = _video_stream(out)
        sound = out.add_stream("pcm_s16le", rate=rate, layout=layout)
        for packet in _encode_frames(stream, frames):
            out.mux(packet)
        channels = sound.codec_context.layout.nb_channels
        rng = np.random.default_rng(0)
        for start in range(0, int(frames / 30 * rate), 1024):
            samples = rng.integers(-1000, 1000, (1, 1024 * channels), dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


def backwards_clip(path: Path, pts: tuple[int, ...] = (0, 3000, 9000, 6000, 12000)) -> Path:
    """H.264 without B-frames whose decoded frames' timestamps go back (9000, then 6000)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska") as out:
        stream = _video_stream(out, bf="0")
        for when, packet in zip(pts, _encode_frames(stream, len(pts))):
            packet.pts = max(when, packet.dts)  # decode order stays increasing (dts)
            out.mux(packet)
    return path


def lying_clip(path: Path, real: tuple[int, int] = (640, 480), frames: int = 3) -> Path:
    """MJPEG whose header says 64x48; every frame after the first is ``real``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        stream.time_base = tb
        big = av.CodecContext.create("mjpeg", "w")
        big.width, big.height, big.pix_fmt, big.time_base = *real, "yuvj420p", tb
        for i in range(frames):
            width, height = (64, 48) if i == 0 else real
            frame = av.VideoFrame.from_ndarray(photo_like(width, height, seed=i),
                                               format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i * 33, tb
            for packet in (stream if i == 0 else big).encode(frame):
                packet.stream, packet.time_base = stream, tb
                packet.pts = packet.dts = i * 33
                packet.duration = 33
                out.mux(packet)
    return path


def two_video_streams(path: Path) -> Path:
    """A Matroska clip with two H.264 streams (a camera's second angle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska") as out:
        first, second = _video_stream(out), _video_stream(out)
        for packet in _encode_frames(first, 3) + _encode_frames(second, 3):
            out.mux(packet)
    return path


# --- helpers -----------------------------------------------------------------------------


def convert(inputs: list[Path], out: Path, checkpoint: Path, *flags: str):
    """``animegan convert`` in this process: (exit code, stderr, the --report's JSON)."""
    report = out.parent / f"{out.name}-report.json"
    args = ["convert", *map(str, inputs), "-o", str(out), "--weights", str(checkpoint),
            "--size", "64", "--backend", "torch", "--precision", "fp32", "--num-workers", "0",
            "--report", str(report), *flags]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stderr, json.loads(report.read_text())


def failure_lines(stderr: str) -> dict[str, str]:
    """{input name: its one error line}."""
    lines = [line for line in stderr.splitlines() if line.startswith("animegan: error: ")]
    found = {}
    for line in lines:
        path, _, reason = line.removeprefix("animegan: error: ").partition(": ")
        found[Path(path).name] = reason
    return found


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.name.endswith(".part"))


def streams_of(path: Path) -> list[tuple[str, str, int]]:
    with av.open(str(path)) as clip:
        return sorted((s.type, s.codec_context.name, getattr(s, "channels", 0) or 0)
                      for s in clip.streams)


# --- item 2 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_item2_pcm_audio_into_mp4_becomes_aac_and_every_clip_converts(tmp_path, checkpoint):
    src = tmp_path / "in"
    pcm_clip(src / "a_48k.mkv")
    pcm_clip(src / "b_44k_51.mkv", rate=44100, layout="5.1")
    pcm_clip(src / "c_192k.mkv", rate=192000)
    make_clip(src / "d_good.mp4", frames=2, audio=False)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint, "--video-format", "mp4")
    assert code == 0, stderr
    assert report["counts"]["converted"] == 4 and report["counts"]["failed"] == 0
    for name, channels in (("a_48k", 2), ("b_44k_51", 6), ("c_192k", 2)):
        assert streams_of(tmp_path / "out" / f"{name}.mp4") == [
            ("audio", "aac", channels), ("video", "h264", 0)]
        assert f"{name}.mkv: audio pcm_s16le re-encoded to aac: mp4 cannot hold" in stderr
    assert leftovers(tmp_path / "out") == []


def test_item2_sixteen_channel_pcm_into_webm_is_left_out_with_one_line(tmp_path, checkpoint):
    clip = pcm_clip(tmp_path / "in" / "many.mkv", layout="hexadecagonal")
    code, stderr, report = convert([clip], tmp_path / "out", checkpoint, "--video-format", "webm")
    assert code == 0, stderr
    assert report["counts"]["converted"] == 1
    assert streams_of(tmp_path / "out" / "many.webm") == [("video", "vp9", 0)]
    [line] = [x for x in stderr.splitlines() if "left out" in x]
    assert "audio stream 1 (pcm_s16le, 16 channels, 48000 Hz) left out: webm cannot hold" in line


@pytest.mark.slow
def test_item2_decreasing_timestamps_are_retimed_and_the_clip_converts(tmp_path, checkpoint):
    src = tmp_path / "in"
    backwards_clip(src / "a_back.mkv")
    make_clip(src / "b_good.mp4", frames=2, audio=False)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint, "--video-format", "mp4")
    assert code == 0, stderr
    assert report["counts"]["converted"] == 2
    assert "a_back.mkv: 1 frame(s) had a timestamp not after the frame before" in stderr
    with av.open(str(tmp_path / "out" / "a_back.mp4")) as out:
        times = [f.pts for f in out.decode(video=0)]
    assert len(times) == 5 and times == sorted(set(times))


def test_item2_any_error_while_muxing_fails_that_clip_alone(tmp_path, checkpoint, monkeypatch):
    src = tmp_path / "in"
    make_clip(src / "a_first.mp4", frames=2, audio=False)
    make_clip(src / "b_second.mp4", frames=3, audio=False)
    make_image(src / "c_photo.png")
    real_flush = video._Job._flush

    def flush(job):  # a muxer error PyAV raises as a plain exception, on the first clip only
        if "a_first" in job.output.name:
            raise RuntimeError("muxer gave up\non two lines")
        real_flush(job)

    monkeypatch.setattr(video._Job, "_flush", flush)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint)
    assert code == 1, stderr
    assert failure_lines(stderr) == {"a_first.mp4": "RuntimeError: muxer gave up on two lines"}
    assert report["counts"]["converted"] == 2 and report["counts"]["failed"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) \
        == ["b_second.mp4", "c_photo.png"]
    assert leftovers(tmp_path / "out") == []


# --- item 14 -----------------------------------------------------------------------------


def test_item14_a_clip_at_size_0_over_the_memory_budget_is_refused_up_front(
    tmp_path, checkpoint
):
    src = tmp_path / "in"
    make_clip(src / "a_big.mp4", frames=2, width=320, height=240, audio=False)
    make_clip(src / "b_small.mp4", frames=2, audio=False)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint, "--size", "0",
                                   "--max-memory", "800M")
    assert code == 1, stderr
    reason = failure_lines(stderr)["a_big.mp4"]
    assert re.fullmatch(r"needs about \d+ MB of memory per frame \(0\.1 MP at the model's "
                        r"size\), more than the budget of 800 MB; use --size \d+ or raise "
                        r"--max-memory", reason), reason
    assert report["counts"]["converted"] == 1 and report["counts"]["failed"] == 1
    assert not (tmp_path / "out" / "a_big.mp4").exists()


def test_item14_no_frame_over_max_pixels_is_scaled_even_when_the_header_lies(
    tmp_path, checkpoint, monkeypatch
):
    src = tmp_path / "in"
    lying_clip(src / "a_lies.mkv")  # the header: 64x48; the frames after the first: 640x480
    make_clip(src / "b_honest_big.mp4", frames=2, width=640, height=480, audio=False)
    make_clip(src / "c_small.mp4", frames=2, audio=False)
    scaled: list[tuple[int, int]] = []
    real_scaled_upright = video.scaled_upright

    def spy(frame, frame_size):
        scaled.append((frame.width, frame.height))
        return real_scaled_upright(frame, frame_size)

    monkeypatch.setattr(video, "scaled_upright", spy)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint,
                                   "--max-pixels", "100000")
    assert code == 1, stderr
    assert max(w * h for w, h in scaled) <= 100_000  # nothing over the limit reached scaling
    failed = failure_lines(stderr)
    assert failed["b_honest_big.mp4"] == (
        "frames are 640x480 (0.3 MP), over the --max-pixels limit of 0.1 MP; not decoded")
    assert "over the --max-pixels limit of 0.1 MP" in failed["a_lies.mkv"]
    assert report["counts"]["converted"] == 1 and report["counts"]["failed"] == 2
    assert (tmp_path / "out" / "c_small.mp4").exists() and leftovers(tmp_path / "out") == []


# --- item 18 -----------------------------------------------------------------------------


@pytest.mark.slow
def test_item18_the_summary_counts_clips_and_frames_per_second_apart_from_images(
    tmp_path, checkpoint
):
    src = tmp_path / "in"
    make_clip(src / "a.mp4", frames=3, audio=False)
    make_clip(src / "b.mp4", frames=2, audio=False)
    code, stderr, _ = convert([src], tmp_path / "clips", checkpoint)
    assert code == 0, stderr
    summary = stderr.splitlines()[-1]
    assert summary.startswith("converted 2 clips, skipped 0, failed 0 in ")
    assert summary.endswith(" frames/s)") and "(5 frames, " in summary and "img/s" not in summary
    make_image(src / "c.png")
    code, stderr, _ = convert([src], tmp_path / "both", checkpoint)
    summary = stderr.splitlines()[-1]
    assert summary.startswith("converted 1 image and 2 clips, skipped 0, failed 0 in ")
    assert " img/s; 5 frames, " in summary and summary.endswith(" frames/s)")


@pytest.mark.slow
def test_item18_ctrl_c_during_a_clip_says_clips_not_converted(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_clip(src / "a_long.mp4", frames=300, width=96, height=64, audio=False)
    make_clip(src / "b_next.mp4", frames=2, audio=False)
    out = tmp_path / "out"
    proc = _start(src, out, checkpoint, "--size", "256")
    _wait_for_part(out, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "animegan: stopped by SIGINT; 2 clip(s) not converted (run again" in stderr


def _start(src: Path, out: Path, checkpoint: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "animegan_cli", "convert", str(src), "-o", str(out),
         "--weights", str(checkpoint), "--backend", "torch", *flags],
        env=env, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_part(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until a clip's temp file is being written
        if out.exists() and leftovers(out):
            time.sleep(0.5)
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never started writing the clip")


# --- smaller -----------------------------------------------------------------------------


def test_smaller_a_second_video_stream_is_left_out_with_one_line(tmp_path, checkpoint):
    clip = two_video_streams(tmp_path / "in" / "two.mkv")
    code, stderr, report = convert([clip], tmp_path / "out", checkpoint)
    assert code == 0, stderr
    assert "two.mkv: video stream 1 (h264) left out: only the first video stream is styled" \
        in stderr
    assert streams_of(tmp_path / "out" / "two.mkv") == [("video", "h264", 0)]


def test_smaller_a_png_named_mp4_fails_with_one_line(tmp_path, checkpoint):
    make_image(tmp_path / "in" / "still.mp4", seed=1, format="PNG")
    make_image(tmp_path / "in" / "photo.png")
    code, stderr, report = convert([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert code == 1, stderr
    assert failure_lines(stderr) == {
        "still.mp4": "a PNG image, not a video; give it its image extension to convert it "
                     "as a photo"}
    assert report["counts"]["converted"] == 1
    assert not (tmp_path / "out" / "still.mp4").exists()


@pytest.mark.slow
def test_smaller_the_first_rerun_removes_the_part_of_a_clip_killed_with_sigkill(
    tmp_path, checkpoint
):
    src = tmp_path / "in"
    make_clip(src / "long.mp4", frames=300, width=96, height=64, audio=False)
    out = tmp_path / "out"
    proc = _start(src, out, checkpoint, "--size", "256")
    _wait_for_part(out, proc)
    proc.kill()  # not waited for yet: a zombie until its parent (this test) reaps it
    make_image(tmp_path / "other" / "a.png")
    try:
        rerun = _start(tmp_path / "other", out, checkpoint, "--size", "64")
        _, stderr = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, stderr
        assert "removed 1 temp file(s) left by an interrupted run" in stderr
        assert leftovers(out) == []
    finally:
        proc.wait()


def test_item2_a_full_disk_while_muxing_still_stops_the_run(tmp_path, checkpoint, monkeypatch):
    src = tmp_path / "in"
    make_clip(src / "a_first.mp4", frames=2, audio=False)
    make_clip(src / "b_second.mp4", frames=3, audio=False)

    def flush(job):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video._Job, "_flush", flush)
    code, stderr, report = convert([src], tmp_path / "out", checkpoint)
    assert code != 0 and "No space left on device" in stderr, stderr
    assert report["counts"]["converted"] == 0 and report["counts"]["not_done"] >= 1
    assert leftovers(tmp_path / "out") == []
