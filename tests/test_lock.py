"""The output folder lock and the clean-up of temp files left by runs that died."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from animegan_cli.core.atomic import TEMP_PREFIX
from animegan_cli.core.errors import RunStopped, UsageError
from animegan_cli.pipeline.lock import (
    LOCK_NAME,
    OutputBusyError,
    output_lock,
    remove_stale_temp_files,
)

ROOT = Path(__file__).resolve().parents[1]


def test_lock_file_holds_our_pid_and_goes_away(tmp_path: Path):
    with output_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_holder_is_refused_naming_the_first(tmp_path: Path):
    with output_lock(tmp_path):
        with pytest.raises(OutputBusyError) as info:
            with output_lock(tmp_path):
                pass
    message = str(info.value)
    assert f"another animegan run (pid {os.getpid()}) is writing to {tmp_path}" in message
    assert "--wait" in message
    with output_lock(tmp_path):  # free again
        pass


def test_wait_blocks_until_the_holder_ends(tmp_path: Path):
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with output_lock(tmp_path):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    messages: list[str] = []
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with output_lock(tmp_path, wait=True, on_wait=messages.append):
        waited = time.monotonic() - start
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    thread.join()
    assert waited >= 0.25
    assert len(messages) == 1 and messages[0].startswith("waiting for another animegan run")


def _hold_in_child(tmp_path: Path, fork_grandchild: bool) -> subprocess.Popen:
    """A process that takes the lock (optionally forks a long-lived child) and sleeps."""
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from animegan_cli.pipeline.lock import output_lock\n"
        f"with output_lock(Path({str(tmp_path)!r})):\n"
        f"    if {fork_grandchild} and os.fork() == 0:\n"
        # Said once the at-fork handler has closed the child's copy of the lock. One write(2)
        # each: two processes' print()s to one pipe can interleave ("lockedforked").
        "        os.write(1, b'forked\\n'); time.sleep(30); os._exit(0)\n"
        "    os.write(1, b'locked\\n')\n"
        "    time.sleep(30)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    assert proc.stdout is not None
    expected = {"locked", "forked"} if fork_grandchild else {"locked"}
    assert {proc.stdout.readline().strip() for _ in expected} == expected
    return proc


@pytest.mark.parametrize("fork_grandchild", [False, True])
def test_lock_dies_with_its_holder_even_if_a_forked_child_lives_on(tmp_path, fork_grandchild):
    # A DataLoader worker is such a forked child: it must not keep the folder locked
    # after its parent was killed.
    proc = _hold_in_child(tmp_path, fork_grandchild)
    try:
        with pytest.raises(OutputBusyError, match=f"pid {proc.pid}"):
            with output_lock(tmp_path):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        with output_lock(tmp_path):  # a SIGKILLed holder leaves the file, not the lock
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the forked child too
        proc.wait(5)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_runs_are_removed(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = tmp_path / "sub" / f"{TEMP_PREFIX}{dead_pid()}-a.jpg.0a1b2c3d.part"
        dead_link = tmp_path / f"{TEMP_PREFIX}{dead_pid()}-l.jpg.0a1b2c3d.part"
        live = tmp_path / f"{TEMP_PREFIX}{sleeper.pid}-b.jpg.abcdef01.part"
        ours = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-c.jpg.abcdef01.part"
        # Before atomic.py: indistinguishable from outputs of inputs named like them.
        old_style = tmp_path / f"{TEMP_PREFIX}{dead_pid()}-d.jpg.q1w2e3"
        no_pid = tmp_path / f"{TEMP_PREFIX}e.jpg.q1w2e3"
        input_named_like_one = tmp_path / f"{TEMP_PREFIX}99999-x.jpg"
        keep = [tmp_path / "photo.jpg", tmp_path / "sub" / "x.png"]
        for path in [dead, live, ours, old_style, no_pid, input_named_like_one, *keep]:
            path.write_bytes(b"partial")
        victim = tmp_path.parent / f"{tmp_path.name}-victim"
        victim.write_bytes(b"victim")
        dead_link.symlink_to(victim)
        hour_ago = time.time() - 3600
        os.utime(no_pid, (hour_ago, hour_ago))
        removed = remove_stale_temp_files(tmp_path)
        assert sorted(removed) == sorted([dead, dead_link])
        assert all(p.exists() for p in [live, ours, old_style, no_pid, input_named_like_one, *keep])
        assert not dead.exists() and not dead_link.is_symlink()
        assert victim.read_bytes() == b"victim"  # the link went, not what it pointed to
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_temp_files_are_found_under_a_symlinked_output_folder(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    dead = real / f"{TEMP_PREFIX}{dead_pid()}-a.jpg.0a1b2c3d.part"
    dead.write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path / "out") == [tmp_path / "out" / dead.name]
    assert not dead.exists()


def test_stale_temp_files_in_symlinked_folders_are_not_touched(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    theirs = elsewhere / f"{TEMP_PREFIX}{dead_pid()}-a.jpg.0a1b2c3d.part"
    theirs.write_bytes(b"not ours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    assert remove_stale_temp_files(out) == []
    assert theirs.read_bytes() == b"not ours"


# ---------------------------------------------------------------- hostile lock files


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path: Path, dangling):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    if not dangling:
        victim.write_bytes(b"precious")
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(UsageError) as info:
        with output_lock(out):
            pass
    assert str(info.value) == (
        f"lock file {out / LOCK_NAME} is a symbolic link; not following it (remove it to run)"
    )
    assert victim.exists() != dangling  # a dangling link does not create its target
    if not dangling:
        assert victim.read_bytes() == b"precious"
    assert (out / LOCK_NAME).is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind):
    if kind == "fifo":
        os.mkfifo(tmp_path / LOCK_NAME)
    else:
        (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(UsageError, match="is not a regular file"):
        with output_lock(tmp_path):
            pass


def test_a_holder_that_has_not_written_its_pid_yet_is_still_named_usefully(tmp_path: Path):
    import fcntl

    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked, pid not (yet) written
        with pytest.raises(OutputBusyError) as info:
            with output_lock(tmp_path):
                pass
        assert str(info.value) == (
            f"another animegan run is writing to {tmp_path}; use --wait to wait for it"
        )
        threading.Timer(0.1, os.write, (fd, f"{os.getpid()}\n".encode())).start()
        with pytest.raises(OutputBusyError, match=f"\\(pid {os.getpid()}\\)"):
            with output_lock(tmp_path):  # the pid appears within the short wait
                pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- shards share the lock


def test_shared_holders_run_together_and_keep_exclusive_ones_out(tmp_path: Path):
    with output_lock(tmp_path, shared=True), output_lock(tmp_path, shared=True):
        pids = (tmp_path / LOCK_NAME).read_text().split()
        assert pids == [str(os.getpid())] * 2
        with pytest.raises(OutputBusyError, match=f"another animegan run \\(pids? {os.getpid()}"):
            with output_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()  # the last shard removed it
    with output_lock(tmp_path):
        with pytest.raises(OutputBusyError):
            with output_lock(tmp_path, shared=True):
                pass


def test_the_first_shard_to_end_leaves_the_lock_to_the_others(tmp_path: Path):
    with output_lock(tmp_path, shared=True):
        with output_lock(tmp_path, shared=True):
            pass
        assert (tmp_path / LOCK_NAME).exists()
        with pytest.raises(OutputBusyError):  # still held by the remaining shard
            with output_lock(tmp_path):
                pass


# ---------------------------------------------------------------- the folder going away


def test_check_notices_the_output_folder_moved(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out) as held:
        held.check()  # nothing happened yet
        out.rename(tmp_path / "moved")
        out.mkdir()  # e.g. a second run recreated it
        with pytest.raises(RunStopped) as info:
            held.check()
        assert str(info.value).startswith(
            f"output folder {out} was removed or moved during the run; stopping"
        )
        # A second run takes the new folder's lock; ending ours must not delete it.
        with output_lock(out):
            pass
        (out / LOCK_NAME).write_text("another run's\n")
    assert (out / LOCK_NAME).read_text() == "another run's\n"


def test_check_notices_the_lock_file_removed(tmp_path: Path):
    with output_lock(tmp_path) as held:
        (tmp_path / LOCK_NAME).unlink()
        with pytest.raises(RunStopped, match="lock file .* was removed during the run"):
            held.check()
