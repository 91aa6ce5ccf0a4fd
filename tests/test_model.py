"""The generator against the golden files (the spec's and our own), and its shape contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from animegan_cli.model.generator import MIN_SIDE, Generator
from animegan_cli.model.weights import load_generator, load_state_dict
from tests.conftest import GOLDEN
from tests.data import make_golden

needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="../shared/spec/golden not present")


def _state_dict_keys_from_spec() -> dict[str, tuple[int, ...]]:
    rows = (GOLDEN.parent / "animeganv2_state_dict.tsv").read_text().splitlines()[1:]
    return {
        key: tuple(int(n) for n in shape.split("x"))
        for key, shape in (row.split("\t") for row in rows if row)
    }


@needs_golden
def test_state_dict_matches_the_published_key_list() -> None:
    expected = _state_dict_keys_from_spec()
    actual = {k: tuple(v.shape) for k, v in Generator().state_dict().items()}
    assert actual == expected
    assert sum(int(np.prod(s)) for s in actual.values()) == 2_143_552


@needs_golden
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", ["101x67", "128x96"])
def test_generator_reproduces_golden_outputs(size: str, align_corners: bool) -> None:
    generator = load_generator(
        load_state_dict(GOLDEN / "golden_generator.pt"), align_corners=align_corners
    )
    rgb = np.asarray(Image.open(GOLDEN / f"input_{size}.png").convert("RGB"), dtype=np.float32)
    x = torch.from_numpy(rgb / 255 * 2 - 1).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = generator(x)[0].permute(1, 2, 0).numpy()
    expected = np.load(GOLDEN / f"output_{size}_align{align_corners}.npy")
    assert y.shape == expected.shape
    assert np.abs(y - expected).max() < 1e-4


@needs_golden
def test_align_corners_settings_differ() -> None:
    a = np.load(GOLDEN / "output_128x96_alignFalse.npy")
    b = np.load(GOLDEN / "output_128x96_alignTrue.npy")
    assert np.abs(a - b).max() > 1e-3


@pytest.fixture(scope="module")
def seeded_state() -> dict[str, torch.Tensor]:
    """The shipped fixture's weights, computed from its seed (tests/data/make_golden.py)."""
    return make_golden.seeded_state_dict()


def test_shipped_fixture_weights_are_the_ones_its_outputs_came_from(seeded_state) -> None:
    # A mismatch means torch's random stream changed, not the model: regenerate the fixture.
    meta = json.loads(make_golden.META.read_text())
    assert make_golden.weights_sha256(seeded_state) == meta["weights_sha256"]


@pytest.mark.parametrize("align_corners", [False, True])
def test_generator_reproduces_the_shipped_fixture(seeded_state, align_corners: bool) -> None:
    rgb = np.asarray(Image.open(make_golden.INPUT).convert("RGB"))
    y = make_golden.reference_output(seeded_state, rgb, align_corners)
    expected = np.load(make_golden.output_path(align_corners))
    assert y.shape == expected.shape == (make_golden.HEIGHT, make_golden.WIDTH, 3)
    assert np.abs(y - expected).max() < 1e-4


def test_shipped_fixture_align_corners_settings_differ() -> None:
    a = np.load(make_golden.output_path(False))
    b = np.load(make_golden.output_path(True))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("height,width", [(MIN_SIDE, MIN_SIDE), (9, 13), (30, 17)])
def test_output_has_the_input_size(height: int, width: int) -> None:
    x = torch.rand(2, 3, height, width) * 2 - 1
    with torch.inference_mode():
        y = Generator().eval()(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0


def test_batched_result_equals_unbatched() -> None:
    torch.manual_seed(0)
    generator = Generator().eval()
    x = torch.rand(3, 3, 24, 32) * 2 - 1
    with torch.inference_mode():
        batched = generator(x)
        single = torch.cat([generator(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)
