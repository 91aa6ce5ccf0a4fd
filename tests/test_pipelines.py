"""`find | animegan convert -` and cron at the CLI level: lists, names, odd inputs, deep trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from animegan_cli.cli.app import main
from animegan_cli.media import inputs
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
HEIF_NOTE = ("skipped 3 .heic/.heif file(s): install the heif extra to read them "
             '(pip install -e ".[heif]" in the animegan checkout)')


def run(*args: str, stdin: bytes | str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def convert_args(*sources: str | Path, out: Path, checkpoint: Path, extra: tuple[str, ...] = ()):
    return ("convert", *map(str, sources), "-o", str(out), "--weights", str(checkpoint),
            "--size", "32", "--num-workers", "0", "--backend", "torch", *extra)


def run_subprocess(*args: str | Path, stdin: bytes = b"", env: dict[str, str] | None = None):
    """The real command, in its own process: a hang fails the test instead of the suite."""
    return subprocess.run(
        [sys.executable, "-m", "animegan_cli", *map(str, args)], input=stdin,
        capture_output=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def outputs_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("animegan: error:")]


# ---------------------------------------------------------------- stdin lists


@pytest.mark.parametrize("separator", [b"\n", b"\0"])
def test_list_with_a_name_that_is_not_utf8_is_converted(tmp_path, checkpoint, separator):
    src = tmp_path / "in"
    odd = make_image(src / os.fsdecode(b"caf\xe9 \xff.jpg"))
    plain = make_image(src / "plain.png")
    listing = separator.join(os.fsencode(p) for p in (odd, plain)) + separator
    extra = ("--base", str(src), "--json", *(("-0",) if separator == b"\0" else ()))
    result = run(*convert_args("-", out=tmp_path / "out", checkpoint=checkpoint, extra=extra),
                 stdin=listing)
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [
        b".animegan-manifest.jsonl", b"caf\xe9 \xff.jpg", b"plain.png"]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["converted", "converted"]
    assert records[0]["input"].endswith("caf\\xe9 \\xff.jpg")


@pytest.mark.slow
def test_list_with_a_name_that_is_not_utf8_in_the_c_locale(tmp_path, checkpoint):
    odd = make_image(tmp_path / "in" / os.fsdecode(b"\xe9t\xe9.jpg"))
    proc = run_subprocess(*convert_args("-", out=tmp_path / "out", checkpoint=checkpoint,
                                        extra=("--dry-run",)),
                          stdin=os.fsencode(odd) + b"\n", env={"LC_ALL": "C", "LANG": "C"})
    assert proc.returncode == 0, proc.stderr
    assert b"dry run: would convert 1, would skip 0" in proc.stderr


def test_empty_list_is_nothing_to_do_not_a_usage_error(tmp_path, checkpoint):
    report = tmp_path / "report.json"
    for extra in ((), ("-0",)):
        args = convert_args("-", out=tmp_path / "out", checkpoint=checkpoint,
                            extra=(*extra, "--report", str(report)))
        result = run(*args, stdin=b"")
        assert result.exit_code == 0, result.output
        assert "animegan: nothing to do: the input list was empty\n" in result.stderr
        written = json.loads(report.read_text())
        assert written["exit_status"] == 0 and written["counts"]["found"] == 0
        assert written["notes"] == ["nothing to do: the input list was empty"]
        report.unlink()
    assert not (tmp_path / "out").exists()
    # No input at all on the command line is still a usage error.
    assert run("convert", "-o", str(tmp_path / "out")).exit_code == 2


def test_vanished_list_entry_fails_alone(tmp_path, checkpoint):
    src = tmp_path / "in"
    good = make_image(src / "good.jpg")
    gone = src / "gone.jpg"
    listing = f"{gone}\n{good}\n"
    report = tmp_path / "report.json"
    args = convert_args("-", out=tmp_path / "out", checkpoint=checkpoint,
                        extra=("--base", str(src), "--json", "--report", str(report)))
    result = run(*args, stdin=listing)
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [
        f"animegan: error: {gone}: file not found (or a broken link)"]
    assert outputs_in(tmp_path / "out") == ["good.jpg"]
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["gone.jpg"]["status"] == "failed" and records["gone.jpg"]["output"] is None
    assert json.loads(report.read_text())["failures"] == [
        {"input": str(gone), "error": "file not found (or a broken link)"}]
    dry = run(*args[:-3], "--dry-run", stdin=listing)
    assert dry.exit_code == 1
    assert error_lines(dry.stderr) == [
        f"animegan: error: {gone}: file not found (or a broken link)"]
    assert "dry run: would convert 0, would skip 1, would fail 1" in dry.stderr
    # The same path named on the command line is a typo: a usage error, nothing done.
    named = run(*convert_args(gone, good, out=tmp_path / "out2", checkpoint=checkpoint))
    assert named.exit_code == 2 and f"input not found: {gone}" in named.stderr


# ---------------------------------------------------------------- output names


def test_rolling_list_pipeline_never_makes_a_second_output(tmp_path, checkpoint, monkeypatch):
    tree = tmp_path / "photos"
    for i, rel in enumerate(["a/x.jpg", "b/x.jpg", "c.jpg", "x_jpg.jpg"]):
        make_image(tree / rel, seed=i)
    monkeypatch.chdir(tree)
    out = tree / "out"  # inside the tree, as with `find . -name '*.jpg'`
    base_args = convert_args("-", out=Path("out"), checkpoint=checkpoint, extra=("--json",))
    first = run(*base_args, stdin="./a/x.jpg\nc.jpg\n")
    assert first.exit_code == 0, first.output
    assert outputs_in(out) == ["a/x.jpg", "c.jpg"]
    # Night 2: another subset, and the outputs of night 1 are in the list too (find . sees them).
    second = run(*base_args, stdin="./a/x.jpg\n./b/x.jpg\n./x_jpg.jpg\n./out/a/x.jpg\n")
    assert second.exit_code == 0, second.output
    statuses = {r["input"]: r["status"] for r in map(json.loads, second.stdout.splitlines())}
    assert statuses == {"a/x.jpg": "skipped", "b/x.jpg": "converted", "x_jpg.jpg": "converted"}
    assert outputs_in(out) == ["a/x.jpg", "b/x.jpg", "c.jpg", "x_jpg.jpg"]


def test_folder_run_and_list_with_base_agree_on_names(tmp_path, checkpoint):
    tree = tmp_path / "photos"
    make_image(tree / "a.jpg", seed=1)
    make_image(tree / "sub" / "b.png", seed=2)
    out = tmp_path / "out"
    assert run(*convert_args(tree, out=out, checkpoint=checkpoint)).exit_code == 0
    listing = "\0".join(str(p) for p in sorted(tree.rglob("*.*"))) + "\0"
    again = run(*convert_args("-", out=out, checkpoint=checkpoint,
                              extra=("-0", "--base", str(tree))), stdin=listing)
    assert again.exit_code == 0, again.output
    assert "converted 0, skipped 2, failed 0" in again.stderr
    assert outputs_in(out) == ["a.jpg", "sub/b.png"]
    bad_base = run(*convert_args(tree, out=out, checkpoint=checkpoint,
                                 extra=("--base", str(tree / "a.jpg"))))
    assert bad_base.exit_code == 2


def test_colliding_outputs_fail_every_member_and_are_not_renamed(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_image(src / "a.jpg", seed=1)
    make_image(src / "a.png", seed=2)
    make_image(src / "b.jpg", seed=3)
    out = tmp_path / "out"
    result = run(*convert_args(src, out=out, checkpoint=checkpoint, extra=("--format", "png")))
    assert result.exit_code == 1
    fix = ("not converted (use --format same, or a separate run with another --suffix, "
           "or rename one)")
    assert error_lines(result.stderr) == [
        f"animegan: error: {src / 'a.jpg'}: its output {out / 'a.png'} would also be the output "
        f"of {src / 'a.png'}; {fix}",
        f"animegan: error: {src / 'a.png'}: its output {out / 'a.png'} would also be the output "
        f"of {src / 'a.jpg'}; {fix}",
    ]
    assert outputs_in(out) == ["b.png"]


def test_same_name_from_two_named_folders_fails_and_base_tells_them_apart(tmp_path, checkpoint):
    make_image(tmp_path / "one" / "x.jpg", seed=1)
    make_image(tmp_path / "two" / "x.jpg", seed=2)
    out = tmp_path / "out"
    result = run(*convert_args(tmp_path / "one", tmp_path / "two", out=out, checkpoint=checkpoint))
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 2
    assert "--base DIR to mirror their full paths" in result.stderr
    assert outputs_in(out) == []
    fixed = run(*convert_args(tmp_path / "one", tmp_path / "two", out=out, checkpoint=checkpoint,
                              extra=("--base", str(tmp_path))))
    assert fixed.exit_code == 0, fixed.output
    assert outputs_in(out) == ["one/x.jpg", "two/x.jpg"]


# ---------------------------------------------------------------- inputs that need an extra


def test_heic_folder_without_the_extra_says_what_it_skipped(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(inputs, "supported_extensions", lambda: inputs.IMAGE_EXTENSIONS)
    src = tmp_path / "phone"
    for name in ["IMG_1.heic", "IMG_2.HEIC", "sub/IMG_3.heif"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"not really heic")
    make_image(src / "ok.jpg")
    report = tmp_path / "report.json"
    result = run(*convert_args(src, out=tmp_path / "out", checkpoint=checkpoint,
                               extra=("--report", str(report))))
    assert result.exit_code == 0, result.output
    assert result.stderr.count(f"animegan: {HEIF_NOTE}\n") == 1
    assert json.loads(report.read_text())["notes"] == [HEIF_NOTE]
    named = run(*convert_args(src / "IMG_1.heic", out=tmp_path / "out", checkpoint=checkpoint))
    assert named.exit_code == 1
    assert error_lines(named.stderr) == [
        f"animegan: error: {src / 'IMG_1.heic'}: a .heic/.heif file: install the heif extra "
        'to read it (pip install -e ".[heif]" in the animegan checkout)']


# ---------------------------------------------------------------- special files, deep trees


@pytest.mark.slow
def test_fifo_and_device_links_fail_alone_instead_of_hanging(tmp_path, checkpoint):
    src = tmp_path / "in"
    make_image(src / "ok.jpg")
    os.mkfifo(src / "pipe.jpg")
    os.symlink("/dev/zero", src / "zero.png")
    os.symlink("/dev/zero", tmp_path / "listed.jpg")
    expected = [
        f"animegan: error: {src / 'pipe.jpg'}: not a regular file (a named pipe)",
        f"animegan: error: {src / 'zero.png'}: not a regular file (a character device)",
        f"animegan: error: {tmp_path / 'listed.jpg'}: not a regular file (a character device)",
    ]
    listing = f"{tmp_path / 'listed.jpg'}\n".encode()
    for extra in (("--dry-run",), ("--trust-mtime",), ()):
        proc = run_subprocess(*convert_args(src, "-", out=tmp_path / "out",
                                            checkpoint=checkpoint, extra=extra), stdin=listing)
        assert proc.returncode == 1, proc.stderr
        assert error_lines(proc.stderr.decode()) == expected
    assert outputs_in(tmp_path / "out") == ["ok.jpg"]


def test_tree_deeper_than_the_recursion_limit(tmp_path, checkpoint, deep_folder):
    make_image(deep_folder / "x.png")
    result = run(*convert_args(tmp_path / "in", out=tmp_path / "out", checkpoint=checkpoint,
                               extra=("--dry-run",)))
    assert result.exit_code == 0, result.output
    assert "dry run: would convert 1, would skip 0" in result.stderr
