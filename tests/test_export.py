"""``animegan export``: ONNX and OpenVINO IR files, verified against torch fp32, never half-left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.model.generator import Generator
from animegan_cli.tools import export
from animegan_cli.tools.export import ExportError, verify

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_verification_refuses_an_export_that_does_not_match_torch():
    torch.manual_seed(0)
    generator = Generator().eval()
    with torch.inference_mode():
        same = verify(generator, lambda x: generator(torch.from_numpy(x)).numpy(), 32)
    assert same.max_abs_difference == 0 and same.psnr_db == float("inf")
    with pytest.raises(ExportError, match="does not reproduce the torch model"):
        verify(generator, lambda x: np.zeros_like(x), 32)
    with pytest.raises(ExportError, match="returned shape"):
        verify(generator, lambda x: np.zeros((1, 3, 8, 8), np.float32), 32)


def test_export_needs_a_target(checkpoint):
    result = invoke("export", "--weights", str(checkpoint))
    assert result.exit_code == 2
    assert result.output.strip() == "animegan: error: give --onnx FILE and/or --openvino DIR"


def test_export_help_imports_no_model_runtime():
    code = ("import sys; from animegan_cli.cli.app import main\n"
            "try: main(['export', '--help'])\nexcept SystemExit: pass\n"
            "heavy = ('torch', 'onnx', 'onnxruntime', 'openvino')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"')) == []


@pytest.mark.slow
def test_export_writes_onnx_and_ir_that_run_like_torch(checkpoint, tmp_path):
    import onnxruntime
    import openvino as ov

    onnx_file, ir_dir = tmp_path / "m.onnx", tmp_path / "ir"
    result = invoke("export", "--weights", str(checkpoint), "--size", "64",
                    "--onnx", str(onnx_file), "--openvino", str(ir_dir))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all("PSNR" in line and "max abs difference" in line
                                   for line in lines)
    assert sorted(p.name for p in ir_dir.iterdir()) == [f"{checkpoint.stem}.bin",
                                                        f"{checkpoint.stem}.xml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir", "m.onnx", checkpoint.name]
    # Dynamic H and W: a shape other than the export's example runs.
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 40, 56)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": x})[0].shape == (2, 3, 40, 56)
    compiled = ov.Core().compile_model(str(ir_dir / f"{checkpoint.stem}.xml"), "CPU")
    assert next(iter(compiled([x]).values())).shape == (2, 3, 40, 56)


@pytest.mark.slow
def test_an_export_that_fails_verification_leaves_nothing(checkpoint, tmp_path, monkeypatch):
    real = export.verify  # an exporter gone wrong: the exported model inverts the colours
    monkeypatch.setattr(export, "verify", lambda g, run, size: real(g, lambda x: -run(x), size))
    result = invoke("export", "--weights", str(checkpoint), "--size", "32",
                    "--onnx", str(tmp_path / "m.onnx"), "--openvino", str(tmp_path / "ir"))
    assert result.exit_code == 1
    assert "does not reproduce the torch model" in result.output
    assert not (tmp_path / "m.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.name]
