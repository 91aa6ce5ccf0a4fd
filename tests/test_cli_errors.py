"""What a newcomer's first hour hits (issue 9.7, 9.11): messages, exit codes, leftovers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.model.generator import Generator
from animegan_cli.model.weights import STYLES
from tests.conftest import make_image
from tests.test_cli import convert_args, weights_server  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def other_checkpoint(path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    torch.save(Generator().state_dict(), path)
    return path


# ---------------------------------------------------------------- 9.7 imported styles


def test_unknown_style_lists_imported_names_too(photo_dir, tmp_path, checkpoint):
    assert run("weights", "import", str(checkpoint), "--name", "mine").exit_code == 0
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--style", "nope")
    assert result.exit_code == 2
    assert result.stderr == (
        "animegan: error: unknown style 'nope'; choose from: "
        f"{', '.join(STYLES)}; imported: mine\n"
    )


def test_style_help_lists_imported_names(checkpoint):
    before = run("convert", "--help").stdout
    assert "mine" not in before and "paprika" in before
    assert run("weights", "import", str(checkpoint), "--name", "mine").exit_code == 0
    for command in ("convert", "tune"):
        text = " ".join(run(command, "--help").stdout.split())
        assert "imported here: mine" in text, command


# ---------------------------------------------------------------- 9.11 (a) download --all


def test_download_all_tries_every_style_and_reports_each_failure(tmp_path, weights_server):  # noqa: F811
    # Only face_paint_512_v2 is served: the three others fail, each with one line.
    result = run("weights", "download", "--all")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("animegan: error")]
    assert [re.search(r"cannot download (\S+)", e).group(1) for e in errors] == [
        "paprika", "face_paint_512_v1", "celeba_distill"]
    assert re.search(r"^face_paint_512_v2: \S+face_paint_512_v2\.pt$", result.stderr, re.M)


def test_download_refuses_an_unknown_name_before_downloading_any(tmp_path, weights_server):  # noqa: F811
    result = run("weights", "download", "face_paint_512_v2", "nope")
    assert result.exit_code == 2
    assert "unknown style 'nope'" in result.stderr
    assert re.search(r"face_paint_512_v2\s+not installed", run("weights", "list").stdout)


# ---------------------------------------------------------------- 9.11 (b) import over a name


def test_import_over_an_existing_name_needs_force(tmp_path, checkpoint):
    assert run("weights", "import", str(checkpoint), "--name", "mine").exit_code == 0
    installed = Path(re.search(r"mine\s+(\S+)", run("weights", "list").stdout).group(1))
    # The same bytes again: nothing to replace, not an error (set-up scripts rerun).
    assert run("weights", "import", str(checkpoint), "--name", "mine").exit_code == 0
    other = other_checkpoint(tmp_path / "other.pt")
    result = run("weights", "import", str(other), "--name", "mine")
    assert result.exit_code == 2
    assert result.stderr == (
        f"animegan: error: a checkpoint named mine is already installed at {installed}; "
        "give --force to replace it, or import under another --name\n")
    assert installed.read_bytes() == checkpoint.read_bytes()
    assert run("weights", "import", str(other), "--name", "mine", "--force").exit_code == 0
    assert installed.read_bytes() == other.read_bytes()


# ---------------------------------------------------------------- 9.11 (d) broken pipe


def many_custom_checkpoints(env: dict[str, str], count: int) -> None:
    folder = Path(env["XDG_CACHE_HOME"]) / "animegan"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"custom{i:04d}.pt").write_bytes(b"")


@pytest.mark.slow
@pytest.mark.parametrize("command", [["weights", "list"], ["info"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path, command):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # More output than a pipe holds, so that the write after `head` exits fails.
    many_custom_checkpoints(env, 3000)
    script = (f"{sys.executable} -m animegan_cli {' '.join(command)} | head -1; "
              "echo status=${PIPESTATUS[0]} >&2")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stderr == "status=141\n"  # 128 + SIGPIPE, like `ls | head`; no traceback
    assert len(done.stdout.splitlines()) == 1


@pytest.mark.slow
def test_json_reader_going_away_stops_the_run_like_a_signal(tmp_path, checkpoint):
    src = tmp_path / "in"
    for i in range(40):
        make_image(src / f"{i:02d}.png", seed=i)
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = " ".join(convert_args(str(src), out=tmp_path / "out", checkpoint=checkpoint,
                                 extra=("--json", "--report", str(report))))
    script = f"{sys.executable} -m animegan_cli {args} | head -1; echo status=${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.splitlines()[-1] == "status=141"
    assert "Traceback" not in done.stderr
    assert re.search(r"stopped by SIGPIPE; \d+ image\(s\) not converted", done.stderr)
    account = json.loads(report.read_text())
    assert account["exit_status"] == 141 and account["interrupted_by"] == "SIGPIPE"


# ---------------------------------------------------------------- 9.11 (e) (f) env values


@pytest.mark.parametrize(
    "variable,value,reason",
    [
        ("ANIMEGAN_BATCH_SIZE", "abc", "'abc' is not a valid integer"),
        ("ANIMEGAN_QUALITY", "high", "'high' is not a valid integer"),
        ("ANIMEGAN_BACKEND", "tensorrt",
         "'tensorrt' is not one of 'auto', 'onnxruntime', 'openvino', 'torch'"),
        ("ANIMEGAN_KEEP_SIZE", "maybe", "'maybe' is not a valid boolean"),
    ],
)
def test_a_bad_environment_value_names_the_variable(photo_dir, tmp_path, variable, value,
                                                    reason):
    for command in (["convert", str(photo_dir), "-o", str(tmp_path / "out")], ["info"]):
        result = run(*command, env={variable: value})
        assert result.exit_code == 2, command
        # info: one line and nothing else, not half its report first.
        assert result.stdout == ""
        assert result.stderr.startswith(
            f"animegan: error: invalid value for {variable} (environment): {reason}")
        assert len(result.stderr.splitlines()) == 1


def test_a_bad_flag_value_is_still_blamed_on_the_flag(photo_dir, tmp_path):
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--batch-size", "abc",
                 env={"ANIMEGAN_BATCH_SIZE": "2"})
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size': 'abc' is not a valid integer" in result.stderr


def test_info_shows_what_threads_and_max_memory_resolve_to():
    out = run("info").stdout
    assert re.search(r"--threads\s+auto -> (\d+|OpenVINO's default)\s+\[built-in\]", out)
    assert re.search(r"--max-memory\s+auto -> [\d.]+ [GM]B \(75% of available\)\s+\[built-in\]",
                     out)
    assert "None" not in re.search(r"--threads.*", out).group(0)


def test_info_threads_is_torchs_count_on_the_torch_backend():
    out = run("info", env={"ANIMEGAN_BACKEND": "torch"}).stdout
    assert re.search(rf"--threads\s+auto -> {torch.get_num_threads()}\s", out)


# ---------------------------------------------------------------- 9.11 (g) (h) (i) (j)


def test_a_memory_budget_under_the_floor_is_refused(photo_dir, tmp_path, checkpoint):
    result = run(*convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint,
                               extra=("--max-memory", "10")))
    assert result.exit_code == 2
    assert result.stderr == "animegan: error: --max-memory must be at least 64M\n"


@pytest.mark.parametrize("flag", ["--threads", "--streams"])
def test_engine_counts_under_one_are_usage_errors(photo_dir, tmp_path, checkpoint, flag):
    out = tmp_path / "out"
    result = run(*convert_args(str(photo_dir), out=out, checkpoint=checkpoint,
                               extra=(flag, "0")))
    assert result.exit_code == 2
    assert result.stderr == f"animegan: error: {flag} must be at least 1\n"
    assert not out.exists()


def test_output_that_is_a_file_says_so(photo_dir, tmp_path, checkpoint):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run(*convert_args(str(photo_dir), out=afile, checkpoint=checkpoint))
    assert result.exit_code == 2
    assert result.stderr == f"animegan: error: output folder {afile} is a file\n"


@pytest.mark.parametrize(
    "case",
    ["unknown style", "input not found", "failed download", "bad weights", "non-finite weights"],
)
def test_a_refused_run_leaves_no_output_folder(photo_dir, tmp_path, checkpoint, case):
    out = tmp_path / "new" / "out"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    nan = tmp_path / "nan.pt"
    state = torch.load(checkpoint)
    next(iter(state.values())).view(-1)[0] = float("nan")
    torch.save(state, nan)
    base = ["convert", "-o", str(out), "--size", "32", "--num-workers", "0", "--backend", "torch"]
    args = {
        "unknown style": [str(photo_dir), "--style", "nope"],
        "input not found": [str(tmp_path / "missing"), "--weights", str(checkpoint)],
        "failed download": [str(photo_dir)],  # the default style, from a dead address
        "bad weights": [str(photo_dir), "--weights", str(bad)],
        "non-finite weights": [str(photo_dir), "--weights", str(nan)],
    }[case]
    result = run(*base, *args)
    assert result.exit_code in (1, 2), result.output
    assert not (tmp_path / "new").exists()


def test_a_refused_run_keeps_an_output_folder_it_did_not_create(photo_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert run("convert", str(photo_dir), "-o", str(out), "--style", "nope").exit_code == 2
    assert out.is_dir()


def test_a_no_op_summary_has_no_rate(photo_dir, tmp_path, checkpoint):
    args = convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint)
    assert run(*args).exit_code == 0
    again = run(*args)
    assert again.exit_code == 0
    assert re.fullmatch(r"converted 0, skipped 3, failed 0 in [\d.]+ s\n", again.stderr)
