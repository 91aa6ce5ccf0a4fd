"""Engine set-up (device, precision, threads) and the pixel mapping around the model."""

from __future__ import annotations

import pytest
import torch

from animegan_cli.core.errors import UsageError
from animegan_cli.engines import base as engine
from animegan_cli.engines import contract
from animegan_cli.engines.base import (
    TorchEngine,
    resolve_device,
    resolve_precision,
    to_model_input,
    to_pixels,
    torch_threads,
)
from animegan_cli.model.generator import Generator


def test_pixel_mapping_round_trips_every_value() -> None:
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    x = to_model_input(values, torch.float32)
    assert x.min() == -1.0 and x.max() == 1.0
    back = to_pixels(x)  # (N, H, W, 3)
    assert torch.equal(back.permute(0, 3, 1, 2), values)


def test_to_pixels_clamps_out_of_range_values() -> None:
    y = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_pixels(y)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_auto_precision_follows_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(contract, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(contract, "cpu_flags", lambda: frozenset({"avx2"}))
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


def test_unknown_precision_and_device_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(UsageError, match="device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_fp32_engine_matches_the_generator_exactly() -> None:
    torch.manual_seed(0)
    generator = Generator().eval()
    batch = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)
    with torch.inference_mode():
        expected = to_pixels(generator(to_model_input(batch, torch.float32)))
    result = TorchEngine(Generator().eval(), torch.device("cpu"), "fp32")
    result.generator.load_state_dict(generator.state_dict())
    got = result.run(batch)
    assert got.dtype == torch.uint8 and got.shape == (2, 20, 28, 3)
    assert (got.int() - expected.int()).abs().max() <= 1


def test_bf16_engine_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    state = Generator().state_dict()
    batch = torch.randint(0, 256, (1, 3, 24, 24), dtype=torch.uint8)
    fp32 = Generator()
    fp32.load_state_dict(state)
    bf16 = Generator()
    bf16.load_state_dict(state)
    a = TorchEngine(fp32, torch.device("cpu"), "fp32").run(batch).float()
    b = TorchEngine(bf16, torch.device("cpu"), "bf16").run(batch).float()
    mse = ((a - b) ** 2).mean().item()
    psnr = 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-9))).item()
    assert psnr > 30


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1  # the tests run torch on one thread (conftest)
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_to_pixels_names_the_images_whose_result_is_not_finite(bad: float) -> None:
    y = torch.zeros(3, 3, 4, 4)
    y[1, 2, 3, 3] = bad
    with pytest.raises(engine.NonFiniteOutput) as info:
        to_pixels(y)
    assert info.value.bad == [1]
    assert info.value.pixels.shape == (3, 4, 4, 3)
    assert torch.equal(info.value.pixels[0], to_pixels(y[:1])[0])
    assert str(info.value) == "model produced non-finite values (NaN/inf)"


def test_shapes_default_to_static_and_are_checked_where_auto_is_resolved() -> None:
    def shapes(spec: engine.EngineSpec) -> str:
        return spec.options.shapes  # type: ignore[attr-defined]

    assert shapes(engine.resolve_spec(backend="openvino")) == "static"
    assert shapes(engine.resolve_spec(backend="openvino", shapes="dynamic")) == "dynamic"
    with pytest.raises(UsageError, match="unknown shapes 'bounded'; choose from: static, dynamic"):
        engine.resolve_spec(shapes="bounded")


def test_static_or_dynamic_shapes_never_make_an_output_stale() -> None:
    from animegan_cli.records.staleness import settings_change
    from animegan_cli.stylizer import PixelSettings, Stylizer

    def settings(shapes: str) -> dict[str, object]:
        spec = engine.resolve_spec(backend="openvino", precision="fp32", shapes=shapes)
        return Stylizer(None, spec, None, PixelSettings()).settings  # type: ignore[arg-type]

    assert settings_change(settings("static"), settings("dynamic")) is None
