"""Compiling a run's first OpenVINO models ahead, on a thread, and the engine adopting them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from animegan_cli.engines.base import EngineSpec, WarmupRequest
from animegan_cli.engines.base import warmed as engine_warmed
from animegan_cli.engines.openvino_engine import OpenVINOEngine, OpenVINOOptions
from animegan_cli.engines.openvino_warmup import LOOKAHEAD, Warmup, first_shapes
from animegan_cli.media import data
from animegan_cli.model.generator import Generator
from tests.conftest import make_image

KEY = "1" * 40
SPEC = EngineSpec(backend="openvino", precision="fp32", threads=2,
                  options=OpenVINOOptions(shapes="static"))


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator().eval()


@pytest.fixture(scope="module")
def ir_cache(tmp_path_factory: pytest.TempPathFactory, generator) -> Path:
    """A cache holding the generator's IR, as any run after a checkpoint's first finds it."""
    cache = tmp_path_factory.mktemp("ir")
    OpenVINOEngine(generator, KEY, "fp32", 2, cache)
    return cache


def compiled_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "compiled for" in r.getMessage()]


def test_first_shapes_are_read_from_headers_upright_and_in_first_seen_order(tmp_path):
    turned = Image.Exif()
    turned[0x0112] = 6  # stored 80x60, shown turned a quarter: 60x80
    paths = [
        make_image(tmp_path / "wide.jpg", 80, 60),
        make_image(tmp_path / "turned.jpg", 80, 60, exif=turned),
        make_image(tmp_path / "wide2.png", 160, 120),
        tmp_path / "broken.jpg",
        make_image(tmp_path / "huge.png", 300, 300),
    ]
    paths[3].write_bytes(b"not an image")
    settings = data.PreprocessSettings(size=64, max_pixels=200 * 200)
    assert first_shapes(paths, settings, 1) == [(1, 3, 48, 64), (1, 3, 64, 48)]
    # Batches of up to 4 images: the run has two wide ones and one turned one.
    assert first_shapes(paths, settings, 4) == [(2, 3, 48, 64), (1, 3, 64, 48)]
    # Beyond what the headers show, more images of each shape may follow: full batches.
    many = paths[:3] * LOOKAHEAD
    assert first_shapes(many, settings, 4) == [(4, 3, 48, 64), (4, 3, 64, 48)]


def test_the_engine_adopts_the_models_compiled_ahead_and_they_give_the_same_pixels(
    generator, ir_cache, caplog
):
    with caplog.at_level(logging.INFO, logger="animegan_cli"):
        warmup = Warmup(SPEC, KEY, False, ir_cache, [(1, 3, 64, 72), (2, 3, 72, 64)])
        engine = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, warmup=warmup)
        assert list(engine.compiled) == [(1, 3, 64, 72), (2, 3, 72, 64)]
        assert engine.compile_seconds > 0
        a = torch.randint(0, 256, (1, 3, 64, 72), dtype=torch.uint8)
        b = torch.randint(0, 256, (2, 3, 72, 64), dtype=torch.uint8)
        got = [engine.run(a), engine.run(b)]
    # Compiled once each, ahead: running them compiled nothing more.
    lines = compiled_lines(caplog)
    assert [line.split()[3] for line in lines] == ["1x3x64x72", "2x3x72x64"]
    assert all(", ahead of its first image" in line for line in lines)
    plain = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache)
    assert torch.equal(got[0], plain.run(a)) and torch.equal(got[1], plain.run(b))


def test_models_compiled_for_other_settings_are_not_adopted(generator, ir_cache):
    warmup = Warmup(SPEC, KEY, False, ir_cache, [(1, 3, 64, 72)])
    engine = OpenVINOEngine(generator, KEY, "fp32", 1, ir_cache, warmup=warmup)  # 1 thread
    assert not engine.compiled


def test_without_a_cached_ir_the_warmup_leaves_the_conversion_to_the_engine(
    generator, tmp_path
):
    warmup = Warmup(SPEC, KEY, False, tmp_path, [(1, 3, 64, 72)])
    engine = OpenVINOEngine(generator, KEY, "fp32", 2, tmp_path, warmup=warmup)
    assert not engine.from_cache and not engine.compiled
    assert (tmp_path / next(p.name for p in tmp_path.glob("*.xml"))).exists()


def test_only_a_static_openvino_run_with_a_known_checkpoint_warms_up(tmp_path):
    paths = [make_image(tmp_path / "a.jpg", 80, 60)]
    settings = data.PreprocessSettings(size=64)
    def request(key: str) -> WarmupRequest:
        return WarmupRequest(key, False, tmp_path, paths, settings, 1)

    dynamic = EngineSpec(backend="openvino", options=OpenVINOOptions(shapes="dynamic"))
    for spec, key in [(EngineSpec(backend="torch"), KEY), (SPEC, ""), (dynamic, KEY)]:
        with engine_warmed(spec, request(key)) as warmup:
            assert warmup is None
    with engine_warmed(SPEC, request(KEY)) as warmup:
        assert warmup is not None and warmup.shapes == [(1, 3, 48, 64)]


def test_the_warmup_needs_no_torch_so_it_runs_while_torch_imports(ir_cache):
    script = f"""
import json, sys
from pathlib import Path
from animegan_cli.engines.base import EngineSpec
from animegan_cli.engines.openvino_warmup import Warmup
from animegan_cli.engines.openvino_engine import OpenVINOOptions, compile_config, ir_path
spec = EngineSpec(backend="openvino", precision="fp32", threads=2, options=OpenVINOOptions())
cache = Path({str(ir_cache)!r})
warmup = Warmup(spec, {KEY!r}, False, cache, [(1, 3, 64, 72)])
ready = warmup.take(ir_path(cache, {KEY!r}, False, False), compile_config("fp32", 2, 1))
compiled = [list(s) for s in ready.compiled]
print(json.dumps({{"compiled": compiled, "torch": "torch" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == {"compiled": [[1, 3, 64, 72]], "torch": False}


@pytest.mark.slow
def test_a_second_convert_compiles_its_shapes_ahead(photo_dir, tmp_path, checkpoint):
    def run(out: str) -> list[str]:
        result = subprocess.run([
            sys.executable, "-m", "animegan_cli", "convert", str(photo_dir),
            "-o", str(tmp_path / out), "--weights", str(checkpoint), "--size", "96",
            "--backend", "openvino", "-v"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stderr.splitlines() if "compiled for" in line]

    first = run("one")  # converts the checkpoint: nothing cached to compile ahead
    assert first and not any("ahead" in line for line in first)
    second = run("two")
    assert second and all(", ahead of its first image" in line for line in second)
    shapes = sorted(line.split()[4] for line in second)
    assert shapes == sorted(line.split()[4] for line in first)
