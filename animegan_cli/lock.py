"""One run per output folder (a lock file in it), and the leftovers of runs that died."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from animegan_cli.errors import UsageError
from animegan_cli.outputs import TEMP_PREFIX

LOCK_NAME = ".animegan.lock"
# Temp files name the process writing them: TEMP_PREFIX + "<pid>-<output name>.<random>".
_TEMP_PID = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-")


class OutputBusyError(UsageError):
    """Another run holds the output folder's lock."""


# Lock descriptors this process holds. A forked child (a DataLoader worker) closes its
# copies at once: otherwise a worker outliving a killed run would keep the folder locked.
_HELD: set[int] = set()


def _forget_locks_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"


@contextlib.contextmanager
def output_lock(
    out_dir: Path, wait: bool = False, on_wait: Callable[[str], None] = lambda message: None
) -> Iterator[None]:
    """Hold ``OUT/.animegan.lock`` (flock) for the whole run; the kernel drops it if we die.

    Without ``wait``, a folder that another run is writing to is refused at once with the
    other run's pid; with it, this blocks until that run ends. The file is removed at the
    end (a SIGKILLed run leaves it behind, unlocked and harmless).
    """
    path = out_dir / LOCK_NAME
    fd = _acquire(path, out_dir, wait, on_wait)
    _HELD.add(fd)
    try:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        _HELD.discard(fd)
        with contextlib.suppress(OSError):
            path.unlink()  # still locked: a waiting run notices and opens a new file
        os.close(fd)


def _acquire(path: Path, out_dir: Path, wait: bool, on_wait: Callable[[str], None]) -> int:
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot create lock file {path}: {exc.strerror or exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UsageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
                holder = _holder(fd)
                if not wait:
                    raise OutputBusyError(
                        f"another animegan run ({holder}) is writing to {out_dir}; "
                        "use --wait to wait for it"
                    ) from None
                if not waited:
                    on_wait(f"waiting for another animegan run ({holder}) writing to {out_dir}")
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder we waited for removes the file as it ends; our lock is then on a
            # file nobody else will open, so start again on the path's current file.
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_files(out_dir: Path, older_than: float | None = None) -> list[Path]:
    """Delete temp files under ``out_dir`` left by runs that died (SIGKILL, power loss).

    Call it holding the output lock. A temp file is stale when the process its name gives
    is gone; a live pid's file is left alone even here, since a run writing into a folder
    nested under this one holds its own lock. Names without a pid (older versions) count
    as stale when last modified before ``older_than``. Symlinked folders are not entered.
    """
    cutoff = time.time() if older_than is None else older_than
    removed: list[Path] = []
    for folder, _dirs, files in os.walk(out_dir):
        for name in files:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = Path(folder) / name
            match = _TEMP_PID.match(name)
            if match:
                stale = int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1)))
            else:
                try:
                    stale = path.lstat().st_mtime < cutoff
                except OSError:
                    continue
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed
