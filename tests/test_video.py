"""Video in, video out: clips made here with PyAV go through convert and come out styled."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.media import video
from animegan_cli.media.inputs import find_inputs
from animegan_cli.pipeline.convert import ConvertOptions, convert
from animegan_cli.pipeline.report import build_report
from animegan_cli.pipeline.results import FileResult
from animegan_cli.records.manifest import find_provenance
from animegan_cli.stylizer import Stylizer
from tests.conftest import make_image, photo_like

av = pytest.importorskip("av")
REPO = Path(__file__).resolve().parents[1]
TIME_BASE = Fraction(1, 90000)


def make_clip(path: Path, frames: int = 6, width: int = 48, height: int = 32, *,
              vfr: bool = False, audio: bool = True, rotation: int = 0,
              fmt: str | None = None, subtitles: tuple[tuple[int, str], ...] = ()) -> Path:
    """Write a clip: smooth moving frames at 30 fps (vfr: every third frame lasts twice as
    long), optional AAC audio (a tone), optional display rotation, optional SubRip lines
    ((start in ms, text), each muxed after the frame it starts in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.time_base = TIME_BASE
        stream.options = {"crf": "10"}
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=44100) if audio else None
        sub = _subtitle_stream(out) if subtitles else None
        pts = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(photo_like(width, height, seed=i), format="rgb24")
            frame.pts, frame.time_base = pts, TIME_BASE
            out.mux(stream.encode(frame))
            for start, text in subtitles:
                if pts <= start * 90 < pts + 3000:
                    _mux_line(out, sub, start, text)
            pts += 6000 if vfr and i % 3 == 2 else 3000
        out.mux(stream.encode())
        if sound is not None:
            mux_tone(out, sound, math.ceil(pts / 90000 * 44100 / 1024))
    return path


def mux_tone(out, sound, packets: int) -> None:  # a PyAV output container, its audio stream
    """``packets`` frames of 1024 samples of a sine tone at 44.1 kHz, encoded and muxed."""
    for i in range(packets):
        tone = np.sin(np.arange(i * 1024, (i + 1) * 1024) * 0.05).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, i * 1024
        out.mux(sound.encode(frame))
    out.mux(sound.encode())


# Text encoders need an ASS header, even for SubRip (FFmpeg converts through ASS).
ASS_HEADER = (b"[Script Info]\r\nScriptType: v4.00+\r\n\r\n[V4+ Styles]\r\nFormat: Name, "
              b"Fontname, Fontsize\r\nStyle: Default,Arial,16\r\n\r\n[Events]\r\nFormat: "
              b"Layer, Start, End, Style, Text\r\n")


def _subtitle_stream(out):
    sub = out.add_stream("subrip")
    sub.time_base = sub.codec_context.time_base = Fraction(1, 1000)
    sub.codec_context.subtitle_header = ASS_HEADER
    return sub


def _mux_line(out, sub, start: int, text: str) -> None:
    packet = av.Packet(text.encode())
    packet.pts = packet.dts = start
    packet.duration, packet.time_base, packet.stream = 80, Fraction(1, 1000), sub
    out.mux(packet)


def subtitle_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    """(pts in seconds, text) of every subtitle packet."""
    with av.open(str(path)) as clip:
        if not clip.streams.subtitles:
            return []
        return [(p.pts * p.time_base, bytes(p)) for p in clip.demux(clip.streams.subtitles[0])
                if p.size]


def video_pts(path: Path) -> list[Fraction]:
    """Each decoded frame's time, in seconds (exact fractions), in presentation order."""
    with av.open(str(path)) as clip:
        return sorted(f.pts * f.time_base for f in clip.decode(video=0))


def audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    """(pts in seconds, bytes) of every audio packet."""
    with av.open(str(path)) as clip:
        if not clip.streams.audio:
            return []
        stream = clip.streams.audio[0]
        return [(p.pts * p.time_base, bytes(p)) for p in clip.demux(stream) if p.size]


def decoded_frames(path: Path) -> list:
    with av.open(str(path)) as clip:
        return [video.upright(f) for f in clip.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def run(inputs: list[Path], out: Path, checkpoint: Path, **flags: object):
    options = ConvertOptions(inputs=[str(p) for p in inputs], output=out, weights=checkpoint,
                             size=64, num_workers=0, backend="torch", precision="fp32",
                             **flags)
    results = []
    from animegan_cli.pipeline.results import ConvertEvents

    summary = convert(options, ConvertEvents(on_result=results.append))
    return summary, results


# --- fast tests (tiny clips) ---------------------------------------------------------


def test_folder_walk_finds_video_suffixes_and_marks_them(tmp_path):
    make_clip(tmp_path / "in" / "a.mp4", frames=2, audio=False)
    (tmp_path / "in" / "b.MKV").write_bytes(b"x")
    (tmp_path / "in" / "c.txt").write_bytes(b"x")
    found = find_inputs([tmp_path / "in"]).files
    assert [(f.relative.name, f.kind) for f in found] == [("a.mp4", "video"), ("b.MKV", "video")]


def test_a_named_clip_without_a_video_suffix_is_a_video_when_pyav_opens_it(tmp_path):
    clip = make_clip(tmp_path / "clip.bin", frames=2, audio=False, fmt="matroska")
    (tmp_path / "notes.bin").write_bytes(b"not a video at all")
    found = find_inputs([clip, tmp_path / "notes.bin"]).files
    assert [f.kind for f in found] == ["video", "image"]


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_frames_are_scaled_by_ffmpeg_as_pillow_would_and_turned_upright(tmp_path, rotation):
    clip = make_clip(tmp_path / "r.mp4", frames=1, width=96, height=64, audio=False,
                     rotation=rotation)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
        whole = video.upright(frame)
        scaled = video.scaled_upright(frame, lambda w, h: (w // 2, h // 2))
    assert scaled.size == whole.size  # the upright size, for --keep-size
    assert scaled.image.size == (whole.width // 2, whole.height // 2)
    pillow = whole.resize(scaled.image.size, Image.Resampling.BICUBIC)
    assert psnr(np.asarray(scaled.image), np.asarray(pillow)) >= 30


def test_output_names_follow_video_format(tmp_path):
    assert video.output_extension(Path("a.MOV"), "same") == ".mov"
    assert video.output_extension(Path("a.avi"), "same") == ".mkv"  # AVI holds no record
    assert video.output_extension(Path("a.mp4"), "webm") == ".webm"


def test_a_short_clip_converts_with_its_frames_timestamps_audio_and_record(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "in" / "clip.mp4", frames=5, vfr=True)
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint)
    out = tmp_path / "out" / "clip.mp4"
    assert summary.converted == 1 and results[0].frames == 5
    assert video_pts(out) == video_pts(clip)
    assert audio_packets(out) == audio_packets(clip)
    record = find_provenance(out)
    assert record is not None and record.settings["video_crf"] == video.DEFAULT_CRF
    [entry] = build_report(summary, None, 0)["videos"]
    assert entry["frames"] == 5 and entry["output"] == str(out)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".animegan-tmp-")]


def test_second_run_skips_an_up_to_date_video_and_crf_change_redoes_it(tmp_path, checkpoint):
    make_clip(tmp_path / "in" / "clip.mkv", frames=2, audio=False, fmt="matroska")
    run([tmp_path / "in"], tmp_path / "out", checkpoint)
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint)
    assert summary.skipped == 1 and results[0].reason == "up to date"
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint, video_crf=30)
    assert summary.converted == 1 and "video_crf 18 -> 30" in results[0].reason


def test_not_a_video_fails_alone_with_one_line(tmp_path, checkpoint):
    make_clip(tmp_path / "in" / "good.mp4", frames=2, audio=False)
    (tmp_path / "in" / "bad.mp4").write_bytes(b"\x00" * 1000)
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint)
    failed = {r.input.name: r.error for r in results if r.status == "failed"}
    assert summary.converted == 1 and list(failed) == ["bad.mp4"]
    assert failed["bad.mp4"].startswith("not a video PyAV can read (") and "\n" not in failed[
        "bad.mp4"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) \
        == ["good.mp4"]


def test_dry_run_lists_frames_and_duration_from_the_header(tmp_path, checkpoint):
    make_clip(tmp_path / "in" / "clip.mp4", frames=9, audio=False)
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "in"), "-o",
                                       str(tmp_path / "out"), "--weights", str(checkpoint),
                                       "--dry-run", "--json"])
    record = json.loads(result.stdout.splitlines()[0])
    assert record["status"] == "would-convert" and record["frames"] == 9
    assert record["duration"] == pytest.approx(0.3, abs=1 / 30)
    assert not (tmp_path / "out").exists()


def test_video_flags_are_checked(tmp_path, checkpoint):
    result = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "o"),
                                       "--video-crf", "60"])
    assert result.exit_code == 2 and "--video-crf must be between 0 and 51" in result.output


# --- slow tests ----------------------------------------------------------------------


@pytest.mark.slow
def test_phone_like_vfr_clip_keeps_frames_timestamps_audio_and_styles_each_frame(
    tmp_path, checkpoint
):
    clip = make_clip(tmp_path / "phone.mp4", frames=24, width=96, height=64, vfr=True)
    summary, results = run([clip], tmp_path / "out", checkpoint, video_crf=4,
                           frames_per_batch=4)
    out = tmp_path / "out" / "phone.mp4"
    assert results[0].frames == 24
    assert video_pts(out) == video_pts(clip)
    assert audio_packets(out) == audio_packets(clip)
    with av.open(str(out)) as a, av.open(str(clip)) as b:
        span = 1 / float(b.streams.video[0].average_rate)
        assert abs(a.duration - b.duration) / 1e6 <= span
    stylizer = Stylizer.load(weights=checkpoint, size=64, backend="torch", precision="fp32")
    expected = stylizer.stylize(decoded_frames(clip), batch_size=1)
    for got, want in zip(decoded_frames(out), expected, strict=True):
        assert got.size == want.size
        assert psnr(np.asarray(got), np.asarray(want)) >= 30


@pytest.mark.slow
def test_odd_sizes_come_out_even_and_keep_size_keeps_the_input_size(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "odd.mkv", frames=3, width=51, height=37, audio=False,
                     fmt="matroska")
    run([clip], tmp_path / "out", checkpoint, keep_size=True)
    [frame] = decoded_frames(tmp_path / "out" / "odd.mkv")[:1]
    assert frame.size == (50, 36)  # yuv420p: the last odd column and row are dropped


@pytest.mark.slow
def test_rotation_is_applied_to_the_pixels(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "rot.mp4", frames=3, width=64, height=32, audio=False,
                     rotation=90)
    assert video.probe(clip).width == 32  # the header says it displays portrait
    run([clip], tmp_path / "out", checkpoint)
    with av.open(str(tmp_path / "out" / "rot.mp4")) as out:
        frame = next(out.decode(video=0))
        assert (frame.width, frame.height) == (32, 64) and frame.rotation == 0


@pytest.mark.slow
def test_webm_reencodes_aac_to_opus_and_says_so(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "clip.mp4", frames=6)
    messages: list[str] = []
    from animegan_cli.pipeline.results import ConvertEvents

    options = ConvertOptions(inputs=[str(clip)], output=tmp_path / "out", weights=checkpoint,
                             size=64, num_workers=0, backend="torch", video_format="webm")
    convert(options, ConvertEvents(on_message=messages.append))
    out = tmp_path / "out" / "clip.webm"
    with av.open(str(out)) as result:
        names = sorted(s.codec_context.name for s in result.streams)
    assert names == ["opus", "vp9"]
    assert any("audio aac re-encoded to libopus" in m for m in messages)
    assert len(video_pts(out)) == 6 and find_provenance(out) is not None


def test_subtitles_are_copied_into_mkv_and_left_out_of_mp4_saying_so(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "talk.mkv", audio=False, fmt="matroska",
                     subtitles=((0, "hello"), (100, "world")))
    assert subtitle_packets(clip) == [(0, b"hello"), (Fraction(1, 10), b"world")]
    messages: list[str] = []
    from animegan_cli.pipeline.results import ConvertEvents

    for fmt in ("same", "mp4"):
        options = ConvertOptions(inputs=[str(clip)], output=tmp_path / fmt, weights=checkpoint,
                                 size=64, num_workers=0, backend="torch", video_format=fmt)
        convert(options, ConvertEvents(on_message=messages.append))
    assert subtitle_packets(tmp_path / "same" / "talk.mkv") == subtitle_packets(clip)
    assert len(video_pts(tmp_path / "same" / "talk.mkv")) == 6
    assert subtitle_packets(tmp_path / "mp4" / "talk.mp4") == []
    assert len(video_pts(tmp_path / "mp4" / "talk.mp4")) == 6
    assert any("subtitle stream 1 (srt) left out: mp4 cannot hold it" in m for m in messages)


@pytest.mark.slow
def test_truncated_clip_fails_unless_kept_partial(tmp_path, checkpoint):
    whole = make_clip(tmp_path / "whole.mkv", frames=60, audio=False, fmt="matroska")
    cut = tmp_path / "in" / "cut.mkv"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    summary, results = run([cut], tmp_path / "out", checkpoint)
    assert summary.failed == 1 and "cut short" in results[0].error
    assert not (tmp_path / "out" / "cut.mkv").exists()
    summary, results = run([cut], tmp_path / "out", checkpoint, keep_partial_video=True)
    assert summary.converted == 1 and 0 < results[0].frames < 60
    assert len(video_pts(tmp_path / "out" / "cut.mkv")) == results[0].frames


@pytest.mark.slow
def test_inspect_reads_the_record_of_a_video(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    run([clip], tmp_path / "out", checkpoint)
    (tmp_path / "out" / ".animegan-manifest.jsonl").unlink(missing_ok=True)
    result = CliRunner().invoke(main, ["inspect", "--json", str(tmp_path / "out" / "clip.mp4")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["video_crf"] == video.DEFAULT_CRF


@pytest.mark.slow
def test_sigterm_during_a_clip_leaves_no_temp_file_and_no_output(tmp_path, checkpoint):
    clip = make_clip(tmp_path / "long.mp4", frames=300, width=96, height=64)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "animegan_cli", "convert", str(clip), "-o", str(out),
         "--weights", str(checkpoint), "--size", "256", "--backend", "torch"],
        env=env, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the clip's temp file is being written
        if out.exists() and any(p.name.startswith(".animegan-tmp-") for p in out.iterdir()):
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never started writing the clip")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr.decode()
    assert sorted(p.name for p in out.iterdir() if p.name != ".animegan") in (
        [], [".animegan-manifest.jsonl"])


def test_faces_crop_leaves_clips_failed_alone(tmp_path, checkpoint):
    pytest.importorskip("cv2")
    from animegan_cli.faces.detect import FaceSettings
    from animegan_cli.faces.frames import FACES_CROP_ON_CLIP

    make_clip(tmp_path / "in" / "clip.mp4", frames=2, audio=False)
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint,
                           faces=FaceSettings("crop"))
    assert [(r.status, r.error) for r in results] == [("failed", FACES_CROP_ON_CLIP)]


def test_without_pyav_a_clip_fails_alone_saying_which_extra(tmp_path, checkpoint, monkeypatch):
    make_clip(tmp_path / "in" / "clip.mp4", frames=2, audio=False)
    make_image(tmp_path / "in" / "a.png")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    summary, results = run([tmp_path / "in"], tmp_path / "out", checkpoint)
    failed = {r.input.name: r.error for r in results if r.status == "failed"}
    assert summary.converted == 1 and failed == {"clip.mp4": video.VIDEO_EXTRA}


def test_the_frame_bar_counts_a_clips_frames_and_goes_when_it_is_done(capsys):
    from animegan_cli.cli.progress import FrameBar

    bars = FrameBar(disable=False)
    reported: list[FileResult] = []
    on_result = bars.closing(reported.append)
    bars.update(Path("clip.mp4"), 4, 10)
    assert bars.bar is not None and (bars.bar.n, bars.bar.total) == (4, 10)
    on_result(FileResult(Path("clip.mp4"), None, "converted"))
    assert bars.bar is None and len(reported) == 1
    assert "frame" in capsys.readouterr().err
