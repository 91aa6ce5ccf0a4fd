"""Video frames/s: `convert` end to end vs the model alone at the frame shape vs the naive way.

One run, on a generated 720p clip with AAC audio (random-weight checkpoint: speed does not
depend on the weights):
- model only: ``Stylizer.run`` on one prepared frame, repeated (batch 1, 2, 4);
- end to end: ``convert`` on the clip (decode, style, encode, audio copied);
- naive: frame by frame on the torch engine in fp32, a silent video written, then the
  audio re-muxed in a second pass (what the popular scripts do);
- peak RSS of end-to-end runs on a 10 s and a 60 s clip (each in a fresh process);
- flicker (not a timing): on a generated static-camera clip with sensor-like noise and a
  slow brightness ramp, the mean absolute difference between consecutive frames of the
  output, against the input's, with ``--video-smoothing off`` and ``stats``; and the
  frames/s of each (model load excluded).

    python benchmarks/video_bench.py --seconds 4 --size 512 --out results.md
    python benchmarks/video_bench.py --flicker-only --size 256 --weights W.pt --out f.md
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegan_cli.media import video  # noqa: E402
from animegan_cli.model.generator import Generator  # noqa: E402
from animegan_cli.pipeline.convert import ConvertOptions, convert  # noqa: E402
from animegan_cli.stylizer import Stylizer  # noqa: E402

FPS = 30


def make_clip(path: Path, seconds: float, width: int = 1280, height: int = 720) -> Path:
    """A moving gradient with noise at 30 fps, and a tone as AAC audio."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        sound = out.add_stream("aac", rate=44100)
        yy, xx = np.mgrid[0:height, 0:width]
        rng = np.random.default_rng(0)
        for i in range(round(seconds * FPS)):
            base = np.stack([(xx + 8 * i) % 256, (yy + 4 * i) % 256, (xx + yy) % 256], -1)
            pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        for i in range(round(seconds * 44100 / 1024) + 1):
            tone = np.sin(np.arange(i * 1024, (i + 1) * 1024) * 0.05).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


def make_flicker_clip(path: Path, frames: int = 90, width: int = 640, height: int = 360,
                      noise: float = 4.0, ramp: float = 0.15, light: bool = False) -> Path:
    """A static camera: one fixed photo-like scene whose brightness rises by ``ramp`` over
    the clip (a slow exposure change), with fresh Gaussian sensor noise of ``noise`` (in
    8-bit levels) every frame; ``light``: a blinking light (the top-left twelfth of the
    frame, dark and bright in turn every 3 frames: a screen, a lamp), the local change that
    moves the whole frame's statistics. Lossless H.264 (qp 0, yuv444p): the noise is kept."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    scene = np.stack([0.5 + 0.4 * np.sin(6 * xx + 2 * yy), 0.45 + 0.35 * np.cos(5 * yy),
                      0.4 + 0.3 * np.sin(4 * (xx - yy))], -1) * 200
    for _ in range(12):  # flat-coloured shapes, as objects in a room
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, height / 4)
        scene[(yy * max(width, height) - cy) ** 2 + (xx * max(width, height) - cx) ** 2
              < r * r] = rng.uniform(30, 220, 3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for i in range(frames):
            gain = 1 - ramp + ramp * i / max(frames - 1, 1)
            pixels = scene * gain + rng.normal(0, noise, scene.shape)
            if light:
                pixels[: height // 3, : width // 4] = 240 if (i // 3) % 2 else 20
            frame = av.VideoFrame.from_ndarray(np.clip(pixels, 0, 255).astype(np.uint8),
                                               format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def frame_steps(path: Path) -> tuple[float, float]:
    """The flicker measure (mean absolute difference between consecutive frames), and its
    global part: the mean absolute change of a frame's mean colour (the pulse statistics
    smoothing is for; the rest is per-pixel noise), both in 8-bit levels."""
    steps, pulses, last = [], [], None
    with av.open(str(path)) as clip:
        for frame in clip.decode(video=0):
            pixels = frame.to_ndarray(format="rgb24").astype(np.float32)
            if last is not None:
                steps.append(float(np.abs(pixels - last).mean()))
                pulses.append(float(np.abs(pixels.mean((0, 1)) - last.mean((0, 1))).mean()))
            last = pixels
    return float(np.mean(steps)), float(np.mean(pulses))


def flicker(weights: Path, folder: Path, size: int, frames: int) -> dict[str, float]:
    """The flicker measure with and without smoothing (lossless output: x264's own noise
    left out), and each run's frames/s."""
    found: dict[str, float] = {"flicker_frames": frames}
    for scene, light in FLICKER_SCENES.items():
        clip = make_flicker_clip(folder / f"{scene}.mp4", frames, light=light)
        found[f"{scene}_input"], found[f"{scene}_pulse_input"] = frame_steps(clip)
        for smoothing in video.VIDEO_SMOOTHING_CHOICES:
            out = folder / f"flicker_{smoothing}"
            summary = convert(ConvertOptions(inputs=[str(clip)], output=out, weights=weights,
                                             size=size, video_crf=0, overwrite=True,
                                             video_smoothing=smoothing))
            [result] = summary.videos
            found[f"{scene}_{smoothing}"], found[f"{scene}_pulse_{smoothing}"] = frame_steps(
                out / clip.name)
            found[f"{scene}_rate_{smoothing}"] = result.frames / result.seconds
    return found


# The flicker clips: the (noise and a brightness ramp), and the same with a
# blinking light, a local change that moves the whole frame's statistics.
FLICKER_SCENES = {"ramp": False, "ramp_light": True}


def model_only(weights: Path, clip: Path, size: int, batch: int, seconds: float = 8.0) -> float:
    """Frames/s of Stylizer.run alone on one frame's shape, batches of ``batch``."""
    stylizer = Stylizer.load(weights=weights, size=size)
    frame = video.first_frames(clip, 1)[0]
    item = stylizer.prepare(frame)
    stylizer.run([item] * batch)  # warm-up (compiles the shape)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        stylizer.run([item] * batch)
        done += batch
    return done / (time.perf_counter() - start)


def end_to_end(weights: Path, clip: Path, out: Path, size: int, batch: int) -> tuple[float, str]:
    """Frames/s of `convert` on the clip (model load excluded), and the engine it used."""
    summary = convert(ConvertOptions(inputs=[str(clip)], output=out, weights=weights, size=size,
                                     frames_per_batch=batch, overwrite=True))
    [result] = summary.videos
    return result.frames / result.seconds, summary.engine


def naive(weights: Path, clip: Path, out: Path, size: int) -> float:
    """Frame by frame, eager torch fp32, silent video written, then audio re-muxed."""
    start = time.perf_counter()
    stylizer = Stylizer.load(weights=weights, size=size, backend="torch", precision="fp32")
    silent = out / "silent.mp4"
    with av.open(str(clip)) as inp, av.open(str(silent), "w") as dst:
        stream = None
        for frame in inp.decode(video=0):
            [styled] = stylizer.stylize([frame.to_image()])
            if stream is None:
                stream = dst.add_stream("libx264", rate=FPS)
                stream.width, stream.height = styled.width // 2 * 2, styled.height // 2 * 2
                stream.pix_fmt = "yuv420p"
            styled = styled.crop((0, 0, stream.width, stream.height))
            dst.mux(stream.encode(av.VideoFrame.from_image(styled)))
        dst.mux(stream.encode())
    frames = _remux_audio(silent, clip, out / "naive.mp4")
    return frames / (time.perf_counter() - start)


def _remux_audio(silent: Path, clip: Path, target: Path) -> int:
    """The second pass of the naive way: video from one file, audio from another."""
    frames = 0
    with av.open(str(silent)) as v, av.open(str(clip)) as a, av.open(str(target), "w") as dst:
        vs = dst.add_stream_from_template(v.streams.video[0])
        aus = dst.add_stream_from_template(a.streams.audio[0])
        for packet in v.demux(v.streams.video[0]):
            if packet.dts is not None:
                packet.stream, frames = vs, frames + 1
                dst.mux(packet)
        for packet in a.demux(a.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = aus
                dst.mux(packet)
    return frames


def peak_rss(weights: Path, seconds: float, size: int, folder: Path) -> float:
    """Peak RSS (MiB) of a fresh process converting a clip of ``seconds``."""
    clip = make_clip(folder / f"rss_{seconds:g}s.mp4", seconds)
    code = (
        "import sys; from pathlib import Path; "
        "from animegan_cli.pipeline.convert import ConvertOptions, convert; "
        f"convert(ConvertOptions(inputs=[{str(clip)!r}], output=Path({str(folder / 'rss')!r}), "
        f"weights=Path({str(weights)!r}), size={size}, overwrite=True)); "
        "from animegan_cli.tools.measure import peak_rss_mb; print(int(peak_rss_mb() * 1024))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def peak_rss_4k(weights: Path, folder: Path, frames: int, max_memory: str) -> dict[str, object]:
    """Peak RSS (MiB) of a fresh process converting a 3840x2160 clip at ``--size 0`` within
    ``--max-memory`` (frames styled in tiles), and what its record says."""
    clip = make_clip(folder / "uhd.mp4", frames / FPS, 3840, 2160)
    out = folder / "uhd_out"
    code = (
        "from pathlib import Path; "
        "from animegan_cli.pipeline.convert import ConvertOptions, convert; "
        "from animegan_cli.pipeline.resources import parse_size; "
        f"s = convert(ConvertOptions(inputs=[{str(clip)!r}], output=Path({str(out)!r}), "
        f"weights=Path({str(weights)!r}), size=0, max_memory=parse_size({max_memory!r}), "
        "overwrite=True)); "
        "from animegan_cli.tools.measure import peak_rss_mb; "
        "print(s.converted, s.failed, int(peak_rss_mb() * 1024))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    converted, failed, rss = done.stdout.split()[-3:]
    record = video.read_record(out / clip.name)
    settings = json.loads(record)["settings"] if record else {}
    return {"uhd_frames": frames, "uhd_max_memory": max_memory, "uhd_converted": int(converted),
            "uhd_rss": int(rss) / 1024, "uhd_tiles": settings.get("tiles"),
            "uhd_tile_stats": settings.get("tile_stats")}


def interleaved(weights: Path, clip: Path, out: Path, args: argparse.Namespace,
                batch: int) -> dict[str, object]:
    """model, e2e, model, e2e, ..., model: each end-to-end run against the mean of the
    model-only runs either side of it, so that a slow or fast spell of a shared VM falls
    on both; the medians over the rounds are reported."""
    models = [model_only(weights, clip, args.size, batch, seconds=3.0)]
    rates, engine = [], ""
    for _ in range(args.rounds):
        rate, engine = end_to_end(weights, clip, out, args.size, batch)
        rates.append(rate)
        models.append(model_only(weights, clip, args.size, batch, seconds=3.0))
    shares = [r / ((models[i] + models[i + 1]) / 2) for i, r in enumerate(rates)]
    return {f"model_only_b{batch}": statistics.median(models),
            f"end_to_end_b{batch}": statistics.median(rates),
            f"share_b{batch}": statistics.median(shares),
            f"shares_b{batch}": shares, "engine": engine}


def main() -> None:
    """Run every measurement once and write the results as Markdown (and JSON beside it)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the 720p clip")
    parser.add_argument("--size", type=int, default=512, help="--size (long side) for the model")
    parser.add_argument("--rss-size", type=int, default=256, help="--size of the RSS runs")
    parser.add_argument("--rounds", type=int, default=3,
                        help="end-to-end runs per batch size, each between model-only runs")
    parser.add_argument("--flicker-only", action="store_true",
                        help="only the flicker measure (not a timing)")
    parser.add_argument("--flicker-frames", type=int, default=90)
    parser.add_argument("--uhd-only", action="store_true",
                        help="only the peak RSS of a 4K clip at --size 0 (not a timing)")
    parser.add_argument("--uhd-frames", type=int, default=3)
    parser.add_argument("--uhd-max-memory", default="2G")
    parser.add_argument("--weights", type=Path, help="a checkpoint (default: random weights)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        weights = args.weights or folder / "random.pt"
        if args.weights is None:
            torch.save(Generator().state_dict(), weights)
        if args.uhd_only:
            found = peak_rss_4k(weights, folder, args.uhd_frames, args.uhd_max_memory)
            args.out.with_suffix(".json").write_text(json.dumps(found, indent=2) + "\n")
            args.out.write_text(_uhd_markdown(found))
            print(args.out.read_text())
            return
        if args.flicker_only:
            found = flicker(weights, folder, args.size, args.flicker_frames)
            args.out.with_suffix(".json").write_text(json.dumps(found, indent=2) + "\n")
            args.out.write_text(_flicker_markdown(found, args))
            print(args.out.read_text())
            return
        clip = make_clip(folder / "clip720.mp4", args.seconds)
        found: dict[str, object] = {"frames": round(args.seconds * FPS), "size": args.size}
        for batch in (1, 2, 4):
            found.update(interleaved(weights, clip, folder / "e2e", args, batch))
        found["naive"] = naive(weights, clip, folder, args.size)
        found["rss_10s"] = peak_rss(weights, 10, args.rss_size, folder)
        found["rss_60s"] = peak_rss(weights, 60, args.rss_size, folder)
        found.update(flicker(weights, folder, args.size, args.flicker_frames))
        found.update(peak_rss_4k(weights, folder, args.uhd_frames, args.uhd_max_memory))
    args.out.with_suffix(".json").write_text(json.dumps(found, indent=2) + "\n")
    args.out.write_text(_markdown(found, args))
    print(args.out.read_text())


def _markdown(found: dict[str, object], args: argparse.Namespace) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    rows = [
        f"| {b} | {found[f'model_only_b{b}']:.2f} | {found[f'end_to_end_b{b}']:.2f} | "
        f"{found[f'share_b{b}']:.0%} | "
        + ", ".join(f"{x:.0%}" for x in found[f"shares_b{b}"])  # type: ignore[attr-defined]
        + " |"
        for b in (1, 2, 4)
    ]
    return "\n".join([
        "# Video: frames/s end to end vs model only vs naive",
        "",
        f"`python benchmarks/video_bench.py --seconds {args.seconds:g} --size {args.size} "
        f"--rss-size {args.rss_size} --rounds {args.rounds} --out {args.out}`",
        "",
        f"CPU: {cpu}; engine: {found['engine']}; a generated 1280x720 30 fps clip of "
        f"{found['frames']} frames with AAC audio, styled at --size {args.size}. "
        f"Per batch size: model only, then {args.rounds} rounds of (end to end, model only); "
        "each end-to-end rate is divided by the mean of the model-only rates either side of "
        "it (its share), and the medians are shown. Compare within this file.",
        "",
        "| frames per batch | model only (frames/s) | end to end (frames/s) | share | "
        "each round |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Naive (frame by frame, torch fp32, silent video then audio re-muxed): "
        f"{found['naive']:.2f} frames/s (model load included).",
        "",
        f"Peak RSS of `convert` on a 720p clip at --size {args.rss_size}: "
        f"10 s clip {found['rss_10s']:.0f} MiB, 60 s clip {found['rss_60s']:.0f} MiB.",
        "",
        _flicker_markdown(found, args, heading=False),
        _uhd_markdown(found),
    ])


def _uhd_markdown(found: dict[str, object]) -> str:
    return (
        f"A 3840x2160 clip of {found['uhd_frames']} frames at --size 0 --max-memory "
        f"{found['uhd_max_memory']}: converted {found['uhd_converted']}, frames in tiles of "
        f"{found['uhd_tiles']} with statistics from {found['uhd_tile_stats']}, peak RSS "
        f"{found['uhd_rss']:.0f} MiB.\n"
    )


def _flicker_markdown(found: dict[str, object], args: argparse.Namespace,
                      heading: bool = True) -> str:
    weights = args.weights or "random weights (seed 0)"
    lines = ["# Video: flicker with and without --video-smoothing", ""] if heading else []
    return "\n".join([
        *lines,
        f"Flicker: static-camera 640x360 clips of {found['flicker_frames']} frames (fresh "
        "Gaussian noise of 4 levels each frame, brightness rising 15% over the clip; "
        "ramp_light adds a light blinking every 3 frames in the top-left twelfth), "
        f"styled at --size {args.size} with {weights}, lossless output (--video-crf 0): "
        "the mean absolute difference between consecutive frames (8-bit levels), and in "
        "brackets frames/s end to end (model load excluded; a timing only on a quiet "
        "machine):",
        "",
        *_smoothing_table(found, "", rates=True),
        "",
        "Its global part, the pulse: the mean absolute change of a frame's mean colour "
        "between consecutive frames (8-bit levels):",
        "",
        *_smoothing_table(found, "pulse_", rates=False),
        "",
    ])


def _smoothing_table(found: dict[str, object], measure: str, rates: bool) -> list[str]:
    """A clip per row; the input's and each --video-smoothing's ``measure``."""
    choices = video.VIDEO_SMOOTHING_CHOICES
    rows = ["| clip | input | " + " | ".join(f"--video-smoothing {s}" for s in choices) + " |",
            "|---|---|" + "---|" * len(choices)]
    for scene in FLICKER_SCENES:
        cells = [f"{found[f'{scene}_{measure}{s}']:.3f}"
                 + (f" ({found[f'{scene}_rate_{s}']:.2f})" if rates else "") for s in choices]
        rows.append(f"| {scene} | {found[f'{scene}_{measure}input']:.3f} | "
                    + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    main()
