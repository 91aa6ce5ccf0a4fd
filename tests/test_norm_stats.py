"""Normalisation statistics as an engine input and output (issue 24, item 1).

Every GroupNorm(1) of the generator either computes its statistics (the default, today's
pixels) or takes them from outside, per image; a pass can return them. Both the torch and
the OpenVINO engine do it; ONNX Runtime declares it does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from animegan_cli.core.errors import UsageError
from animegan_cli.engines.base import (
    ENGINES,
    EngineContext,
    create_engine,
    resolve_spec,
    stats_engine,
)
from animegan_cli.model.norm_stats import StatsGenerator, norm_layers
from animegan_cli.model.weights import load_generator, load_state_dict
from tests.conftest import photo_like

LAYERS = 24  # the generator's GroupNorms: 3 + 2 + 14 + 2 + 3


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def batch_of(*seeds: int, width: int = 52, height: int = 36) -> torch.Tensor:
    images = [photo_like(width, height, seed) for seed in seeds]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def engine_for(backend: str, checkpoint: Path, cache: Path):
    spec = resolve_spec("cpu", backend, "fp32", 1)
    generator = load_generator(load_state_dict(checkpoint))
    engine = create_engine(generator, spec, EngineContext("d" * 40, cache))
    return stats_engine(engine, spec, "this test")


STATS_BACKENDS = [
    "torch",
    pytest.param("openvino", marks=pytest.mark.slow),  # converts the stats IR: seconds
]


def test_the_generator_has_a_fixed_list_of_norm_layers(checkpoint: Path) -> None:
    generator = load_generator(load_state_dict(checkpoint))
    assert len(norm_layers(generator)) == StatsGenerator(generator).layers == LAYERS


def test_default_pass_is_untouched_by_the_stats_machinery(checkpoint: Path) -> None:
    """After a stats pass the plain forward is byte-identical to before (no state left)."""
    generator = load_generator(load_state_dict(checkpoint)).eval()
    x = batch_of(1).float() / 127.5 - 1
    with torch.inference_mode():
        before = generator(x)
        StatsGenerator(generator)(x, torch.zeros(1, LAYERS, 2), None)
        assert torch.equal(generator(x), before)


@pytest.mark.parametrize("backend", STATS_BACKENDS)
def test_own_stats_returned_and_supplied_back_give_todays_pixels(
    backend: str, checkpoint: Path, tmp_path: Path
) -> None:
    engine = engine_for(backend, checkpoint, tmp_path)
    batch = batch_of(1, 2)
    today = engine.run(batch)
    pixels, stats = engine.run_stats(batch)
    assert stats.shape == (2, LAYERS, 2) and stats.dtype == np.float32
    assert (stats[:, :, 1] > 0).all()  # variances
    assert psnr(pixels, today) >= 60
    if backend == "torch":
        assert torch.equal(pixels, today)  # the same kernel as a plain run
    supplied, used = engine.run_stats(batch, stats)
    assert psnr(supplied, today) >= 60
    np.testing.assert_array_equal(used, stats)


@pytest.mark.parametrize("backend", STATS_BACKENDS)
def test_stats_are_per_image_and_mix_blends_them(
    backend: str, checkpoint: Path, tmp_path: Path
) -> None:
    engine = engine_for(backend, checkpoint, tmp_path)
    batch = batch_of(1, 2)
    plain, stats = engine.run_stats(batch)
    swapped, _ = engine.run_stats(batch, stats[::-1].copy())
    assert psnr(swapped[0], plain[0]) < 50  # image 0 styled with image 1's statistics
    _, own = engine.run_stats(batch, stats[::-1].copy(), np.zeros(2, np.float32))
    np.testing.assert_allclose(own, stats, rtol=1e-4, atol=1e-5)
    _, half = engine.run_stats(batch, np.zeros_like(stats), np.array([0.0, 0.5], np.float32))
    np.testing.assert_allclose(half[0], stats[0], rtol=1e-4, atol=1e-5)
    # the first layer's input is the image itself: its own statistics, then halved
    np.testing.assert_allclose(half[1, 0], stats[1, 0] / 2, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_torch_and_openvino_measure_the_same_stats(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    batch = batch_of(3)
    _, by_torch = engine_for("torch", checkpoint, tmp_path).run_stats(batch)
    _, by_openvino = engine_for("openvino", checkpoint, tmp_path).run_stats(batch)
    np.testing.assert_allclose(by_openvino, by_torch, rtol=1e-3, atol=1e-4)




def test_wrong_stats_shape_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    engine = engine_for("torch", checkpoint, tmp_path)
    with pytest.raises(ValueError, match=r"stats must be \(1, 24, 2\)"):
        engine.run_stats(batch_of(1), np.zeros((1, 3, 2), np.float32))


def test_backends_without_stats_say_so_through_their_declaration() -> None:
    assert ENGINES["torch"].norm_stats and ENGINES["openvino"].norm_stats
    assert ENGINES["onnxruntime"].norm_stats == ()
    spec = resolve_spec("cpu", "onnxruntime", "fp32", 1)
    with pytest.raises(UsageError, match="tiles needs an engine that takes normalisation"):
        stats_engine(object(), spec, "tiles")  # type: ignore[arg-type]
