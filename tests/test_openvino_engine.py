"""The OpenVINO engine against the torch reference, and its IR cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan_cli.core.errors import UsageError
from animegan_cli.engines import contract as engine_module
from animegan_cli.engines.base import TorchEngine, resolve_backend, resolve_precision, to_pixels
from animegan_cli.engines.openvino_engine import OpenVINOEngine
from animegan_cli.model.generator import Generator
from animegan_cli.model.weights import load_generator, load_state_dict
from tests.conftest import GOLDEN


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    return Generator().eval()


@pytest.fixture(scope="module")
def ir_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ir")


KEY = "0" * 40


@pytest.fixture(scope="module")
def fp32_engine(generator, ir_cache) -> OpenVINOEngine:
    """Converted once for the module; the other tests reuse its cached IR."""
    return OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-9))).item()


def test_fp32_matches_torch_and_handles_any_shape(generator, fp32_engine):
    engine = fp32_engine
    reference = TorchEngine(Generator(), torch.device("cpu"), "fp32")
    reference.generator.load_state_dict(generator.state_dict())
    for shape in [(1, 3, 32, 48), (2, 3, 28, 20)]:
        batch = torch.randint(0, 256, shape, dtype=torch.uint8)
        got, expected = engine.run(batch), reference.run(batch)
        assert got.shape == (shape[0], shape[2], shape[3], 3) and got.dtype == torch.uint8
        assert (got.int() - expected.int()).abs().max() <= 2
        assert psnr(got, expected) > 45


def test_first_start_converts_second_start_reads_the_cached_ir(generator, fp32_engine,
                                                               ir_cache):
    assert not fp32_engine.from_cache
    second = OpenVINOEngine(generator, KEY, "fp32", 1, ir_cache)
    assert second.from_cache
    assert not [p for p in ir_cache.iterdir() if p.name.startswith(".ir-")]
    batch = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(fp32_engine.run(batch), second.run(batch))


@pytest.mark.slow
def test_different_align_corners_do_not_share_an_ir(fp32_engine, ir_cache):
    other = OpenVINOEngine(Generator(align_corners=True).eval(), KEY, "fp32", 1, ir_cache)
    assert not other.from_cache


def test_streams_run_a_batch_side_by_side_with_the_same_result(generator, fp32_engine,
                                                                ir_cache):
    two = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, streams=2)
    assert two.from_cache and "2 streams" in two.description
    batch = torch.randint(0, 256, (3, 3, 24, 40), dtype=torch.uint8)
    assert (two.run(batch).int() - fp32_engine.run(batch).int()).abs().max() <= 1


def test_static_shapes_compile_each_shape_once_and_match_dynamic(generator, fp32_engine,
                                                                  ir_cache, caplog):
    dynamic = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, shapes="dynamic")
    assert list(dynamic.compiled) == [None] and "dynamic shapes" in dynamic.description
    static = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, max_shapes=2)
    assert not static.compiled and "static shapes" in static.description
    a, b, short = [torch.randint(0, 256, s, dtype=torch.uint8)
                   for s in [(2, 3, 64, 72), (2, 3, 72, 64), (1, 3, 64, 72)]]
    with caplog.at_level(logging.INFO, logger="animegan_cli"):
        results = [static.run(x) for x in (a, b, a, short)]
    assert [r.shape[:3] for r in results] == [(2, 64, 72), (2, 72, 64), (2, 64, 72), (1, 64, 72)]
    for x, got in zip((a, b, a, short), results):
        assert (got.int() - dynamic.run(x).int()).abs().max() <= 1
    # a's model was reused; the short last batch got its own N; the LRU keeps two.
    compiled = [r.getMessage() for r in caplog.records if "compiled for" in r.getMessage()]
    assert [m.split()[3] for m in compiled] == ["2x3x64x72", "2x3x72x64", "1x3x64x72"]
    assert list(static.compiled) == [(2, 3, 64, 72), (1, 3, 64, 72)]
    static.run(b)  # evicted, so compiled again
    assert list(static.compiled) == [(1, 3, 64, 72), (2, 3, 72, 64)]


def test_the_compiled_models_pixels_are_bounded_too(generator, fp32_engine, ir_cache):
    static = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, max_pixels=64 * 64 + 72 * 64)
    for h in (64, 72):
        static.run(torch.zeros(1, 3, h, 64, dtype=torch.uint8))
    assert list(static.compiled) == [(1, 3, 64, 64), (1, 3, 72, 64)]  # exactly the budget
    static.run(torch.zeros(1, 3, 80, 64, dtype=torch.uint8))
    assert list(static.compiled) == [(1, 3, 80, 64)]  # with either other one: over it


def test_static_streams_run_each_image_on_the_one_image_model(generator, fp32_engine,
                                                              ir_cache):
    two = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache, streams=2)
    batch = torch.randint(0, 256, (3, 3, 64, 72), dtype=torch.uint8)
    assert (two.run(batch).int() - fp32_engine.run(batch).int()).abs().max() <= 1
    assert list(two.compiled) == [(1, 3, 64, 72)]


def test_batches_of_tiny_images_run_on_the_dynamic_model(generator, fp32_engine, ir_cache):
    # OpenVINO 2026.4 crashed compiling static f32 models for these (see static_is_safe).
    static = OpenVINOEngine(generator, KEY, "fp32", 2, ir_cache)
    batch = torch.randint(0, 256, (2, 3, 32, 24), dtype=torch.uint8)
    assert (static.run(batch).int() - fp32_engine.run(batch).int()).abs().max() <= 1
    static.run(batch[:1])
    assert list(static.compiled) == [None]


@pytest.mark.slow
@pytest.mark.skipif(not GOLDEN.exists(), reason="../shared/spec/golden not present")
def test_static_fp32_reproduces_the_golden_files(tmp_path):
    state = load_state_dict(GOLDEN / "golden_generator.pt")
    rgb = np.asarray(Image.open(GOLDEN / "input_128x96.png").convert("RGB"))
    engine = OpenVINOEngine(load_generator(state), "9" * 40, "fp32", 2, tmp_path)
    got = engine.run(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])[0].int()
    assert list(engine.compiled) == [(1, 3, *rgb.shape[:2])]  # the static model ran
    expected = np.load(GOLDEN / "output_128x96_alignFalse.npy")
    reference = to_pixels(torch.from_numpy(expected).permute(2, 0, 1)[None])[0].int()
    assert (got - reference).abs().max() <= 1


def test_unknown_shapes_mode_is_refused(generator, ir_cache):
    with pytest.raises(UsageError, match="unknown shapes 'bounded'"):
        OpenVINOEngine(generator, KEY, "fp32", 1, ir_cache, shapes="bounded")


def test_auto_backend_follows_the_measurements(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine_module, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert resolve_backend("auto", cpu) == "openvino"
    monkeypatch.setattr(engine_module, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("auto", cpu, "int8") == "openvino"  # only OpenVINO has int8
    assert resolve_backend("auto", torch.device("cuda")) == "torch"


def test_backend_and_precision_rules():
    cpu = torch.device("cpu")
    assert resolve_backend("torch", cpu) == "torch"
    assert resolve_backend("openvino", cpu) == "openvino"
    with pytest.raises(UsageError, match="CPU only"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(UsageError, match="needs --backend openvino"):
        resolve_precision("int8", cpu, "torch")
    assert resolve_precision("int8", cpu, "openvino") == "int8"


INT8_SCRIPT = """
import json, sys, torch
from pathlib import Path
from animegan_cli.model.generator import Generator
from animegan_cli.engines.openvino_engine import OpenVINOEngine
from animegan_cli.model.weights import load_generator, load_state_dict
from tests.conftest import GOLDEN

torch.manual_seed(0)
generator = Generator().eval()
cache = Path(sys.argv[1])
rng = torch.Generator().manual_seed(1)
calibration = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=rng)
               for _ in range(4)]
calls = []

def images():
    calls.append(1)
    return calibration

int8 = OpenVINOEngine(generator, "3" * 40, "int8", 2, cache, calibration=images)
fp32 = OpenVINOEngine(generator, "3" * 40, "fp32", 2, cache)
batch = torch.stack(calibration[:2])
a, b = int8.run(batch).float(), fp32.run(batch).float()
mse = ((a - b) ** 2).mean().item()
again = OpenVINOEngine(generator, "3" * 40, "int8", 2, cache, calibration=images)
print(json.dumps({"psnr": 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-9))).item(),
                  "cached": again.from_cache, "calls": len(calls),
                  "description": int8.description}))
"""


@pytest.mark.slow
def test_int8_quantizes_on_the_given_images_and_stays_recognisable(tmp_path):
    pytest.importorskip("nncf")
    # In a process of its own: NNCF, once loaded, left this test process's heap corrupted
    # for a later subprocess call (a crash in an unrelated test), so it never loads here.
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", INT8_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 15 < result["psnr"] < 60  # quantized: close, but not the same model
    assert result["cached"] and result["calls"] == 1
    assert result["description"].startswith("openvino cpu int8")


@pytest.mark.slow
def test_convert_with_the_openvino_backend(photo_dir, tmp_path, checkpoint):
    from animegan_cli.pipeline.convert import ConvertOptions, convert

    summary = convert(ConvertOptions(inputs=[str(photo_dir)], output=tmp_path / "out",
                                     weights=checkpoint, size=32, num_workers=0,
                                     backend="openvino"))
    assert summary.converted == 3
    assert summary.engine.startswith("openvino cpu")


@pytest.mark.slow
def test_verbose_convert_says_which_shapes_it_compiled_for(photo_dir, tmp_path, checkpoint):
    from click.testing import CliRunner

    from animegan_cli.cli.app import main

    result = CliRunner().invoke(main, [
        "convert", str(photo_dir), "-o", str(tmp_path / "out"), "--weights", str(checkpoint),
        "--size", "96", "--num-workers", "0", "--backend", "openvino", "-v"])  # >= 64x64
    assert result.exit_code == 0, result.output
    compiled = [line for line in result.output.splitlines() if "compiled for" in line]
    assert compiled and all(line.startswith("animegan: openvino: compiled for 1x3x")
                            for line in compiled)
