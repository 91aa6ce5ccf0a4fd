"""Fewer compiles (issue 27): OpenVINO's model cache across runs, bounded; --shapes hybrid;
-v says the run's compile count and seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from animegan_cli.engines import openvino_engine as ove
from tests.conftest import make_image

TOTALS = re.compile(r"\((\d+) compiles, ([\d.]+) s in all\)")


def convert_v(photos: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    """The -v compile lines of one `animegan convert` of ``photos`` at --size 96."""
    result = subprocess.run([
        sys.executable, "-m", "animegan_cli", "convert", str(photos), "-o", str(out),
        "--weights", str(checkpoint), "--size", "96", "--backend", "openvino", "-v", *extra],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if "compiled for" in line]


def shapes_of(lines: list[str]) -> list[str]:
    return [line.split()[4] for line in lines]


@pytest.fixture
def three_shapes(tmp_path: Path) -> Path:
    """Two images of one shape, then one each of two others (model inputs >= 64x64)."""
    photos = tmp_path / "in"
    sizes = {"a1": (96, 72), "a2": (96, 72), "b": (72, 96), "c": (96, 96)}
    for seed, (name, (w, h)) in enumerate(sizes.items()):
        make_image(photos / f"{name}.png", w, h, seed=seed)
    return photos


def test_the_model_cache_is_pruned_to_its_bound_oldest_first(tmp_path):
    folder = tmp_path / "compiled"
    folder.mkdir()
    now = time.time()
    for i in range(5):
        blob = folder / f"{i}.blob"
        blob.write_bytes(b"x" * 100)
        os.utime(blob, (now - 100 + i, now - 100 + i))  # 0 is the oldest
    ove.prune_model_cache(folder, limit=250)
    assert sorted(p.name for p in folder.iterdir()) == ["3.blob", "4.blob"]
    ove.prune_model_cache(None)  # the cache off: nothing to do
    ove.prune_model_cache(tmp_path / "missing", limit=0)  # nothing there yet


@pytest.mark.slow
def test_hybrid_shapes_compile_only_the_shapes_that_repeat(three_shapes, tmp_path, checkpoint):
    static = convert_v(three_shapes, tmp_path / "static", checkpoint)
    assert sorted(shapes_of(static)) == ["1x3x72x96", "1x3x96x72", "1x3x96x96"]
    hybrid = convert_v(three_shapes, tmp_path / "hybrid", checkpoint, "--shapes", "hybrid")
    # The repeating shape compiled ahead (the plan saw it twice); the others share one model.
    assert sorted(shapes_of(hybrid)) == ["1x3x72x96", "dynamic"]
    count, seconds = TOTALS.search(hybrid[-1]).groups()  # type: ignore[union-attr]
    assert int(count) == 2 and float(seconds) > 0
    assert len(list((tmp_path / "hybrid").glob("*.png"))) == 4


@pytest.mark.slow
def test_a_later_run_loads_its_compiled_models_from_the_cache_with_the_same_pixels(
    three_shapes, tmp_path, checkpoint, isolated_env
):
    compiled = isolated_env / "cache" / "animegan" / "openvino" / "compiled"
    convert_v(three_shapes, tmp_path / "one", checkpoint)  # converts the IR, fills the cache
    blobs = sorted(p.name for p in compiled.iterdir())
    assert len(blobs) == 3  # one per shape
    second = convert_v(three_shapes, tmp_path / "two", checkpoint)
    assert len(second) == 3 and sorted(p.name for p in compiled.iterdir()) == blobs
    for out in (tmp_path / "one").glob("*.png"):
        assert out.read_bytes() == (tmp_path / "two" / out.name).read_bytes()
