"""Issue 23 item 3, one styling loop: the stages (faces, reuse-similar) and clips under --ray,
and --faces paste on clips; each compared with a plain run's decoded pixels, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from tests.conftest import make_image

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's runs (start-up is slow and memory-heavy)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _convert(src: Path, out: Path, checkpoint: Path, *extra: str, code: int = 0) -> list[dict]:
    """A CLI run (--json) that exits with ``code``; returns its result lines."""
    args = ["convert", str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "64",
            "--backend", "torch", "--precision", "fp32", "--threads", "1", "--json", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _pixels(out: Path) -> dict[str, np.ndarray]:
    """Every output's decoded pixels, by name (the run's own hidden files left out)."""
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            with Image.open(path) as img:
                found[str(path.relative_to(out))] = np.asarray(img.convert("RGBA"))
    return found


def _same_outputs(a: Path, b: Path) -> None:
    pixels_a, pixels_b = _pixels(a), _pixels(b)
    assert pixels_a and sorted(pixels_a) == sorted(pixels_b)
    for name, pixels in pixels_a.items():
        assert np.array_equal(pixels, pixels_b[name]), name


def _face_photo(path: Path) -> Path:
    """An astronaut (one face Haar finds) on a grey canvas, small enough to be quick."""
    skimage_data = pytest.importorskip("skimage.data")
    one = Image.fromarray(skimage_data.astronaut()).resize((300, 300))
    canvas = Image.new("RGB", (340, 300), (128, 128, 128))
    canvas.paste(one, (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ---- item 3, outcome 1: --faces and --reuse-similar with --ray -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paste", "crop"])
def test_item3_ray_faces_write_the_files_and_pixels_of_a_plain_run(
    tmp_path, checkpoint, local_ray, mode
):
    src = tmp_path / "in"
    _face_photo(src / "astronaut.png")
    make_image(src / "tiny.jpg", 40, 28, seed=3)  # no face: crop fails it, paste styles it whole
    code = 1 if mode == "crop" else 0  # tiny.jpg: no face found
    plain = _convert(src, tmp_path / "plain", checkpoint, "--faces", mode, code=code)
    ray = _convert(src, tmp_path / "ray", checkpoint, "--faces", mode, "--ray", "local",
                   code=code)
    _same_outputs(tmp_path / "plain", tmp_path / "ray")
    assert [(r["input"], r["status"], r.get("faces")) for r in sorted(
        plain, key=lambda r: r["input"])] == [(r["input"], r["status"], r.get("faces"))
                                              for r in sorted(ray, key=lambda r: r["input"])]
    assert any(r.get("faces", {}).get("count") == 1 for r in ray)
    assert all(r["worker"].startswith("ray actor ") for r in ray if r["status"] == "converted")


@pytest.mark.slow
def test_item3_ray_reuse_similar_writes_the_files_and_pixels_of_a_plain_run(
    tmp_path, checkpoint, local_ray
):
    src = tmp_path / "in"
    for i in range(3):
        make_image(src / f"p{i}.png", 40, 28, seed=i)
    base = np.asarray(Image.open(src / "p0.png")).copy()
    base[0, 0] = base[0, 0] ^ 1  # a look-alike of p0: borrows its result
    Image.fromarray(base).save(src / "p3.png")
    plain = _convert(src, tmp_path / "plain", checkpoint, "--reuse-similar", "4")
    ray = _convert(src, tmp_path / "ray", checkpoint, "--reuse-similar", "4", "--ray", "local")
    _same_outputs(tmp_path / "plain", tmp_path / "ray")
    reused = {Path(r["input"]).name: r["reused_from"] and Path(r["reused_from"]).name
              for r in ray}
    assert reused["p3.png"] == "p0.png"
    assert reused == {Path(r["input"]).name: r["reused_from"] and Path(r["reused_from"]).name
                      for r in plain}


# ---- item 3, outcome 2: clips styled on the cluster under --ray ------------------------------


def _frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """A clip's decoded frames: (pts, RGB pixels)."""
    with av.open(str(path)) as clip:
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in clip.decode(video=0)]


def _audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as clip:
        return [(p.pts, bytes(p)) for p in clip.demux(audio=0) if p.size]


@pytest.mark.slow
def test_item3_ray_styles_each_clip_on_an_actor_with_the_frames_of_a_plain_run(
    tmp_path, checkpoint, local_ray
):
    from tests.test_video import make_clip

    src = tmp_path / "in"
    make_clip(src / "one.mp4", frames=5, width=40, height=28)
    make_clip(src / "two.mp4", frames=4, width=32, height=24, vfr=True)
    # --video-crf 0: lossless, so the decoded frames are the styled frames (x264's lossy
    # output at the default CRF differs between two plain runs of the same clip).
    plain = _convert(src, tmp_path / "plain", checkpoint, "--video-crf", "0")
    ray = _convert(src, tmp_path / "ray", checkpoint, "--video-crf", "0", "--ray", "local",
                   "--report", str(tmp_path / "r.json"))
    assert {r["status"] for r in plain + ray} == {"converted"}
    for name in ("one.mp4", "two.mp4"):
        a, b = _frames(tmp_path / "plain" / name), _frames(tmp_path / "ray" / name)
        assert len(a) == len(b) and [pts for pts, _ in a] == [pts for pts, _ in b]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
        assert _audio_packets(tmp_path / "plain" / name) == _audio_packets(tmp_path / "ray" / name)
    clips = [r for r in ray if "frames" in r]
    assert len(clips) == 2 and all(r["worker"].startswith("ray actor ") for r in clips)
    report = json.loads((tmp_path / "r.json").read_text())
    assert [v["worker"][:10] for v in report["videos"]] == ["ray actor "] * 2
    assert sorted(v["frames"] for v in report["videos"]) == [4, 5]


# ---- item 3, outcome 3: --faces paste on clips ----------------------------------------------


def _face_clip(path: Path, frames: int = 3) -> Path:
    """A clip of the astronaut (one face) drifting right, 30 fps, with AAC audio."""
    from fractions import Fraction

    photo = Image.open(_face_photo(path.with_suffix(".png")))
    path.unlink(missing_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 340, 300, "yuv420p"
        stream.time_base = Fraction(1, 90000)
        stream.options = {"crf": "10"}
        sound = out.add_stream("aac", rate=44100)
        for i in range(frames):
            moved = Image.new("RGB", photo.size, (128, 128, 128))
            moved.paste(photo, (2 * i, 0))
            frame = av.VideoFrame.from_image(moved)
            frame.pts, frame.time_base = i * 3000, stream.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        for i in range(frames * 2):
            tone = np.sin(np.arange(i * 1024, (i + 1) * 1024) * 0.05).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, i * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    path.with_suffix(".png").unlink()
    return path


@pytest.mark.slow
def test_item3_faces_paste_on_a_clip_keeps_timing_audio_and_pixels_outside_the_faces(
    tmp_path, checkpoint
):
    src = _face_clip(tmp_path / "in" / "face.mp4")
    common = ("--size", "256", "--video-crf", "0")  # lossless: decoded frames are the styled
    _convert(src, tmp_path / "plain", checkpoint, *common)
    [result] = _convert(src, tmp_path / "paste", checkpoint, *common, "--faces", "paste",
                        "--min-face", "24")
    assert result["status"] == "converted" and result["faces"] == {"count": 3, "frames": 3}
    plain, pasted = _frames(tmp_path / "plain" / "face.mp4"), _frames(tmp_path / "paste" /
                                                                      "face.mp4")
    assert [pts for pts, _ in plain] == [pts for pts, _ in pasted] == [0, 3000, 6000]
    plain_audio = _audio_packets(tmp_path / "plain" / "face.mp4")
    assert plain_audio and plain_audio == _audio_packets(tmp_path / "paste" / "face.mp4")
    for (_, a), (_, b) in zip(plain, pasted):
        changed = np.argwhere(np.any(a != b, axis=2))
        assert len(changed) > 100  # the face was styled at 512x512 and pasted
        top, left = changed.min(axis=0)
        bottom, right = changed.max(axis=0)
        # The face (about 43 px at this size) with --face-margin 1.3 and 4:2:0 chroma's
        # reach: every changed pixel is in one square of under 70 px around it.
        assert bottom - top < 70 and right - left < 70


def test_item3_faces_paste_changes_no_pixel_outside_each_frames_crops(monkeypatch):
    """The frame stage's seam, before encoding: outside every crop, the plain styled frame."""
    pytest.importorskip("cv2")
    from animegan_cli.faces import frames as face_frames
    from animegan_cli.faces.detect import Box, FaceSettings

    boxes = {0: [Box(10, 12, 20, 20)], 1: [], 2: [Box(50, 30, 16, 16), Box(5, 5, 12, 12)]}
    seen = iter(boxes.values())
    monkeypatch.setattr(face_frames, "find_faces", lambda detector, image: next(seen))
    paste = face_frames.FramePaste(FaceSettings("paste"), batch_size=2)
    frames = [Image.new("RGB", (80, 60), (i * 40, 90, 30)) for i in range(3)]
    styled = [Image.new("RGB", (80, 60), (200, 10 * i, 60)) for i in range(3)]
    white = lambda batch: [np.full((512, 512, 3), 255, np.uint8) for _ in batch]  # noqa: E731
    import torch

    done = paste.apply(frames, styled, lambda batch: [torch.from_numpy(p) for p in white(batch)])
    assert paste.report() == {"count": 3, "frames": 2}
    for i, (image, plain) in enumerate(zip(done, styled)):
        inside = np.zeros((60, 80), bool)
        for box in boxes[i]:
            crop = face_frames.face_blend.square_crop(box, 1.3, 80, 60)
            inside[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w] = True
        a, b = np.asarray(image), np.asarray(plain)
        assert np.array_equal(a[~inside], b[~inside])
        assert np.any(a[inside] != b[inside]) == bool(boxes[i])


def test_item3_the_pipeline_never_imports_a_runner():
    """A seam test (no user-visible bug): convert <-> ray_runner <-> video_run was a cycle;
    the pipeline reaches runners only through distributors.py's registry, by name."""
    import ast

    package = Path(__file__).resolve().parents[1] / "animegan_cli"
    importers = []
    for path in sorted((package / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            importers += [path.name for name in names if name.startswith("animegan_cli.runners")]
    assert importers == []
