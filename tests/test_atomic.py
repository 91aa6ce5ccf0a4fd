"""Tests for atomic_write: temp names, file mode, fsync, and refusing symlinks under a root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from animegan_cli.core import atomic
from animegan_cli.core.atomic import TEMP_PREFIX, atomic_write, temp_file_pid, temp_name


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(data: bytes):
    return lambda handle: handle.write(data)


def test_temp_names_name_the_pid_end_in_part_and_fit_long_names():
    name = temp_name("a.jpg")
    assert name.startswith(f"{TEMP_PREFIX}{os.getpid()}-a.jpg.") and name.endswith(".part")
    assert temp_file_pid(name) == os.getpid()
    long = "é" * 120 + ".png"  # 244 bytes: a legal name, too long with a prefix added
    assert len(os.fsencode(temp_name(long))) == 255
    assert temp_file_pid(temp_name(long)) == os.getpid()


@pytest.mark.parametrize(
    "name",
    [
        f"{TEMP_PREFIX}99999-x.jpg",  # an input's output, named like a temp file
        f"{TEMP_PREFIX}2024-06-01 beach.jpg.x",  # the old copy's temp name: no pid
        f"{TEMP_PREFIX}123-a.jpg.q1w2e3",  # the old mkstemp names
        ".animegan-manifest.jsonl.abcd1234",  # the old compaction temp name
        "photo.jpg",
    ],
)
def test_only_names_atomic_write_makes_count_as_temp_files(name: str):
    assert temp_file_pid(name) is None


def test_writes_the_file_with_the_mode_a_plain_open_gives(tmp_path: Path):
    atomic_write(tmp_path / "f.bin", write_bytes(b"data"))
    with open(tmp_path / "plain", "wb"):
        pass
    mode = stat.S_IMODE((tmp_path / "f.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~current_umask()
    assert (tmp_path / "f.bin").read_bytes() == b"data"


def test_the_umask_is_the_one_in_force_at_the_write(tmp_path: Path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "private", write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_before_rename_sees_the_complete_temp_file_and_the_target_not_yet(tmp_path: Path):
    target = tmp_path / "f.bin"
    seen: list[tuple[int, bool, list[str]]] = []
    atomic_write(
        target,
        write_bytes(b"12345"),
        before_rename=lambda st: seen.append((st.st_size, target.exists(), os.listdir(tmp_path))),
    )
    (size, existed, listing), = seen
    assert size == 5 and not existed
    assert len(listing) == 1 and temp_file_pid(listing[0]) == os.getpid()
    assert os.listdir(tmp_path) == ["f.bin"]


def test_an_error_in_before_rename_leaves_nothing(tmp_path: Path):
    def refuse(_st: os.stat_result) -> None:
        raise OSError(28, "No space left on device")

    (tmp_path / "f.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="No space"):
        atomic_write(tmp_path / "f.bin", write_bytes(b"new"), before_rename=refuse)
    assert os.listdir(tmp_path) == ["f.bin"] and (tmp_path / "f.bin").read_bytes() == b"old"


def test_fsyncs_the_file_and_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    synced: list[bool] = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        atomic.os, "fsync",
        lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real_fsync(fd))[1],
    )
    atomic_write(tmp_path / "f.bin", write_bytes(b"x"))
    assert synced == [False, True]  # the file, then the folder holding the rename
    synced.clear()
    atomic_write(tmp_path / "g.bin", write_bytes(b"x"), fsync=False)
    assert synced == []


def test_a_name_taken_by_a_planted_symlink_is_skipped(tmp_path: Path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    tokens = iter(["deadbeef", "0badf00d"])
    monkeypatch.setattr(atomic, "_random_token", lambda: next(tokens))
    planted = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-f.bin.deadbeef.part"
    planted.symlink_to(victim)
    atomic_write(tmp_path / "f.bin", write_bytes(b"mine"))
    assert victim.read_bytes() == b"precious" and planted.is_symlink()
    assert (tmp_path / "f.bin").read_bytes() == b"mine"


def test_creates_missing_folders_below_the_root(tmp_path: Path):
    atomic_write(tmp_path / "a" / "b" / "f.bin", write_bytes(b"x"), root=tmp_path)
    assert (tmp_path / "a" / "b" / "f.bin").read_bytes() == b"x"


def test_never_recreates_the_root_itself(tmp_path: Path):
    gone = tmp_path / "out"
    with pytest.raises(FileNotFoundError):
        atomic_write(gone / "sub" / "f.bin", write_bytes(b"x"), root=gone)
    assert not gone.exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_folder_below_the_root_is_refused(tmp_path: Path, dangling: bool):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    if not dangling:
        elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    with pytest.raises(OSError) as info:
        atomic_write(out / "sub" / "deeper" / "f.bin", write_bytes(b"x"), root=out)
    assert info.value.strerror == (
        f"output folder {out / 'sub'} is a symbolic link; not writing through it"
    )
    assert not elsewhere.exists() if dangling else os.listdir(elsewhere) == []


def test_a_symlinked_root_is_followed(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    atomic_write(tmp_path / "out" / "s" / "f.bin", write_bytes(b"x"), root=tmp_path / "out")
    assert (real / "s" / "f.bin").read_bytes() == b"x"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path: Path, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.bin").symlink_to(victim)
    atomic_write(out / "f.bin", write_bytes(b"mine"), root=out)
    assert not (out / "f.bin").is_symlink() and (out / "f.bin").read_bytes() == b"mine"
    assert victim.exists() != dangling
    if not dangling:
        assert victim.read_bytes() == b"precious"


def test_a_path_leaving_the_root_is_refused(tmp_path: Path):
    (tmp_path / "out" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="is not inside"):
        atomic_write(tmp_path / "out" / "a" / ".." / ".." / "x", write_bytes(b"x"),
                     root=tmp_path / "out")
    assert not (tmp_path / "x").exists()
