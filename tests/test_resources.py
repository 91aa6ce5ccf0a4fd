"""The memory estimate, the budget, and fitting a run into it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from animegan_cli.core.errors import UsageError
from animegan_cli.engines import memory
from animegan_cli.pipeline import resources
from animegan_cli.pipeline.resources import (
    BASE_BYTES,
    GIB,
    MIB,
    estimate_peak,
    largest_size_within,
    parse_size,
    plan_memory,
)
from tests.conftest import make_image


@pytest.mark.parametrize(("text", "unit", "value"), [
    ("4G", 1024, 4 * GIB), ("512M", 1024, 512 * MIB), ("1.5g", 1024, int(1.5 * GIB)),
    ("2048", 1024, 2048), ("8GiB", 1024, 8 * GIB), ("200M", 1000, 200_000_000),
    ("0", 1000, 0), ("50m", 1000, 50_000_000),
])
def test_parse_size(text: str, unit: int, value: int):
    assert parse_size(text, unit) == value


@pytest.mark.parametrize("text", ["", "G", "-1G", "4X", "four"])
def test_parse_size_rejects_nonsense(text: str):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_estimate_follows_the_measured_line():
    # 12 MP photo at native size, fp32: well over 15 GB (the OOM killer on a 16 GB box).
    assert 15 * GIB < estimate_peak(12_000_000) < 16 * GIB
    one = estimate_peak(1_000_000)
    assert estimate_peak(1_000_000, batch=4) - BASE_BYTES == pytest.approx(4 * (one - BASE_BYTES))
    assert estimate_peak(2_000_000) > one > estimate_peak(0) == BASE_BYTES


def test_emulated_bf16_is_costlier_than_fp32(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(memory, "cpu_has_fast_bf16", lambda: False)
    assert estimate_peak(1_000_000, precision="bf16") > 4 * (estimate_peak(1_000_000) - BASE_BYTES)
    monkeypatch.setattr(memory, "cpu_has_fast_bf16", lambda: True)
    assert estimate_peak(1_000_000, precision="bf16") <= estimate_peak(1_000_000)


def test_budget_is_a_share_of_available_memory(monkeypatch: pytest.MonkeyPatch):
    assert resources.available_memory() > 0
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GIB)
    assert resources.default_budget() == 6 * GIB


def test_largest_size_within_fits():
    side = largest_size_within(4 * GIB)
    assert side % 64 == 0
    assert estimate_peak(side * side) <= 4 * GIB < estimate_peak((side + 64) ** 2)
    assert largest_size_within(BASE_BYTES // 2) == 0


def test_size_that_cannot_fit_one_image_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        plan_memory([Path("a.jpg")], size=4096, batch_size=1, precision="fp32", budget=4 * GIB)
    message = str(info.value)
    assert message.startswith("--size 4096 needs about 21.0 GB of memory per image")
    assert "budget of 4.0 GB" in message
    assert f"use --size {largest_size_within(4 * GIB)} or raise --max-memory" in message


def test_batch_size_is_lowered_to_fit_and_says_so():
    plan = plan_memory([Path("a.jpg")] * 10, size=1024, batch_size=8, precision="fp32",
                       budget=4 * GIB)
    per_image = estimate_peak(1024 * 1024) - BASE_BYTES
    assert plan.batch_size == (4 * GIB - BASE_BYTES) // per_image == 2
    assert plan.message == "lowering batch size from 8 to 2 to fit in 4.0 GB (see --max-memory)"
    assert plan.too_big == {}
    unchanged = plan_memory([Path("a.jpg")], 256, 8, "fp32", 4 * GIB)
    assert unchanged.batch_size == 8 and unchanged.message is None


def test_native_size_checks_each_image_from_its_header(tmp_path: Path):
    big = tmp_path / "12mp.png"
    Image.new("L", (4000, 3000)).save(big)  # compresses to a few kB
    small = make_image(tmp_path / "small.png", 64, 48)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    plan = plan_memory([small, big, broken], size=0, batch_size=4, precision="fp32",
                       budget=4 * GIB)
    assert list(plan.too_big) == [1]
    assert plan.too_big[1].startswith(
        "needs about 15.3 GB of memory at native size (12.0 MP), more than the budget of 4.0 GB;"
    )
    assert "--size" in plan.too_big[1] and "--max-memory" in plan.too_big[1]
    assert plan.batch_size == 4  # the small image alone decides the batch size now


def test_native_size_leaves_images_over_max_pixels_to_the_decoder(tmp_path: Path):
    big = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(big)
    plan = plan_memory([big], size=0, batch_size=1, precision="fp32", budget=4 * GIB,
                       max_pixels=10_000_000)
    assert plan.too_big == {}
