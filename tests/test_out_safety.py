"""Nothing outside OUT is written, truncated or deleted; shards share OUT; OUT going away.

Symlinks planted inside OUT (at the lock, the manifest, temp names, output folders and
output files) are never followed for writing; a hostile ``--suffix`` is refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from animegan_cli.core import atomic
from animegan_cli.core.atomic import TEMP_PREFIX
from animegan_cli.media import outputs
from animegan_cli.pipeline import convert as convert_module
from animegan_cli.pipeline.lock import LOCK_NAME, output_lock
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest
from tests.conftest import make_image
from tests.test_robustness import ROOT, cli_args, output_files, run_cli

NOT_THROUGH = "is a symbolic link; not writing through it"


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: a file's bytes, a link's target, a folder's presence."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = path.read_bytes()
    return found


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- --suffix


@pytest.mark.parametrize("suffix", ["/../../escaped", "_a/b", "x\0y"])
def test_a_suffix_with_a_path_separator_or_nul_is_a_usage_error(
    tmp_path, checkpoint, photo_dir, suffix
):
    out = tmp_path / "deep" / "er" / "out"
    result = run_cli(*cli_args(photo_dir, out, checkpoint, "--suffix", suffix))
    assert result.exit_code == 2
    assert result.stderr == (
        "animegan: error: --suffix must not contain a path separator or NUL\n"
    )
    assert not list(tmp_path.rglob("*escaped*")) and not out.exists()


# ---------------------------------------------------------------- one symlink at a time


def test_a_symlinked_folder_inside_out_fails_its_images_and_writes_nothing_there(
    tmp_path, checkpoint, photo_dir
):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "nested").symlink_to(Path("..") / "elsewhere")
    result = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert result.exit_code == 1
    nested = out / "nested"
    reason = f"cannot write {nested / 'c.webp'}: output folder {nested} {NOT_THROUGH}"
    assert f"animegan: error: {photo_dir / 'nested' / 'c.webp'}: {reason}\n" in result.stderr
    assert os.listdir(elsewhere) == []
    assert sorted(p.name for p in output_files(out)) == ["a.jpg", "b.png"]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_manifest_is_neither_read_nor_appended_to(
    tmp_path, checkpoint, photo_dir, dangling
):
    out, victim = tmp_path / "out", tmp_path / "victim.jsonl"
    out.mkdir()
    if not dangling:
        victim.write_bytes(b"not yours\n")
    (out / MANIFEST_NAME).symlink_to(victim)
    result = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("animegan: manifest not updated (") == 1
    assert "it is a symbolic link; not following it); outputs still carry their provenance" \
        in result.stderr
    assert victim.exists() != dangling and (dangling or victim.read_bytes() == b"not yours\n")
    rerun = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert "converted 0, skipped 3, failed 0" in rerun.stderr  # the embedded records


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_lock_file_is_a_usage_error(tmp_path, checkpoint, photo_dir, dangling):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    if not dangling:
        victim.write_bytes(b"precious")
    (out / LOCK_NAME).symlink_to(victim)
    result = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert result.exit_code == 2
    assert result.stderr == (
        f"animegan: error: lock file {out / LOCK_NAME} is a symbolic link; not following it "
        "(remove it to run)\n"
    )
    assert victim.exists() != dangling and (dangling or victim.read_bytes() == b"precious")


def test_an_input_named_like_a_temp_file_keeps_its_output(tmp_path, checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    name = f"{TEMP_PREFIX}{dead_pid()}-x.png"
    make_image(src / name)
    assert run_cli(*cli_args(src, out, checkpoint)).exit_code == 0
    rerun = run_cli(*cli_args(src, out, checkpoint))
    assert "temp file" not in rerun.stderr and "converted 0, skipped 1" in rerun.stderr
    assert (out / name).is_file()


# ---------------------------------------------------------------- OUT removed or moved


def test_out_moved_mid_run_stops_the_run_and_writes_nothing_into_a_new_out(
    tmp_path, checkpoint, monkeypatch
):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        make_image(src / f"{i}.png", seed=i)
    real_write = outputs.write_image_atomic

    def write_then_move(image, path, **kwargs):  # noqa: ANN001, ANN202
        real_write(image, path, **kwargs)
        if not (tmp_path / "moved").exists():
            out.rename(tmp_path / "moved")
            out.mkdir()  # as a second run would: it finds the folder free and locks it

    monkeypatch.setattr(convert_module.outputs, "write_image_atomic", write_then_move)
    result = run_cli(*cli_args(src, out, checkpoint))
    assert result.exit_code == 1
    assert (f"animegan: error: output folder {out} was removed or moved during the run; "
            "stopping, since its lock went with it (run again to finish: images already "
            "written are skipped)\n") in result.stderr
    assert os.listdir(out) == []  # nothing written into the folder now at OUT
    assert sorted(p.name for p in output_files(tmp_path / "moved")) == ["0.png"]


# ---------------------------------------------------------------- shards share OUT


def test_a_shard_runs_beside_another_shard_and_a_plain_run_is_refused(
    tmp_path, checkpoint, photo_dir
):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out, shared=True):  # another shard of the same job
        shard = run_cli(*cli_args(photo_dir, out, checkpoint, "--shard", "0/1"))
        plain = run_cli(*cli_args(photo_dir, out, checkpoint))
    assert shard.exit_code == 0, shard.output
    assert "converted 3, skipped 0, failed 0" in shard.stderr
    assert plain.exit_code == 2
    assert plain.stderr == (
        f"animegan: error: another animegan run (pid {os.getpid()}) is writing to {out}; "
        "use --wait to wait for it\n"
    )


def test_shards_never_compact_the_manifest(tmp_path, checkpoint, photo_dir, monkeypatch):
    out = tmp_path / "out"
    compactions: list[bool] = []
    real = Manifest.compact_if_needed
    monkeypatch.setattr(
        Manifest, "compact_if_needed",
        lambda self, min_lines=1000: compactions.append(real(self, min_lines=0)) or False,
    )
    for _ in range(3):  # three runs' lines for three outputs: over twice the live entries
        assert run_cli(*cli_args(photo_dir, out, checkpoint, "--shard", "0/1",
                                 "--overwrite")).exit_code == 0
    assert compactions == [] and len((out / MANIFEST_NAME).read_text().splitlines()) == 9
    assert run_cli(*cli_args(photo_dir, out, checkpoint)).exit_code == 0
    assert compactions == [True] and len((out / MANIFEST_NAME).read_text().splitlines()) == 3


@pytest.mark.slow
def test_two_shard_processes_on_one_out_at_once_convert_everything(tmp_path, checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(16):
        make_image(src / f"{i:02d}.png", 64, 48, seed=i)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "animegan_cli", *cli_args(src, out, checkpoint),
             "--shard", f"{i}/2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for i in range(2)
    ]
    results = [proc.communicate(timeout=180) for proc in procs]
    for proc, (_, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
    assert sorted(p.name for p in output_files(out)) == [f"{i:02d}.png" for i in range(16)]
    converted = [int(stderr.split("converted ")[1].split(",")[0]) for _, stderr in results]
    assert sum(converted) == 16 and all(converted)
    assert not (out / LOCK_NAME).exists()
    assert len(Manifest.load(out).entries) == 16


# ---------------------------------------------------------------- symlinks everywhere


@pytest.mark.slow
def test_symlinks_at_every_name_the_tool_writes_leave_their_targets_untouched(
    tmp_path, checkpoint, monkeypatch
):
    src, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    for seed, name in enumerate(["a.jpg", "b.png", "x.png", "y.png", "sub/c.png",
                                 "sub/deep/e.png", "dsub/d.png"]):
        make_image(src / name, seed=seed)
    shutil.copyfile(src / "x.png", src / "sub" / "x.png")  # a duplicate, written into sub/
    (victim / "dir").mkdir(parents=True)
    for name, data in [("file.jpg", b"victim file"), ("lock", b"victim lock"),
                       ("manifest", b"victim manifest\n"), ("dir/keep.txt", b"keep")]:
        (victim / name).write_bytes(data)
    out.mkdir()
    pid = os.getpid()  # CliRunner runs the CLI in this process: temp names carry our pid
    plants = {
        "a.jpg": victim / "file.jpg",  # an output file
        "b.png": victim / "gone.png",  # an output file, dangling
        "sub": victim / "dir",  # an output folder
        "dsub": victim / "nodir",  # an output folder, dangling
        MANIFEST_NAME: victim / "manifest",
        f"{TEMP_PREFIX}{pid}-x.png.deadbeef.part": victim / "file.jpg",
        f"{TEMP_PREFIX}{pid}-y.png.deadbeef.part": victim / "gone-temp",
        f"{TEMP_PREFIX}{pid}-{MANIFEST_NAME}.deadbeef.part": victim / "manifest",
        f"{TEMP_PREFIX}{dead_pid()}-x.png.0a1b2c3d.part": victim / "file.jpg",  # "stale"
    }
    for name, target in plants.items():
        (out / name).symlink_to(target)
    before = snapshot(victim)

    # Each write's first temp name is the predictable one planted above.
    real_temp_name, last = atomic.temp_name, [""]

    def predictable_first(name: str) -> str:
        if last[0] == name:
            last[0] = ""
            return real_temp_name(name)
        last[0] = name
        return f"{TEMP_PREFIX}{pid}-{name}.deadbeef.part"

    monkeypatch.setattr(atomic, "temp_name", predictable_first)
    for target in [victim / "lock", victim / "nolock"]:
        (out / LOCK_NAME).symlink_to(target)
        assert run_cli(*cli_args(src, out, checkpoint)).exit_code == 2
        (out / LOCK_NAME).unlink()
        assert snapshot(victim) == before

    first = run_cli(*cli_args(src, out, checkpoint))
    assert first.exit_code == 1  # sub/ and dsub/ images fail; the rest is written
    assert first.stderr.count(NOT_THROUGH) == 4, first.stderr  # sub/ (3 images) and dsub/
    assert snapshot(victim) == before
    shutil.copyfile(src / "y.png", src / "sub" / "copy.png")  # gets a copy of y's output
    rerun = run_cli(*cli_args(src, out, checkpoint))
    assert f"{out / 'sub' / 'copy.png'}: output folder {out / 'sub'} {NOT_THROUGH}" in \
        rerun.stderr
    assert snapshot(victim) == before

    (out / MANIFEST_NAME).unlink()  # a real manifest, to be compacted
    real_compact = Manifest.compact_if_needed
    compacted: list[bool] = []
    monkeypatch.setattr(Manifest, "compact_if_needed", lambda self, min_lines=1000:
                        compacted.append(real_compact(self, min_lines=0)) or compacted[-1])
    for _ in range(3):
        run_cli(*cli_args(src, out, checkpoint, "--overwrite"))
    assert compacted[-1] and snapshot(victim) == before
    assert not (out / "a.jpg").is_symlink() and not (out / "b.png").is_symlink()  # replaced
    assert (out / "sub").is_symlink() and (out / "dsub").is_symlink()
    assert not (victim / "gone.png").exists() and not (victim / "nodir").exists()
