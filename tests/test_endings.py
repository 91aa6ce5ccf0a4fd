"""Every ending of a run is accounted for (issue 16.8, 16.15): non-finite results, usage
errors and early signals with --report, and decoder processes orphaned by a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.model import generator as model
from animegan_cli.settings.config import config_path
from tests.conftest import make_image
from tests.test_cli import convert_args

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("[!.]*") if p.is_file())


# ---------------------------------------------------------------- 16.8 non-finite values


def test_a_checkpoint_with_one_nan_is_refused(photo_dir, tmp_path, checkpoint):
    state = torch.load(checkpoint)
    key = list(state)[3]
    state[key].view(-1)[0] = float("nan")
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    result = run(*convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=broken))
    assert result.exit_code == 1
    assert result.stderr == (
        f"animegan: error: {broken} holds non-finite weights (NaN or inf) in: {key}\n")
    assert not (tmp_path / "out").exists()


def test_an_image_whose_result_is_not_finite_fails_alone(photo_dir, tmp_path, checkpoint,
                                                         monkeypatch):
    real_forward = model.Generator.forward

    def forward(self, x):  # noqa: ANN001, ANN202
        y = real_forward(self, x)
        if x.shape[2] > x.shape[3]:  # the portrait input, b.png, comes out as NaN
            y = y.clone()
            y[:, :, 0, 0] = float("nan")
        return y

    monkeypatch.setattr(model.Generator, "forward", forward)
    out = tmp_path / "out"
    result = run(*convert_args(str(photo_dir), out=out, checkpoint=checkpoint,
                               extra=("--json",)))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"animegan: error: {photo_dir / 'b.png'}: model produced non-finite values (NaN/inf)")
    assert "converted 2, skipped 0, failed 1" in result.stderr
    assert outputs(out) == ["a.jpg", "c.webp"]
    records = {Path(r["input"]).name: r["status"] for r in map(json.loads,
                                                                 result.stdout.splitlines())}
    assert records == {"a.jpg": "converted", "b.png": "failed", "c.webp": "converted"}


# ---------------------------------------------------------------- 16.15 usage errors


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "extra,env,message",
    [
        (("--format", "gif"), {}, "Invalid value for '--format'"),
        (("--no-such-flag",), {}, "No such option"),
        ((), {"ANIMEGAN_BATCH_SIZE": "abc"}, "invalid value for ANIMEGAN_BATCH_SIZE"),
        (("--batch-size", "0"), {}, "--batch-size must be at least 1"),
    ],
)
def test_a_usage_error_still_writes_the_report(photo_dir, tmp_path, extra, env, message):
    report = tmp_path / "report.json"
    report.write_text('{"stale": true}')
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), *extra,
                 f"--report={report}", env=env)
    assert result.exit_code == 2
    account = report_of(report)
    assert account["exit_status"] == 2 and message in account["error"]
    assert account["counts"]["converted"] == 0


def test_a_broken_config_file_still_writes_the_report(photo_dir, tmp_path):
    config_path().parent.mkdir(parents=True)
    config_path().write_text("[convert]\nbatch_size = oops\n")
    report = tmp_path / "report.json"
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--report", str(report))
    assert result.exit_code == 2
    assert f"config file {config_path()}" in report_of(report)["error"]


def test_a_report_that_cannot_be_written_does_not_leave_a_stale_one(photo_dir, tmp_path,
                                                                    monkeypatch):
    report = tmp_path / "report.json"
    report.write_text('{"exit_status": 0, "stale": true}')

    def disk_full(path, account):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("animegan_cli.cli.progress.write_report", disk_full)
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--style", "nope",
                 "--report", str(report))
    assert result.exit_code == 2
    assert f"cannot write report {report}: No space left on device" in result.stderr
    assert not report.exists()


def test_an_internal_error_still_writes_the_report(photo_dir, tmp_path, monkeypatch):
    def broken(options, events=None):  # noqa: ANN001, ANN202
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("animegan_cli.cli.convert.convert", broken)
    report = tmp_path / "report.json"
    with pytest.raises(RecursionError):
        run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--report", str(report))
    account = report_of(report)
    assert account["exit_status"] == 1
    assert account["error"] == "internal error: RecursionError: maximum recursion depth exceeded"


# ---------------------------------------------------------------- 16.15 real processes


def catches_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:"))
                 .split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_sigterm_while_starting_still_ends_with_a_report(photo_dir, tmp_path, checkpoint):
    report = tmp_path / "report.json"
    args = [sys.executable, "-m", "animegan_cli",
            *convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint,
                          extra=("--report", str(report)))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while not catches_sigterm(proc.pid):  # the first thing the executable does
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)  # while torch is still being imported
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "animegan: stopped by SIGTERM while starting" in stderr
    account = report_of(report)
    assert account["exit_status"] == 143 and account["interrupted_by"] == "SIGTERM"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_orphaned_decoder_workers_exit_at_once_and_quietly(tmp_path, checkpoint):
    src = tmp_path / "in"
    for i in range(24):
        make_image(src / f"{i:02d}.png", 200, 150, seed=i)
    args = [sys.executable, "-m", "animegan_cli", "convert", str(src), "-o", str(tmp_path / "out"),
            "--weights", str(checkpoint), "--size", "128", "--num-workers", "2",
            "--backend", "torch", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline()  # the workers are decoding ahead by now
    proc.kill()
    killed = time.monotonic()
    # The workers share the parent's stderr: it reaches EOF once the last one has exited.
    stderr = proc.stderr.read().decode()
    proc.wait()
    # torch's own watchdog would take up to 5 s; the kernel ends them with their parent.
    assert time.monotonic() - killed < 2.5
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
