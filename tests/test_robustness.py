"""Nothing lost, nothing half-written: bad inputs, signals, SIGKILL, full disks, locks.

The "zoo" converts a folder of every kind of bad or unusual input in one run and checks,
case by case, that each was converted correctly or failed with its reason, leaving no
output and no temp file behind.
"""

from __future__ import annotations

import builtins
import ctypes
import errno
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from animegan_cli.cli.app import main
from animegan_cli.core.signals import Interrupted
from animegan_cli.engines.base import TorchEngine
from animegan_cli.media import data, outputs
from animegan_cli.media.outputs import TEMP_PREFIX
from animegan_cli.model.generator import Generator
from animegan_cli.pipeline import convert as convert_module
from animegan_cli.pipeline import decoding
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, FileResult, convert
from animegan_cli.pipeline.lock import output_lock
from animegan_cli.pipeline.resources import BASE_BYTES, GIB, estimate_peak
from tests.conftest import make_image, photo_like

ROOT = Path(__file__).resolve().parents[1]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"{TEMP_PREFIX}*")]


def output_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


# ---------------------------------------------------------------- makers for the zoo


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_bytes(width: int = 40, height: int = 24) -> bytearray:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed=5)).save(buffer, "PNG")
    return bytearray(buffer.getvalue())


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def truncated(path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(64, 48, seed=6)).save(buffer, fmt)
    return write(path, buffer.getvalue()[: len(buffer.getvalue()) // 2])


def png_header_crc_broken(path: Path) -> Path:
    payload = png_bytes()
    payload[29] ^= 0xFF  # IHDR's CRC: 8-byte signature + length + type + 13-byte body
    return write(path, bytes(payload))


def png_idat(path: Path, flip: str) -> Path:
    payload = png_bytes()
    at = payload.find(b"IDAT")
    length = struct.unpack(">I", payload[at - 4 : at])[0]
    payload[at + 4 + length if flip == "crc" else at + 10] ^= 0xFF
    return write(path, bytes(payload))


def bomb(path: Path) -> Path:
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    return write(path, b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                 + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def cmyk_jpeg(path: Path, ycck: bool) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(photo_like(40, 24, seed=7)).convert("CMYK").save(buffer, "JPEG")
    payload = bytearray(buffer.getvalue())
    if ycck:
        # The Adobe APP14 segment's last byte is the colour transform: 2 = YCCK. libjpeg
        # then decodes the components as YCCK, as it does for Photoshop's CMYK JPEGs.
        at = payload.find(b"Adobe")
        payload[at + 11] = 2
    write(path, bytes(payload))
    with Image.open(path) as img:
        assert img.mode == "CMYK" and img.info.get("adobe_transform") == (2 if ycck else 0)
    return path


def exif_rotated(path: Path, orientation: int) -> Path:
    img = Image.fromarray(photo_like(40, 24, seed=orientation))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)
    return path


def frames(seed: int) -> list[Image.Image]:
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]
    out = []
    for i, colour in enumerate(colours):
        img = Image.new("RGB", (40, 24), colour)
        img.paste((255 - colour[0], 128, seed * 40 + i * 50), (4 + 6 * i, 4, 20 + 6 * i, 18))
        out.append(img)
    return out


def animated(path: Path, fmt: str) -> Path:
    first, *rest = frames(1)
    options = {"lossless": True} if fmt == "WEBP" else {}
    first.save(path, fmt, save_all=True, append_images=rest, duration=100, loop=0, **options)
    with Image.open(path) as img:
        assert img.n_frames == 3
    return path


def frame_still(path: Path, source: Path, frame: int) -> Path:
    """Frame ``frame`` of an animation, saved alone as a still in the same pixel mode."""
    with Image.open(source) as img:
        img.seek(frame)
        still = img.copy() if img.mode != "P" else img.convert("RGB")
    still.save(path, **({"lossless": True} if path.suffix == ".webp" else {}))
    return path


def symlink(path: Path, target: Path) -> Path:
    os.symlink(target, path)
    return path


@dataclass
class Case:
    make: Callable[[Path], Path]
    status: str
    reason: str | None = None
    check: Callable[[Path, Path], None] | None = None


def upright(orientation: int) -> Callable[[Path, Path], None]:
    def check(source: Path, output: Path) -> None:
        with Image.open(output) as img:
            wide = img.size[0] > img.size[1]
            assert wide == (orientation < 5), (orientation, img.size)
            assert img.getexif().get(0x0112) is None  # never copied onto an upright image

    return check


def has_alpha(source: Path, output: Path) -> None:
    with Image.open(output) as img:
        assert img.format == "PNG" and img.mode == "RGBA"


def mode_rgb(source: Path, output: Path) -> None:
    with Image.open(output) as img:
        assert img.mode == "RGB" and max(img.size) == 32


def animation_of(fmt: str, frames: int) -> Callable[[Path, Path], None]:
    """The output is an animation of ``fmt`` with ``frames`` frames."""

    def check(source: Path, output: Path) -> None:
        with Image.open(output) as got:
            assert (got.format, getattr(got, "n_frames", 1)) == (fmt, frames)

    return check


NOT_AN_IMAGE = r"^not an image, or a format that cannot be read$"
OUTSIDE = "outside-the-tree"
UNREADABLE = "unreadable.png"

ZOO: dict[str, Case] = {
    "zero-byte file": Case(lambda d: write(d / "empty.jpg", b""), "failed", NOT_AN_IMAGE),
    "truncated JPEG": Case(lambda d: truncated(d / "cut.jpg", "JPEG"), "failed", "truncated"),
    "truncated PNG": Case(lambda d: truncated(d / "cut.png", "PNG"), "failed", "truncated"),
    "random bytes": Case(lambda d: write(d / "noise.jpg", os.urandom(4096)), "failed",
                         NOT_AN_IMAGE),
    "text with image extension": Case(
        lambda d: write(d / "notes.png", b"shopping list\nmilk\n"), "failed", NOT_AN_IMAGE),
    "PNG with broken header CRC": Case(lambda d: png_header_crc_broken(d / "crc_ihdr.png"),
                                       "failed", NOT_AN_IMAGE),
    "PNG with broken pixel-data CRC": Case(lambda d: png_idat(d / "crc_idat.png", "crc"),
                                           "converted"),
    "PNG with corrupt pixel data": Case(lambda d: png_idat(d / "bad_idat.png", "data"),
                                        "failed", "^cannot decode: broken data stream"),
    "decompression bomb": Case(
        lambda d: bomb(d / "bomb.png"), "failed",
        r"^image is 50000x50000 \(2500 MP\), over the --max-pixels limit of 200 MP; not decoded$"),
    "1xN strip": Case(lambda d: make_image(d / "strip.png", 1, 300), "failed",
                      r"^image is 1x300, too small: the model needs at least 8 px"),
    "5x5 image (scaled up)": Case(lambda d: make_image(d / "tiny.png", 5, 5), "converted"),
    "16-bit PNG": Case(lambda d: make_image(d / "deep.png", 40, 24, mode="I;16"), "converted",
                       check=mode_rgb),
    "CMYK JPEG": Case(lambda d: cmyk_jpeg(d / "cmyk.jpg", ycck=False), "converted",
                      check=mode_rgb),
    "YCCK JPEG": Case(lambda d: cmyk_jpeg(d / "ycck.jpg", ycck=True), "converted",
                      check=mode_rgb),
    "grayscale with alpha": Case(lambda d: make_image(d / "la.png", 40, 24, mode="LA"),
                                 "converted", check=has_alpha),
    "palette with transparency": Case(
        lambda d: make_image(d / "pal.png", 40, 24, mode="P", transparency=0), "converted",
        check=has_alpha),
    **{
        f"EXIF orientation {o}": Case(
            lambda d, o=o: exif_rotated(d / f"exif_{o}.jpg", o), "converted", check=upright(o))
        for o in range(1, 9)
    },
    # Issue 23 item 4: an animation comes out animated, in its own format (test_animation.py).
    "animated GIF": Case(lambda d: animated(d / "anim.gif", "GIF"), "converted",
                         check=animation_of("GIF", 3)),
    "animated GIF, frame 0 alone": Case(
        lambda d: frame_still(d / "anim_gif_frame0.png", d / "anim.gif", 0), "converted"),
    "animated GIF, frame 1 alone": Case(
        lambda d: frame_still(d / "anim_gif_frame1.png", d / "anim.gif", 1), "converted"),
    "animated WebP": Case(lambda d: animated(d / "anim.webp", "WEBP"), "converted",
                          check=animation_of("WEBP", 3)),
    "animated WebP, frame 0 alone": Case(
        lambda d: frame_still(d / "anim_webp_frame0.webp", d / "anim.webp", 0), "converted"),
    "animated WebP, frame 1 alone": Case(
        lambda d: frame_still(d / "anim_webp_frame1.webp", d / "anim.webp", 1), "converted"),
    "directory named x.jpg": Case(lambda d: make_image(d / "x.jpg" / "inside.png"),
                                  "converted"),
    "broken symlink": Case(lambda d: symlink(d / "dangling.jpg", d / "gone.jpg"), "failed",
                           r"^file not found \(or a broken link\)$"),
    "symlink loop": Case(
        lambda d: (symlink(d / "loop_b.jpg", d / "loop_a.jpg"),
                   symlink(d / "loop_a.jpg", d / "loop_b.jpg"))[0],
        "failed", "Too many levels of symbolic links"),
    "symlink to a file outside the tree": Case(
        lambda d: symlink(d / "outside_link.png", d.parent / OUTSIDE / "real.png"),
        "converted"),
    "unreadable file": Case(lambda d: make_image(d / UNREADABLE), "failed",
                            r"^permission denied$"),
    "name with spaces": Case(lambda d: make_image(d / "my holiday photo.jpg"), "converted"),
    "unicode name": Case(lambda d: make_image(d / "фото 日本 ✓.png"), "converted"),
    "name with a newline": Case(lambda d: make_image(d / "two\nlines.png"), "converted"),
    "name that is not UTF-8": Case(lambda d: make_image(Path(os.fsdecode(
        os.fsencode(d) + b"/caf\xe9.png"))), "converted"),
    "240-byte name": Case(lambda d: make_image(d / ("n" * 236 + ".png")), "converted"),
}


@dataclass
class ZooRun:
    root: Path
    out: Path
    inputs: dict[str, Path]
    results: dict[Path, FileResult]


@pytest.fixture(scope="module")
def zoo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    torch.save(Generator().state_dict(), path)
    return path


@pytest.fixture(scope="module", params=[0, 1], ids=["in-process", "worker"])
def zoo(request, tmp_path_factory, zoo_checkpoint) -> ZooRun:
    base = tmp_path_factory.mktemp("zoo")
    root = base / "in"
    root.mkdir()
    make_image(base / OUTSIDE / "real.png")
    inputs = {name: case.make(root) for name, case in ZOO.items()}
    unreadable = root / UNREADABLE
    unreadable.chmod(0)
    real_open = builtins.open

    def open_as_non_root(file, *args, **kwargs):  # noqa: ANN001, ANN202
        # Root reads anything whatever its mode; refuse as the kernel would for a user.
        if os.geteuid() == 0 and isinstance(file, (str, Path)) and Path(file) == unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    seen: list[FileResult] = []
    out = base / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", open_as_non_root)
        convert(
            # Walked and named at once: the GIF is converted once.
            ConvertOptions(inputs=[str(root), str(inputs["animated GIF"])], output=out,
                           weights=zoo_checkpoint, size=32, num_workers=request.param,
                           backend="torch"),
            ConvertEvents(on_result=seen.append),
        )
    return ZooRun(root, out, inputs, {r.input: r for r in seen})


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo(zoo: ZooRun, name: str):
    case = ZOO[name]
    source = zoo.inputs[name]
    result = zoo.results[source]
    assert result.status == case.status, result.error
    if case.status == "failed":
        assert result.output is None
        assert result.error and "\n" not in result.error
        assert re.search(case.reason or "", result.error), result.error
    else:
        assert result.error is None and result.output is not None
        with Image.open(result.output) as img:
            img.load()
        if case.check:
            case.check(source, result.output)


def test_zoo_leaves_nothing_but_the_outputs_of_converted_inputs(zoo: ZooRun):
    converted = sorted(r.output for r in zoo.results.values() if r.status == "converted")
    assert sorted(output_files(zoo.out)) == converted
    assert temp_files(zoo.out) == []
    assert not (zoo.out / ".animegan.lock").exists()
    # Every input found was accounted for: the zoo holds two symlinks in its loop.
    assert len(zoo.results) == len(ZOO) + 1


# ---------------------------------------------------------------- CLI, odd names


def run_cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def cli_args(src: Path, out: Path, checkpoint: Path, *extra: str) -> tuple[str, ...]:
    return ("convert", str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
            "--num-workers", "0", "--backend", "torch", *extra)


def test_odd_names_keep_json_and_stderr_one_record_per_line(tmp_path, checkpoint):
    src = tmp_path / "in"
    names = ["two\nlines.png", "tab\there.png", "фото.png"]
    for name in names:
        make_image(src / name)
    (src / "bad\nname.png").write_bytes(b"junk")
    make_image(Path(os.fsdecode(os.fsencode(src) + b"/caf\xe9.png")))
    result = run_cli(*cli_args(src, tmp_path / "out", checkpoint, "--json"))
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5
    by_name = {Path(r["input"]).name: r for r in records}
    assert by_name["caf\\xe9.png"]["status"] == "converted"
    assert by_name["two\nlines.png"]["status"] == "converted"
    assert by_name["bad\nname.png"]["status"] == "failed"
    errors = [line for line in result.stderr.splitlines() if line.startswith("animegan: error")]
    assert errors == [f"animegan: error: {src}/bad\\nname.png: "
                      "not an image, or a format that cannot be read"]


@pytest.mark.slow
def test_unreadable_file_through_the_kernel(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_image(src / "ok.png")
    make_image(src / "locked.png").chmod(0)
    command = [sys.executable, "-m", "animegan_cli", *cli_args(src, tmp_path / "out", checkpoint)]
    if os.geteuid() == 0:
        # Root reads anything; in a new user namespace it keeps its uid but no capability,
        # so mode 000 applies to it as to any user.
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) to drop root's override")
        command = ["unshare", "-U", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode not in (0, 1) and "unshare" in proc.stderr:
        pytest.skip(f"user namespaces unavailable: {proc.stderr.strip()}")
    assert proc.returncode == 1, proc.stderr
    assert f"animegan: error: {src / 'locked.png'}: permission denied" in proc.stderr
    assert [p.name for p in output_files(tmp_path / "out")] == ["ok.png"]


# ---------------------------------------------------------------- memory


def test_native_size_image_over_the_memory_budget_fails_alone(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_image(src / "big.png", 1000, 1000)  # 1 MP: about 2 GB at native size
    make_image(src / "small.png", 40, 24)
    # Without tiles (with --tile auto it is styled in tiles: tests/test_tiles.py).
    result = run_cli(*cli_args(src, tmp_path / "out", checkpoint, "--size", "0",
                               "--max-memory", "1G", "--json", "--tile", "off"))
    assert result.exit_code == 1
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["small.png"]["status"] == "converted"
    reason = records["big.png"]["error"]
    assert reason.startswith("needs about 1.9 GB of memory at native size (1.0 MP), more than "
                             "the budget of 1.0 GB; ")
    assert "--max-memory" in reason and "--size" in reason
    assert not (tmp_path / "out" / "big.png").exists()


def test_size_that_cannot_fit_is_refused_before_anything(tmp_path, checkpoint, photo_dir):
    # Without tiles (with --tile auto such a size is styled in tiles: tests/test_tiles.py).
    result = run_cli(*cli_args(photo_dir, tmp_path / "out", checkpoint, "--size", "8192",
                               "--tile", "off"))
    assert result.exit_code == 2
    assert "--size 8192 needs about" in result.stderr and "--max-memory" in result.stderr
    assert output_files(tmp_path / "out") == []


def test_batch_size_is_lowered_with_a_message(tmp_path, checkpoint, photo_dir):
    result = run_cli(*cli_args(photo_dir, tmp_path / "out", checkpoint, "--size", "256",
                               "--batch-size", "16", "--max-memory", "1G", "--report",
                               str(tmp_path / "r.json")))
    assert result.exit_code == 0, result.output
    fits = (GIB - BASE_BYTES) // (estimate_peak(256 * 256) - BASE_BYTES)
    assert 1 < fits < 16
    assert f"animegan: lowering batch size from 16 to {fits} to fit in 1.0 GB" in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["batch_size_used"] == fits


@pytest.mark.parametrize("flag,value", [("--max-memory", "lots"), ("--max-pixels", "-5")])
def test_bad_size_values_are_usage_errors(tmp_path, checkpoint, photo_dir, flag, value):
    result = run_cli(*cli_args(photo_dir, tmp_path / "out", checkpoint, flag, value))
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.stderr


# ---------------------------------------------------------------- disk full, read-only


def failing_save(err: int) -> Callable[..., None]:
    def save(self, fp, *args, **kwargs):  # noqa: ANN001, ANN202
        fp.write(b"half an image")
        raise OSError(err, os.strerror(err))

    return save


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_disk_full_stops_the_run_with_no_temp_files(tmp_path, checkpoint, monkeypatch, err):
    src = tmp_path / "in"
    for i in range(20):
        make_image(src / f"{i:02d}.png", 40, 24, seed=i)
    monkeypatch.setattr(Image.Image, "save", failing_save(err))
    result = run_cli(*cli_args(src, tmp_path / "out", checkpoint, "--report",
                               str(tmp_path / "report.json")))
    assert result.exit_code == 1
    message = f"cannot write {tmp_path / 'out'}/00.png: {os.strerror(err)}"
    assert f"animegan: error: {src / '00.png'}: {message}" in result.stderr
    assert (f"animegan: error: {message}; stopping, as every further write would fail the "
            "same way") in result.stderr
    assert "converted 0, skipped 0, failed " in result.stderr  # the summary is printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exit_status"] == 1 and report["error"].startswith(message)
    assert report["counts"]["failed"] < 20 and report["counts"]["not_done"] > 0
    assert os.listdir(tmp_path / "out") == []  # no output, no temp file, no lock


def test_other_write_errors_fail_only_their_image(tmp_path, checkpoint, monkeypatch):
    src = tmp_path / "in"
    for i in range(4):
        make_image(src / f"{i}.png", seed=i)
    real_write = outputs.write_image_atomic

    def write_unless_2(image, path, **kwargs):  # noqa: ANN001, ANN202
        if path.name == "2.png":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_write(image, path, **kwargs)

    monkeypatch.setattr(convert_module.outputs, "write_image_atomic", write_unless_2)
    summary = convert(ConvertOptions(inputs=[str(src)], output=tmp_path / "out",
                                     weights=checkpoint, size=32, num_workers=0,
                                     backend="torch"))
    assert (summary.converted, summary.failed) == (3, 1)
    assert summary.failures[0].error == f"cannot write {tmp_path / 'out' / '2.png'}: " \
                                        "Permission denied"


def test_unwritable_output_folder_exits_2(tmp_path, checkpoint, photo_dir, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_access = os.access
    # As root a chmod does not stop writes; a read-only mount makes access() say no.
    monkeypatch.setattr(convert_module.os, "access", lambda p, mode: (
        False if Path(p) == out and mode & os.W_OK else real_access(p, mode)))
    result = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert result.exit_code == 2
    assert result.stderr == f"animegan: error: output folder {out} is not writable\n"


# ---------------------------------------------------------------- two runs at once


def test_second_run_on_a_locked_folder_exits_2(tmp_path, checkpoint, photo_dir):
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "report.json"
    with output_lock(out):
        result = run_cli(*cli_args(photo_dir, out, checkpoint, "--report", str(report)))
    assert result.exit_code == 2
    message = (f"another animegan run (pid {os.getpid()}) is writing to {out}; "
               "use --wait to wait for it")
    assert result.stderr == f"animegan: error: {message}\n"
    assert output_files(out) == []
    account = json.loads(report.read_text())
    assert (account["exit_status"], account["error"]) == (2, message)


def test_wait_waits_for_the_other_run_then_skips_what_it_wrote(tmp_path, checkpoint, photo_dir):
    out = tmp_path / "out"
    out.mkdir()
    held, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with output_lock(out):
            held.set()
            release.wait(10)
            make_image(out / "a.jpg")  # it wrote one image while we waited

    thread = threading.Thread(target=other_run)
    thread.start()
    held.wait(5)
    threading.Timer(0.5, release.set).start()
    result = run_cli(*cli_args(photo_dir, out, checkpoint, "--wait"))
    thread.join()
    assert result.exit_code == 0, result.output
    assert f"animegan: waiting for another animegan run (pid {os.getpid()}) writing to {out}" \
        in result.stderr
    assert "converted 2, skipped 1, failed 0" in result.stderr


# ---------------------------------------------------------------- weights


def bad_checkpoint(tmp_path: Path, kind: str, good: Path) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 20)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "wrong architecture":
        torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, path)
    else:  # a pickle that runs code when loaded without weights_only
        path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode()
                         + b"'\ntR.")
    return path


@pytest.mark.parametrize(("kind", "reason"), [
    ("corrupt", "cannot load checkpoint"),
    ("truncated", "cannot load checkpoint"),
    ("wrong architecture", "is not an AnimeGANv2 checkpoint"),
    ("runs code", "could run code"),
])
def test_bad_checkpoints_exit_1_with_one_line(tmp_path, checkpoint, photo_dir, kind, reason):
    path = bad_checkpoint(tmp_path, kind, checkpoint)
    result = run_cli(*cli_args(photo_dir, tmp_path / "out", path))
    assert result.exit_code == 1
    assert result.stderr.startswith("animegan: error: ") and reason in result.stderr
    assert str(path) in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "pwned").exists()
    assert output_files(tmp_path / "out") == []


# ---------------------------------------------------------------- a decoder that dies


@pytest.mark.slow
def test_a_decoder_segfault_fails_only_its_image(tmp_path, checkpoint, monkeypatch):
    # Decoder processes (the DataLoader's): a small run decodes on a thread of its own
    # process (pipeline/decoding.py), where a decoder's crash would end the run.
    monkeypatch.setattr(decoding, "IN_PROCESS_MAX_IMAGES", 0)
    src = tmp_path / "in"
    for i in range(5):
        make_image(src / f"{i}.png", seed=i)
    real_prepare = data.prepare_image

    def prepare(index, path, settings):  # noqa: ANN001, ANN202
        if path.name == "2.png" and torch.utils.data.get_worker_info() is not None:
            ctypes.string_at(0)
        return real_prepare(index, path, settings)

    monkeypatch.setattr(data, "prepare_image", prepare)  # before the workers fork
    result = run_cli("convert", str(src), "-o", str(tmp_path / "out"), "--weights",
                     str(checkpoint), "--size", "32", "--num-workers", "1", "--backend", "torch")
    assert result.exit_code == 1
    assert (f"animegan: error: {src / '2.png'}: decoder process died reading it "
            "(killed by signal 11, SIGSEGV)") in result.stderr
    assert "converted 4, skipped 0, failed 1" in result.stderr
    assert sorted(p.name for p in output_files(tmp_path / "out")) == [
        "0.png", "1.png", "3.png", "4.png"]


def test_an_interrupt_inside_convert_carries_the_summary(tmp_path, checkpoint, monkeypatch):
    src = tmp_path / "in"
    for i in range(6):
        make_image(src / f"{i}.png", seed=i)
    real_run = TorchEngine.run
    calls = []

    def run(self, batch):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the model runs on the third image
        return real_run(self, batch)

    monkeypatch.setattr(TorchEngine, "run", run)
    out = tmp_path / "out"
    with pytest.raises(Interrupted) as info:
        convert(ConvertOptions(inputs=[str(src)], output=out, weights=checkpoint, size=32,
                               num_workers=1, backend="torch"))
    summary = info.value.summary
    assert info.value.signum == signal.SIGINT and info.value.exit_status == 130
    assert (summary.found, summary.converted, summary.failed) == (6, 2, 0)
    assert sorted(p.name for p in output_files(out)) == ["0.png", "1.png"]
    assert temp_files(out) == []
    assert sorted(os.listdir(out)) == [".animegan-manifest.jsonl", "0.png", "1.png"]


# ---------------------------------------------------------------- real processes, signals

# Runs the CLI in a fresh interpreter; with SLOW_WRITES each image's bytes are written in
# two halves 0.25 s apart, so that a signal or a kill lands while a write is in progress.
LAUNCHER = """
import sys, time
from PIL import Image
if sys.argv.pop(1) == "slow":
    real_save = Image.Image.save
    def save(self, fp, *args, **kwargs):
        class Halves:
            def __init__(self, f): self.f, self.buf = f, bytearray()
            def write(self, b): self.buf += b; return len(b)
            def __getattr__(self, name): return getattr(self.f, name)
        halves = Halves(fp)
        real_save(self, halves, *args, **kwargs)
        fp.write(halves.buf[: len(halves.buf) // 2]); fp.flush()
        time.sleep(0.25)
        fp.write(halves.buf[len(halves.buf) // 2 :])
    Image.Image.save = save
from animegan_cli.cli.app import main
main()
"""


def start_cli(src: Path, out: Path, checkpoint: Path, slow: bool, *extra: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", LAUNCHER, "slow" if slow else "fast", "convert", str(src),
            "-o", str(out), "--weights", str(checkpoint), "--size", "64", "--num-workers", "1",
            "--backend", "torch", "--json", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def all_outputs_complete(out: Path) -> set[str]:
    names = set()
    for path in output_files(out):
        with Image.open(path) as img:
            img.load()  # raises on a partial file
        names.add(path.name)
    return names


@pytest.fixture
def many_images(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    for i in range(12):
        make_image(src / f"{i:02d}.png", 64, 48, seed=i)
    return src


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_a_rerun_converts_the_rest(
    tmp_path, checkpoint, many_images, sig, status
):
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    proc = start_cli(many_images, out, checkpoint, True, "--report", str(report))
    wait_for(lambda: len(output_files(out)) >= 1, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    name = signal.Signals(sig).name
    written = all_outputs_complete(out)
    assert 1 <= len(written) < 12
    assert temp_files(out) == [] and not (out / ".animegan.lock").exists()
    assert f"animegan: stopped by {name}; {12 - len(written)} image(s) not converted" in stderr
    assert f"converted {len(written)}, skipped 0, failed 0 in" in stderr
    assert {Path(json.loads(line)["output"]).name for line in stdout.splitlines()} == written
    account = json.loads(report.read_text())
    assert account["exit_status"] == status and account["interrupted_by"] == name
    assert account["counts"]["not_done"] == 12 - len(written)

    rerun = start_cli(many_images, out, checkpoint, False)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    converted = {Path(r["output"]).name for r in records if r["status"] == "converted"}
    skipped = {Path(r["output"]).name for r in records if r["status"] == "skipped"}
    assert skipped == written and converted.isdisjoint(written)
    assert all_outputs_complete(out) == {f"{i:02d}.png" for i in range(12)}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun(tmp_path, checkpoint, many_images):
    out = tmp_path / "out"
    rng = random.Random(0)
    all_names = {f"{i:02d}.png" for i in range(12)}
    left_by_kills = 0
    for trial in range(3):
        had_leftovers = temp_files(out) != []
        proc = start_cli(many_images, out, checkpoint, True)
        mine = f"{TEMP_PREFIX}{proc.pid}-"
        if trial == 1:  # for certain in the middle of a write: its temp file is there
            wait_for(lambda mine=mine: any(p.name.startswith(mine) for p in temp_files(out)),
                     proc)
        else:  # anywhere in the conversion loop
            before = len(output_files(out))
            wait_for(lambda before=before: len(output_files(out)) > before, proc)
            time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        _, stderr = proc.communicate()
        # The run removed what the previous kill left, and only that run's can remain.
        assert ("temp file(s) left by an interrupted run" in stderr) == had_leftovers, stderr
        assert all(p.name.startswith(mine) for p in temp_files(out))
        left_by_kills += len(temp_files(out))
        assert all_outputs_complete(out) < all_names  # whatever exists is whole
    assert left_by_kills >= 1
    done = all_outputs_complete(out)
    had_leftovers = temp_files(out) != []
    rerun = start_cli(many_images, out, checkpoint, False)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert ("temp file(s) left by an interrupted run" in stderr) == had_leftovers
    records = [json.loads(line) for line in stdout.splitlines()]
    converted = {Path(r["output"]).name for r in records if r["status"] == "converted"}
    assert converted == all_names - done  # exactly the missing ones
    assert all_outputs_complete(out) == all_names
    assert temp_files(out) == []
