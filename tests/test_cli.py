"""The command line through CliRunner: exit codes, messages, JSON, stdin, weights commands."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import re
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.model import weights
from animegan_cli.model.weights import git_blob_id
from tests.conftest import make_image

README = Path(__file__).resolve().parents[1] / "README.md"


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def convert_args(*inputs: str, out: Path, checkpoint: Path, extra: tuple[str, ...] = ()):
    return ("convert", *inputs, "-o", str(out), "--weights", str(checkpoint), "--size", "32",
            "--num-workers", "0", "--backend", "torch", *extra)


def test_convert_writes_outputs_and_a_summary(photo_dir, tmp_path, checkpoint):
    result = run(*convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint))
    assert result.exit_code == 0, result.output
    assert re.search(r"converted 3, skipped 0, failed 0 in [\d.]+ s \([\d.]+ img/s\)",
                     result.stderr)
    assert result.stdout == ""
    assert (tmp_path / "out" / "nested" / "c.webp").is_file()


def test_json_lines_on_stdout_and_skip_on_rerun(photo_dir, tmp_path, checkpoint):
    args = convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint,
                        extra=("--json",))
    first = [json.loads(line) for line in run(*args).stdout.splitlines()]
    assert sorted(r["status"] for r in first) == ["converted"] * 3
    assert {Path(r["input"]).name for r in first} == {"a.jpg", "b.png", "c.webp"}
    assert all(Path(r["output"]).is_file() and r["error"] is None for r in first)
    second = [json.loads(line) for line in run(*args).stdout.splitlines()]
    assert [r["status"] for r in second] == ["skipped"] * 3
    third = [json.loads(line) for line in run(*args, "--overwrite").stdout.splitlines()]
    assert [r["status"] for r in third] == ["converted"] * 3


def test_bad_file_exit_1_with_one_line_naming_it(photo_dir, tmp_path, checkpoint):
    (photo_dir / "notes.png").write_text("not an image at all")
    result = run(*convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint,
                               extra=("--json",)))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert str(photo_dir / "notes.png") in errors[0]
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["notes.png"]["status"] == "failed" and records["notes.png"]["output"] is None
    assert records["a.jpg"]["status"] == "converted"


def test_stdin_list_newline_and_nul(photo_dir, tmp_path, checkpoint):
    files = [str(photo_dir / "a.jpg"), str(photo_dir / "b.png")]
    result = run(*convert_args("-", out=tmp_path / "nl", checkpoint=checkpoint,
                               extra=("--base", str(photo_dir))),
                 stdin="\n".join(files) + "\n")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "nl").glob("[!.]*")) == ["a.jpg", "b.png"]
    odd = make_image(tmp_path / "odd dir" / "name\nwith newline.png")
    result = run(*convert_args("-", out=tmp_path / "nul", checkpoint=checkpoint,
                               extra=("-0", "--json")), stdin=f"{odd}\0{files[0]}\0")
    assert result.exit_code == 0, result.output
    outputs = sorted(Path(json.loads(line)["output"]).name for line in result.stdout.splitlines())
    assert outputs == ["a.jpg", "name\nwith newline.png"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("convert", "/no/such/dir", "-o", "OUT"), "input not found: /no/such/dir"),
        (("convert", "IN", "-o", "OUT", "--style", "nope"), "unknown style 'nope'"),
        (("convert", "IN", "-o", "OUT", "--batch-size", "0"), "--batch-size must be at least 1"),
        (("convert", "IN", "-o", "OUT", "--format", "gif"), "Invalid value for '--format'"),
        (("convert", "IN"), "Missing option '-o'"),
    ],
)
def test_usage_errors_exit_2(photo_dir, tmp_path, args, message):
    args = tuple(str(photo_dir) if a == "IN" else str(tmp_path / "out") if a == "OUT" else a
                 for a in args)
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_unwritable_output_exits_2(photo_dir, tmp_path, checkpoint):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(*convert_args(str(photo_dir), out=blocker / "out", checkpoint=checkpoint))
    assert result.exit_code == 2
    assert "cannot create output folder" in result.stderr


def test_quiet_prints_no_summary(photo_dir, tmp_path, checkpoint):
    result = run(*convert_args(str(photo_dir), out=tmp_path / "out", checkpoint=checkpoint,
                               extra=("--quiet",)))
    assert result.exit_code == 0 and result.stderr == ""


@pytest.fixture
def weights_server(tmp_path, checkpoint, monkeypatch):
    """Serve the random checkpoint as the published face_paint_512_v2 from 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    style = weights.STYLES["face_paint_512_v2"]
    (served / style.url_path).write_bytes(checkpoint.read_bytes())
    monkeypatch.setitem(weights.STYLES, style.name, dataclasses.replace(
        style, blob_id=git_blob_id(checkpoint.read_bytes())))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/")
    yield server
    server.shutdown()
    server.server_close()


def test_convert_downloads_a_missing_style_first(photo_dir, tmp_path, weights_server):
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--size", "32",
                 "--num-workers", "0", "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert "face_paint_512_v2 is not installed; downloading" in result.stderr
    listing = run("weights", "list").stdout
    assert re.search(r"face_paint_512_v2\s+\S+face_paint_512_v2\.pt", listing)
    assert re.search(r"paprika\s+not installed", listing)


def test_weights_download_and_offline_error(tmp_path, weights_server, monkeypatch):
    result = run("weights", "download", "face_paint_512_v2")
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_URL", "http://127.0.0.1:9/")
    result = run("weights", "download", "paprika")
    assert result.exit_code == 1
    assert result.stderr.startswith("animegan: error: cannot download paprika")
    assert len(result.stderr.strip().splitlines()) == 1


def test_weights_import_custom_then_convert_with_it(photo_dir, tmp_path, checkpoint):
    result = run("weights", "import", str(checkpoint), "--name", "mine")
    assert result.exit_code == 0, result.output
    assert "mine" in run("weights", "list").stdout
    result = run("convert", str(photo_dir), "-o", str(tmp_path / "out"), "--style", "mine",
                 "--size", "32", "--num-workers", "0", "--backend", "torch")
    assert result.exit_code == 0, result.output


def test_weights_import_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    result = run("weights", "import", str(bad))
    assert result.exit_code == 1
    assert str(bad) in result.stderr


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, full + " "))
    return found


@pytest.mark.parametrize("name,command", _commands(main))
def test_every_command_has_help_and_is_documented(name, command):
    assert command.help and command.help.strip()
    result = run(*name.split(), "--help")
    assert result.exit_code == 0
    assert f"animegan {name}" in README.read_text()
    for param in command.params:
        if isinstance(param, click.Option):
            assert any(opt in README.read_text() for opt in param.opts), (name, param.opts)
