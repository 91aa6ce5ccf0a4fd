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

from animegan_cli.lock import LOCK_NAME, OutputBusyError, output_lock, remove_stale_temp_files
from animegan_cli.outputs import TEMP_PREFIX, temp_prefix

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
        "from animegan_cli.lock import output_lock\n"
        f"with output_lock(Path({str(tmp_path)!r})):\n"
        f"    if {fork_grandchild} and os.fork() == 0:\n"
        "        time.sleep(30); os._exit(0)\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(30)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
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
        dead = tmp_path / "sub" / f"{TEMP_PREFIX}{dead_pid()}-a.jpg.x1y2z3"
        live = tmp_path / f"{TEMP_PREFIX}{sleeper.pid}-b.jpg.abcdef"
        ours = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-c.jpg.abcdef"
        old_style = tmp_path / f"{TEMP_PREFIX}d.jpg.q1w2e3"
        new_old_style = tmp_path / f"{TEMP_PREFIX}e.jpg.q1w2e3"
        keep = [tmp_path / "photo.jpg", tmp_path / "sub" / "x.png"]
        for path in [dead, live, ours, old_style, new_old_style, *keep]:
            path.write_bytes(b"partial")
        hour_ago = time.time() - 3600
        os.utime(old_style, (hour_ago, hour_ago))
        removed = remove_stale_temp_files(tmp_path, older_than=time.time() - 60)
        assert sorted(removed) == sorted([dead, old_style])
        assert all(p.exists() for p in [live, ours, new_old_style, *keep])
        assert not dead.exists() and not old_style.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temp_prefix_names_the_pid_and_fits_long_names():
    assert temp_prefix("a.jpg") == f"{TEMP_PREFIX}{os.getpid()}-a.jpg."
    name = "é" * 120 + ".png"  # 244 bytes: a legal name, too long with a prefix added
    prefix = temp_prefix(name)
    assert len(os.fsencode(prefix)) + 8 <= 255  # mkstemp adds 8 random characters
