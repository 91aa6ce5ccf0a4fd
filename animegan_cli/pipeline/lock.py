"""One run per output folder (a lock file in it), and the leftovers of runs that died."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from animegan_cli.core.atomic import temp_file_pid
from animegan_cli.core.errors import RunStopped, UsageError

LOCK_NAME = ".animegan.lock"
# O_NOFOLLOW: a symlink planted at the name is refused, never truncated through or created;
# O_NONBLOCK: a FIFO there cannot hang the open; O_APPEND: shards add their pids side by side.
_LOCK_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)
# A holder writes its pid just after it locks: a run refused in between waits this long
# for it before saying "another animegan run" without a pid.
_PID_WAIT_S = 0.5


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


@dataclass(frozen=True)
class HeldLock:
    """The output folder's lock as this run holds it; ``check`` notices the folder going."""

    out_dir: Path
    shared: bool
    folder_id: tuple[int, int]  # (st_dev, st_ino) of OUT when the lock was taken
    lock_id: tuple[int, int]  # the same of the lock file

    def check(self) -> None:
        """Raise RunStopped when OUT or its lock file was removed or moved since locking.

        The lock went with it, so another run could start beside this one and both would
        write the same outputs. One ``stat``: cheap enough to call before every write.
        """
        if _file_id(self.out_dir / LOCK_NAME) == self.lock_id:
            return
        again = "run again to finish: images already written are skipped"
        if _file_id(self.out_dir) != self.folder_id:
            raise RunStopped(
                f"output folder {self.out_dir} was removed or moved during the run; "
                f"stopping, since its lock went with it ({again})"
            )
        raise RunStopped(
            f"lock file {self.out_dir / LOCK_NAME} was removed during the run; stopping, "
            f"since another run could start beside this one ({again})"
        )


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


@contextlib.contextmanager
def output_lock(
    out_dir: Path,
    wait: bool = False,
    on_wait: Callable[[str], None] = lambda message: None,
    shared: bool = False,
) -> Iterator[HeldLock]:
    """Hold ``OUT/.animegan.lock`` (flock) for the whole run; the kernel drops it if we die.

    A plain run takes it exclusively; ``shared`` (the runs of ``--shard``) lets runs that
    also share it work side by side, and keeps plain runs out. Without ``wait``, a folder
    that a conflicting run holds is refused at once naming its pid; with it, this blocks
    until that run ends. The last holder removes the file at the end (a SIGKILLed run
    leaves it behind, unlocked and harmless).
    """
    path = out_dir / LOCK_NAME
    fd = _acquire(path, out_dir, wait, on_wait, shared)
    _HELD.add(fd)
    try:
        with contextlib.suppress(OSError):
            if not shared:
                os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # O_APPEND: after the other shards'
        held = os.fstat(fd)
        folder_id = _file_id(out_dir)
        assert folder_id is not None  # we just opened a file in it
        yield HeldLock(out_dir, shared, folder_id, (held.st_dev, held.st_ino))
    finally:
        _HELD.discard(fd)
        _release(fd, path, shared)


def _release(fd: int, path: Path, shared: bool) -> None:
    try:
        if shared:
            # Only the last shard removes the file: an exclusive lock is free only then.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still locked: a waiting run notices and opens a new file. Not when the path is
        # another run's file by now (OUT was moved and a new run took the name).
        if _same_file(fd, path):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def _acquire(
    path: Path, out_dir: Path, wait: bool, on_wait: Callable[[str], None], shared: bool
) -> int:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    waited = False
    while True:
        fd = _open_lock_file(path)
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UsageError(f"cannot lock {path}: {exc.strerror or exc}") from exc
                holder = _holder(fd)
                if not wait:
                    raise OutputBusyError(
                        f"{holder} is writing to {out_dir}; use --wait to wait for it"
                    ) from None
                if not waited:
                    on_wait(f"waiting for {holder} writing to {out_dir}")
                    waited = True
                fcntl.flock(fd, mode)
            # The holder we waited for removes the file as it ends; our lock is then on a
            # file nobody else will open, so start again on the path's current file.
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file itself: never through a symlink, only a regular file."""
    try:
        fd = os.open(path, _LOCK_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"lock file {path} is a symbolic link; not following it (remove it to run)"
            ) from None
        if exc.errno == errno.EISDIR:
            raise UsageError(f"lock file {path} is not a regular file (remove it to run)") from None
        raise UsageError(f"cannot create lock file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"lock file {path} is not a regular file (remove it to run)")
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, by the pids holders write into the file just after locking."""
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
        # Shards append their pids; one that was killed leaves its own behind.
        numbers = dict.fromkeys(int(word) for word in text.split() if word.isdigit())
        pids = [pid for pid in numbers if _pid_alive(pid)]
        if pids or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not pids:
        return "another animegan run"  # it has not written its pid (yet), or it is elsewhere
    label = "pid" if len(pids) == 1 else "pids"
    return f"another animegan run ({label} {', '.join(map(str, pids))})"


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
    except (PermissionError, OverflowError):
        return not _exiting(pid)  # exists, owned by someone else (or a number no pid can be)
    return not _exiting(pid)


# A run killed with SIGKILL stays in the process table, as a zombie, until its parent reaps
# it; kill(pid, 0) still succeeds on it. Its lock is released at once (its files are
# closed), so the next run got in, took the zombie for a live run and kept its temp file:
# a clip's .part (there for the whole clip, unlike an image's) lasted until a later rerun.
_EXITED_STATES = frozenset({"Z", "X"})  # zombie, dead
_SIGKILL_BIT = 1 << (9 - 1)  # SIGKILL in /proc's pending-signal masks


def _exiting(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie) or is being killed (SIGKILL pending): Linux's
    /proc; False where it cannot tell."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except (OSError, ValueError):
        return False
    state = fields.get("State", "").split()
    if state and state[0] in _EXITED_STATES:
        return True
    try:
        pending = int(fields.get("ShdPnd", "0"), 16) | int(fields.get("SigPnd", "0"), 16)
    except ValueError:
        return False
    return bool(pending & _SIGKILL_BIT)


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete temp files under ``out_dir`` left by runs that died (SIGKILL, power loss).

    Call it holding the output lock. Only names that ``atomic_write`` makes count (they
    end in ``.part``, which no output does, so an input named like one keeps its output),
    and only when the process the name gives is gone: a live pid's file is left alone,
    since a concurrent shard or a run writing into a nested folder may own it. Symlinked
    folders are not entered; each file is removed through its folder's descriptor.
    """
    removed: list[Path] = []
    root_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder, _dirs, files, dir_fd in os.fwalk(".", dir_fd=root_fd):
            for name in files:
                pid = temp_file_pid(name)
                if pid is None or pid == os.getpid() or _pid_alive(pid):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(out_dir / folder / name)
    finally:
        os.close(root_fd)
    return removed
