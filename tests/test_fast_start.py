"""Small runs start fast (issue 27): a run whose style's OpenVINO IR is cached imports no torch.

The proof is a real CLI run in a fresh process that prints, after the run, which of torch
and OpenVINO are in sys.modules; its outputs must be byte-identical to a run through the
DataLoader and torch tensors (the path every run took before).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from animegan_cli.engines import arrays
from animegan_cli.engines.contract import NonFiniteOutput, to_model_input, to_pixels
from animegan_cli.media import data
from animegan_cli.pipeline import decoding
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI (argv[2:]) in this process, with decoding.IN_PROCESS_MAX_IMAGES = argv[1],
# then prints which heavy modules the run imported.
HARNESS = """
import json, sys
from animegan_cli.pipeline import decoding
decoding.IN_PROCESS_MAX_IMAGES = int(sys.argv[1])
from animegan_cli.cli.app import main
try:
    status = main(sys.argv[2:], prog_name="animegan", standalone_mode=False) or 0
except SystemExit as exc:
    status = exc.code or 0
print("HEAVY " + json.dumps([status, [m for m in ("torch", "openvino") if m in sys.modules]]))
"""


def convert_in_fresh_process(args: list[str], in_process_max: int) -> tuple[int, list[str]]:
    """(exit status, heavy modules imported) of one `animegan convert` in a new process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(in_process_max), "convert", *args],
        env=env, capture_output=True, text=True, timeout=240,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("HEAVY ")), None)
    assert line is not None, done.stdout + done.stderr
    status, heavy = json.loads(line[len("HEAVY "):])
    return status, heavy


def test_numpy_conversions_are_the_contract_s_bit_for_bit():
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(3, axis=1)
    expected = to_model_input(torch.from_numpy(every_value), torch.float32).numpy()
    assert arrays.model_input(every_value).tobytes() == expected.tobytes()
    # Outputs at every rounding tie (k / 127.5 - 1) and one float either side, plus noise.
    ties = (np.arange(-2, 514, dtype=np.float32) / np.float32(127.5) - np.float32(1.0))
    noise = np.random.default_rng(0).normal(0, 0.7, 3 * 8 * 86 - 516).astype(np.float32)
    values = np.concatenate([ties, noise]).reshape(1, 3, 8, 86)
    for out in (values, np.nextafter(values, np.float32(2)), np.nextafter(values, np.float32(-2))):
        assert arrays.pixels(out).tobytes() == to_pixels(torch.from_numpy(out)).numpy().tobytes()


def test_a_non_finite_result_fails_its_image_alone_on_the_numpy_path():
    out = np.zeros((3, 3, 4, 4), np.float32)
    out[1, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteOutput) as caught:
        arrays.pixels(out)
    assert caught.value.bad == [1] and caught.value.pixels.shape == (3, 4, 4, 3)


def test_the_plan_decodes_small_runs_in_process_and_big_ones_in_decoder_processes():
    limit = decoding.IN_PROCESS_MAX_IMAGES
    assert decoding.in_process(limit, num_workers=1)
    assert not decoding.in_process(limit + 1, num_workers=1)
    assert decoding.in_process(limit + 1, num_workers=0)  # asked for


def test_the_decoding_thread_yields_every_image_in_order_and_bad_files_as_failures(tmp_path):
    paths = [make_image(tmp_path / f"{i}.png", 40, 28 + 4 * i, seed=i) for i in range(5)]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths.insert(2, tmp_path / "bad.png")
    settings = data.PreprocessSettings(size=64, numpy=True)
    items = list(decoding.decoded_on_thread(data.ImageDataset(paths, settings), ahead=2))
    assert [i.index for i in items] == list(range(6))
    assert items[2].error and all(i.error is None for i in items if i.index != 2)
    expected = data.prepare_image(0, paths[0], data.PreprocessSettings(size=64))
    assert isinstance(items[0].pixels, np.ndarray)
    assert items[0].pixels.tobytes() == expected.pixels.contiguous().numpy().tobytes()


def test_closing_the_decoding_thread_early_stops_it(tmp_path):
    paths = [make_image(tmp_path / f"{i}.png", seed=i) for i in range(8)]
    reader = decoding.decoded_on_thread(data.ImageDataset(paths, data.PreprocessSettings(64)), 1)
    next(reader)
    reader.close()
    assert not reader.thread.is_alive()
    assert list(reader) == []


@pytest.mark.slow
def test_a_run_with_its_ir_cached_imports_no_torch_and_writes_the_torch_path_s_bytes(
    tmp_path, checkpoint
):
    photos = tmp_path / "in"
    for i, (w, h) in enumerate([(96, 72), (72, 96), (96, 72), (80, 80)]):
        make_image(photos / f"p{i}.png", w, h, seed=i)
    make_image(photos / "alpha.png", 96, 64, mode="RGBA", seed=9)
    common = ["--weights", str(checkpoint), "--size", "96", "--backend", "openvino"]
    # The checkpoint's first run converts its IR: torch is needed for that.
    status, heavy = convert_in_fresh_process([str(photos), "-o", str(tmp_path / "first"),
                                              *common], in_process_max=32)
    assert status == 0 and "torch" in heavy
    status, heavy = convert_in_fresh_process([str(photos), "-o", str(tmp_path / "fast"),
                                              *common], in_process_max=32)
    assert status == 0 and heavy == ["openvino"]
    # The same run through decoder processes and torch tensors, as every run went before.
    status, heavy = convert_in_fresh_process([str(photos), "-o", str(tmp_path / "loader"),
                                              "--num-workers", "1", *common], in_process_max=0)
    assert status == 0 and "torch" in heavy
    fast = sorted((tmp_path / "fast").glob("*.png"))
    assert len(fast) == 5
    for out in fast:
        assert out.read_bytes() == (tmp_path / "loader" / out.name).read_bytes(), out.name
