"""Issue 22, items 1, 3 and 13: one bad input never ends a run (convert, --ray, serve).

Damaged files are made here from real bytes that raise what a decoder raises on them
(pillow-heif and AVIF RuntimeError, DDS NotImplementedError, SPIDER AttributeError); the
fuzz test mutates a few thousand small files of every format Pillow writes.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, features

from animegan_cli.cli.app import main
from animegan_cli.media import data, outputs
from animegan_cli.media.outputs import TEMP_PREFIX
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"a.jpg": (40, 28), "b.png": (28, 40), "sub/c.webp": (36, 36)}


# ---- damaged files: real bytes, each raising its decoder's own exception type -------------


def _saved(fmt: str, mode: str = "RGB") -> bytearray:
    buffer = io.BytesIO()
    Image.new(mode, (24, 16), 90).save(buffer, format=fmt)
    return bytearray(buffer.getvalue())


def damaged_heic() -> bytes:
    """A HEIC whose 'ispe' box claims a height of 2**30: pillow-heif raises RuntimeError."""
    pytest.importorskip("pillow_heif")
    raw = _saved("HEIF")
    at = raw.find(b"ispe")
    raw[at + 12:at + 16] = struct.pack(">I", 1 << 30)
    return bytes(raw)


def damaged_avif() -> bytes:
    """An AVIF whose primary item ('pitm') names no item: Pillow raises RuntimeError."""
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF plugin")
    raw = _saved("AVIF")
    at = raw.find(b"pitm")
    raw[at + 8:at + 10] = b"\x00\x09"
    return bytes(raw)


def damaged_dds() -> bytes:
    """A DDS with no pixel-format flags (offset 80): Pillow raises NotImplementedError."""
    raw = _saved("DDS")
    raw[80:84] = bytes(4)
    return bytes(raw)


def damaged_spider() -> bytes:
    """A SPIDER header with a bad stack field: Pillow raises AttributeError ('stkoffset')."""
    raw = _saved("SPIDER", "F")
    raw[107] = 0x7F
    return bytes(raw)


DAMAGED: dict[str, Callable[[], bytes]] = {
    "phone.heic": damaged_heic,      # RuntimeError
    "texture.jpg": damaged_dds,      # NotImplementedError (a DDS saved under an image name)
    "avif.png": damaged_avif,        # RuntimeError
    "spider.png": damaged_spider,    # AttributeError
}
RAISED = {"phone.heic": "RuntimeError", "texture.jpg": "NotImplementedError",
          "avif.png": "RuntimeError", "spider.png": "AttributeError"}


def _raised(raw: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(raw)) as img:
                img.load()
    except Exception as exc:  # noqa: BLE001 - which type a decoder raises is the point
        return type(exc).__name__
    return "nothing"


def test_the_damaged_files_raise_what_the_issue_found():
    # Guards the generators: each must raise a type outside the old caught set.
    assert {name: _raised(make()) for name, make in DAMAGED.items()} == RAISED


def _folder(root: Path, damaged: bool = True) -> Path:
    for name, (width, height) in GOOD.items():
        make_image(root / name, width, height, seed=len(name))
    if damaged:
        for name, make in DAMAGED.items():
            (root / name).write_bytes(make())
    return root


def _outputs(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def _convert(*args: str):
    return CliRunner().invoke(main, ["convert", *args], catch_exceptions=False)


# ---- item 1: decoder errors outside the caught set fail their file alone ------------------


@pytest.mark.parametrize("extra", [[], ["--format", "jpg", "--size", "0"]],
                         ids=["decode", "planning-header-reads"])
def test_item1_damaged_files_fail_alone_with_their_type_and_the_run_goes_on(
    tmp_path, checkpoint, extra
):
    src = _folder(tmp_path / "in")
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = _convert(str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
                      "--backend", "torch", "--num-workers", "0", "--report", str(report),
                      "--json", *extra)
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    failed = {Path(r["input"]).name: r["error"] for r in records if r["status"] == "failed"}
    assert set(failed) == set(DAMAGED)
    for name, kind in RAISED.items():
        assert failed[name].startswith(f"cannot decode: {kind}: "), failed[name]
        assert "\n" not in failed[name]
    assert len(_outputs(out)) == len(GOOD)
    counts = json.loads(report.read_text())["counts"]
    assert counts | {"not_done": 0} == {"found": 7, "converted": 3, "skipped": 0, "failed": 4,
                                        "not_done": 0}
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


def test_item1_a_batch_the_engine_raises_on_fails_its_inputs_and_the_run_goes_on(
    tmp_path, checkpoint, monkeypatch
):
    from animegan_cli.stylizer import Stylizer

    real_run = Stylizer.run

    def run(self, batch):
        if batch[0].original_size == GOOD["b.png"]:
            raise RuntimeError("oneDNN primitive failed")
        return real_run(self, batch)

    monkeypatch.setattr(Stylizer, "run", run)
    src = _folder(tmp_path / "in", damaged=False)
    out = tmp_path / "out"
    result = _convert(str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
                      "--backend", "torch", "--num-workers", "0")
    assert result.exit_code == 1, result.output
    assert "b.png: the model failed on it: RuntimeError: oneDNN primitive failed" in result.output
    assert _outputs(out) == ["a.jpg", "sub/c.webp"]
    assert "converted 2" in result.output and "failed 1" in result.output


def test_item1_an_encoder_error_fails_that_output_alone_and_leaves_no_temp_file(
    tmp_path, checkpoint, monkeypatch
):
    real_encode = outputs.encode_image

    def encode(image, handle, fmt, *args, **kwargs):
        if fmt.pil_name == "PNG":
            handle.write(b"half an image")
            raise SystemError("encoder went wrong")
        return real_encode(image, handle, fmt, *args, **kwargs)

    monkeypatch.setattr(outputs, "encode_image", encode)
    src = _folder(tmp_path / "in", damaged=False)
    out = tmp_path / "out"
    result = _convert(str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
                      "--backend", "torch", "--num-workers", "0")
    assert result.exit_code == 1, result.output
    assert "b.png: cannot write" in result.output
    assert "SystemError: encoder went wrong" in result.output
    assert _outputs(out) == ["a.jpg", "sub/c.webp"]
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


@pytest.mark.slow
def test_item1_ray_local_fails_the_damaged_files_alone(tmp_path, checkpoint):
    ray = pytest.importorskip("ray")
    from animegan_cli.pipeline.convert import ConvertOptions, convert

    src = _folder(tmp_path / "in")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
             log_to_driver=False, configure_logging=False)
    try:
        summary = convert(ConvertOptions(
            inputs=[str(src)], output=tmp_path / "out", weights=checkpoint, size=32,
            backend="torch", precision="fp32", threads=1, ray="local"))
    finally:
        ray.shutdown()
    assert (summary.found, summary.converted, summary.failed) == (7, 3, 4)
    errors = {f.input.name: f.error for f in summary.failures}
    assert errors["spider.png"].startswith("cannot decode: AttributeError: ")
    assert len(_outputs(tmp_path / "out")) == len(GOOD)


# ---- serve: the app in-process, talked to over httpx (starlette's TestClient) -------------


@pytest.fixture
def app_client(checkpoint):
    with warnings.catch_warnings():  # starlette would like httpx2; httpx is what we have
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from animegan_cli.serve.app import create_app
    from animegan_cli.serve.service import ServeSettings
    from animegan_cli.stylizer import Stylizer

    stylizer = Stylizer.load(weights=checkpoint, size=32, backend="torch", precision="fp32")
    app = create_app(stylizer, ServeSettings(max_size=256))  # item 3 asks for size 256
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200
        yield client


def _png(width: int = 40, height: int = 28) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip_results(reply) -> tuple[list[dict], list[str]]:
    assert reply.status_code == 200, reply.text
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:  # a whole, valid ZIP
        assert archive.testzip() is None
        return json.loads(archive.read("results.json")), archive.namelist()


def test_item1_serve_keeps_the_good_files_and_answers_a_damaged_one_with_4xx(app_client):
    files = [("files", ("good.png", _png())), ("files", ("texture.jpg", damaged_dds())),
             ("files", ("spider.png", damaged_spider())), ("files", ("ok.png", _png(30, 30)))]
    records, names = _zip_results(app_client.post("/animeify", files=files))
    assert [r["status"] for r in records] == ["converted", "failed", "failed", "converted"]
    assert "NotImplementedError" in records[1]["error"]
    assert "AttributeError" in records[2]["error"]
    assert {"good.png", "ok.png"} <= set(names)
    for name, make in DAMAGED.items():
        reply = app_client.post("/animeify", files=[("files", (name, make()))])
        assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text)
        assert reply.json()["error"] and RAISED[name] in reply.json()["detail"]


# ---- item 3: outputs over WebP's 16383 px a side ------------------------------------------


def test_item3_a_panorama_over_webps_limit_fails_alone_at_planning(tmp_path, checkpoint):
    src = _folder(tmp_path / "in", damaged=False)
    Image.new("RGB", (17000, 600), (10, 80, 160)).save(src / "pano.png")
    out = tmp_path / "out"
    # --size 256: the panorama's model input is 256x8, as small as the model takes
    result = _convert(str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "256",
                      "--backend", "torch", "--num-workers", "0", "--format", "webp",
                      "--keep-size")
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    assert ("pano.png: output would be 17000x600, over WebP's limit of 16383 px per side; "
            "use another --format or drop --keep-size") in result.output
    assert _outputs(out) == ["a.webp", "b.webp", "sub/c.webp"]
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


def test_item3_the_encoder_refuses_what_webp_cannot_hold_before_writing():
    # The encode-time half of item 3: whatever reaches the encoder is refused in one line.
    from animegan_cli.core.errors import InputImageError
    from animegan_cli.media.formats import FORMATS

    handle = io.BytesIO()
    with pytest.raises(InputImageError, match="over WebP's limit of 16383 px per side"):
        outputs.encode_image(Image.new("RGB", (600, 17000)), handle, FORMATS["webp"])
    assert handle.getvalue() == b""


def test_item3_serve_answers_an_oversized_webp_with_422_and_keeps_the_zip_whole(app_client):
    pano = _png(17000, 600)
    fields = {"format": "webp", "keep_size": "true", "size": "256"}  # 256x8 for the model
    reply = app_client.post("/animeify", files=[("files", ("pano.png", pano))], data=fields)
    assert reply.status_code == 422, reply.text
    assert "output would be 17000x600, over WebP's limit" in reply.json()["detail"]
    files = [("files", ("a.png", _png())), ("files", ("pano.png", pano)),
             ("files", ("b.png", _png(30, 30)))]
    records, names = _zip_results(app_client.post("/animeify", files=files, data=fields))
    assert [r["status"] for r in records] == ["converted", "failed", "converted"]
    assert "16383" in records[1]["error"]
    assert {"a.webp", "b.webp", "results.json"} == set(names)


# ---- item 13: a file bigger than an image can be is never read into memory ----------------


@pytest.mark.slow
def test_item13_a_huge_sparse_photo_fails_alone_without_being_read(tmp_path, checkpoint):
    src = _folder(tmp_path / "in", damaged=False)
    huge = src / "photo.jpg"
    make_image(huge, 40, 28)
    os.truncate(huge, 3 << 30)  # 3 GiB: a 40x28 JPEG header, then a hole
    out = tmp_path / "out"
    command = [sys.executable, "-m", "animegan_cli", "convert", str(src), "-o", str(out),
               "--weights", str(checkpoint), "--size", "32", "--backend", "torch",
               "--max-memory", "2G", "--json"]
    # RSS of the run alone (and its decoder processes): measured in a wrapper process.
    wrapper = ("import resource, subprocess, sys; "
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stderr.write(done.stderr); print(done.stdout, end=''); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    *lines, peak_kib = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    failed = [json.loads(line) for line in lines if json.loads(line)["status"] == "failed"]
    assert [Path(r["input"]).name for r in failed] == ["photo.jpg"]
    assert failed[0]["error"] == ("file is 3.0 GB, more than a 40x28 image can take "
                                  "(at most 256 MB); not read")
    assert _outputs(out) == ["a.jpg", "b.png", "sub/c.webp"]
    assert int(peak_kib) < (2 << 20), f"peak RSS {int(peak_kib) >> 10} MiB"  # KiB: under 2 GiB


def test_item13_a_file_over_the_budgets_share_is_refused_before_reading(tmp_path):
    path = make_image(tmp_path / "big.png", 40, 28)
    with open(path, "ab") as handle:
        handle.truncate(path.stat().st_size + (20 << 20))  # 20 MB after IEND
    settings = data.PreprocessSettings(size=32, max_file_bytes=16 << 20)
    item = data.prepare_image(0, path, settings)
    assert item.error == ("file is 20 MB, more than one decoder may read within the memory "
                          "budget (16 MB, see --max-memory); not read")
    over = data.PreprocessSettings(size=32, max_pixels=1000)
    assert "over the --max-pixels limit" in data.prepare_image(0, path, over).error
    assert data.prepare_image(0, path, data.PreprocessSettings(size=32)).error is None


# ---- "Done when": a bounded fuzz over Pillow's formats -------------------------------------

FUZZ_SEED = 22
FUZZ_FILES = 3000
FUZZ_FORMATS = {  # Pillow's name -> (mode written, suffix in the convert run's folder)
    "PNG": ("RGBA", ".png"), "JPEG": ("RGB", ".jpg"), "GIF": ("P", ".png"),
    "BMP": ("RGB", ".bmp"), "TIFF": ("RGB", ".tif"), "WEBP": ("RGBA", ".webp"),
    "DDS": ("RGBA", ".jpg"), "SPIDER": ("F", ".png"), "ICO": ("RGBA", ".png"),
    "PCX": ("RGB", ".bmp"), "TGA": ("RGBA", ".tif"), "PPM": ("RGB", ".jpg"),
    "JPEG2000": ("RGB", ".jpg"), "SGI": ("RGB", ".png"), "QOI": ("RGBA", ".png"),
    "MSP": ("1", ".bmp"), "XBM": ("1", ".png"),
    "HEIF": ("RGB", ".heic"), "AVIF": ("RGB", ".webp"),
}


def _seeds() -> dict[str, bytes]:
    """One small valid file per format this Pillow can write (HEIF, AVIF where installed)."""
    import contextlib

    with contextlib.suppress(ImportError):
        from pillow_heif import register_heif_opener

        register_heif_opener()
    base = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
    seeds = {}
    for fmt, (mode, _) in FUZZ_FORMATS.items():
        buffer = io.BytesIO()
        try:
            base.convert(mode).save(buffer, format=fmt)
        except (KeyError, OSError, ValueError):  # no writer for it here
            continue
        seeds[fmt] = buffer.getvalue()
    return seeds


def _mutated(rng: random.Random, raw: bytes) -> bytes:
    """Truncated, bytes overwritten, or bytes inserted: as a damaged disk or download does."""
    out = bytearray(raw)
    kind = rng.randrange(3)
    if kind == 0:
        return bytes(out[: rng.randrange(1, len(out))])
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    if kind == 2:
        at = rng.randrange(len(out))
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


@pytest.mark.slow
def test_fuzzed_files_never_raise_from_decoding_and_never_end_a_run(tmp_path, checkpoint):
    seeds = _seeds()
    assert {"PNG", "JPEG", "GIF", "TIFF", "WEBP", "DDS", "SPIDER"} <= set(seeds)
    rng = random.Random(FUZZ_SEED)
    settings = data.PreprocessSettings(size=32, max_pixels=1_000_000)
    path = tmp_path / "fuzz.bin"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about what it repairs
        for _ in range(FUZZ_FILES):
            fmt = rng.choice(sorted(seeds))
            path.write_bytes(_mutated(rng, seeds[fmt]))
            data.header_upright_size(path)  # planning's header reads: never raise either
            outputs.image_has_alpha(path)
            item = data.prepare_image(0, path, settings)  # (a): returns, never raises
            assert (item.error is None) != (item.pixels is None)
            assert item.error is None or "\n" not in item.error
    # (b): a real run over mutated files beside good ones
    src = _folder(tmp_path / "in", damaged=False)
    (src / "fuzz").mkdir()
    for i in range(120):
        fmt = rng.choice(sorted(seeds))
        name = f"m{i:03d}_{fmt.lower()}{FUZZ_FORMATS[fmt][1]}"
        (src / "fuzz" / name).write_bytes(_mutated(rng, seeds[fmt]))
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = _convert(str(src), "-o", str(out), "--weights", str(checkpoint), "--size", "32",
                      "--backend", "torch", "--num-workers", "1", "--max-pixels", "1M",
                      "--format", "jpg", "--report", str(report))
    assert result.exit_code in (0, 1), result.output
    assert "internal error" not in result.output
    counts = json.loads(report.read_text())["counts"]
    assert counts["found"] == 123 and counts["not_done"] == 0
    assert counts["converted"] + counts["failed"] == 123
    assert (result.exit_code == 1) == (counts["failed"] > 0)
    written = set(_outputs(out))
    assert {"a.jpg", "b.jpg", "sub/c.jpg"} <= written
    assert len(written) == counts["converted"]
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))


def test_item21_serve_takes_format_jpeg_as_jpg(app_client):
    # convert's --format takes jpeg (issue 22 item 21); the form's format field does too.
    reply = app_client.post("/animeify", files=[("files", ("a.png", _png()))],
                            data={"format": "jpeg"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/jpeg"
    assert 'filename="a.jpg"' in reply.headers["content-disposition"]


def test_the_page_knows_the_largest_size_the_server_takes(app_client):
    # Sizes over --max-size are refused (issue 22 item 4): the page is told, to not offer them.
    assert '<select id="size" data-max-size="256">' in app_client.get("/").text
