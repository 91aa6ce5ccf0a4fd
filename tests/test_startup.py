"""A fast start: commands that run no model import neither torch nor OpenVINO (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "openvino", "onnxruntime")

# Runs each command of argv[1] (a JSON list of [name, args]) in one process, in order, and
# prints {name: [exit status, heavy modules imported so far]}: the first command that
# imports torch is the one to blame.
HARNESS = """
import contextlib, io, json, sys
from animegan_cli.cli.app import main
heavy = sys.argv[2].split(",")
seen = {}
for name, args in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            status = main(args, prog_name="animegan", standalone_mode=False) or 0
        except SystemExit as exc:
            status = exc.code or 0
        except Exception as exc:
            status = repr(exc)
    seen[name] = [status, [m for m in heavy if m in sys.modules]]
print(json.dumps(seen))
"""


def run_in_one_process(commands: list[tuple[str, list[str]]]) -> dict[str, list]:
    """{name: [exit status, heavy modules loaded after it]} for commands run in order."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(commands), ",".join(HEAVY)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(done.stdout)


def help_commands() -> list[tuple[str, list[str]]]:
    """`--help` of every command and group, found from the CLI itself (new ones included)."""
    import click

    from animegan_cli.cli.app import main

    found = [("--help", ["--help"]), ("--version", ["--version"])]

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            found.append((" ".join([*prefix, name, "--help"]), [*prefix, name, "--help"]))
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(main, [])
    return found


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photos converted once by a real run (torch backend, tiny size): outputs up to date."""
    from tests.conftest import write_random_checkpoint

    work = tmp_path_factory.mktemp("startup")
    photos = work / "photos"
    for i, (w, h) in enumerate([(40, 28), (28, 40), (36, 36)]):
        make_image(photos / f"{i}.png", w, h, seed=i)
    checkpoint = write_random_checkpoint(work / "random.pt")
    out = work / "out"
    args = ["convert", str(photos), "-o", str(out), "--weights", str(checkpoint),
            "--size", "32", "--num-workers", "0", "--backend", "torch", "--quiet"]
    seen = run_in_one_process([("convert", args)])
    assert seen["convert"] == [0, ["torch"]]  # a run that styles does import torch
    assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "1.png", "2.png"]
    return {"photos": photos, "out": out, "checkpoint": checkpoint, "work": work,
            "args": args}  # type: ignore[dict-item]


def test_commands_that_run_no_model_import_neither_torch_nor_openvino(converted):
    out, work = converted["out"], converted["work"]
    wrong = work / "published"
    wrong.mkdir()
    (wrong / "face_paint_512_v2.pt").write_bytes(b"not the published checkpoint")
    commands = [
        *help_commands(),
        ("info", ["info"]),
        ("weights list", ["weights", "list"]),
        ("inspect", ["inspect", str(out / "0.png")]),
        ("convert --dry-run", [*converted["args"][:3], str(work / "out2"),
                               *converted["args"][4:], "--dry-run"]),
        ("convert, every output up to date", converted["args"]),
        ("convert, --trust-mtime", [*converted["args"], "--trust-mtime"]),
    ]
    os.environ["ANIMEGAN_WEIGHTS_URL"] = wrong.as_uri() + "/"
    try:
        commands.append(("weights download (refused: wrong bytes)",
                         ["weights", "download", "face_paint_512_v2"]))
        seen = run_in_one_process(commands)
    finally:
        del os.environ["ANIMEGAN_WEIGHTS_URL"]
    heavy = {name: modules for name, (_, modules) in seen.items() if modules}
    assert heavy == {}, f"imported torch/OpenVINO: {heavy}"
    statuses = {name: status for name, (status, _) in seen.items()}
    assert statuses.pop("weights download (refused: wrong bytes)") == 1
    assert set(statuses.values()) == {0}, statuses
    assert not (work / "out2").exists()  # the dry run wrote nothing


def test_the_executable_imports_no_torch_for_version():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "animegan_cli", "--version"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert done.stdout.startswith("animegan, version")
    assert "animegan_cli.cli.app" in imported  # the check reads the real import list
    assert not {"torch", "openvino", "numpy"} & imported


@pytest.mark.slow
def test_info_with_torch_shows_the_torch_section():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "animegan_cli", "info", "--torch"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert "torch:\n  threads" in done.stdout and "\n  gpu " in done.stdout
