"""``atomic_write``: the one way the tool writes a file (temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".animegan-tmp-"
"""Temporary files start with this, so a leftover from a killed run is recognisable."""
TEMP_SUFFIX = ".part"
NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
_TOKEN_CHARS = 8
# Only names atomic_write makes: an output always ends in an image extension, never in
# ".part", so an input named like a temp file cannot be mistaken for one.
_TEMP_NAME = re.compile(
    rf"{re.escape(TEMP_PREFIX)}(\d+)-.*\.[0-9a-f]{{{_TOKEN_CHARS}}}{re.escape(TEMP_SUFFIX)}",
    re.DOTALL,
)
_TEMP_ATTEMPTS = 100
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkedFolderError(OSError):
    """A folder inside the output root is a symbolic link: writing through it is refused."""

    def __init__(self, folder: Path) -> None:
        super().__init__(
            errno.ELOOP, f"output folder {folder} is a symbolic link; not writing through it"
        )


def atomic_write(
    path: Path,
    write: Callable[[BinaryIO], object],  # what it returns is ignored
    *,
    root: Path | None = None,
    mode: int = 0o666,
    fsync: bool = True,
    before_rename: Callable[[os.stat_result], None] | None = None,
) -> None:
    """Write ``path`` through a temp file beside it and a rename: never a half-written file.

    ``write`` fills the temp file (opened read/write; its ``name`` is the temp file's path).
    ``mode`` is the permission before the umask, as for ``os.open``: the default gives what
    a plain ``open()`` would. With ``fsync`` the file is synced before the rename and the
    folder after it. ``before_rename`` gets ``os.fstat`` of the complete temp file just
    before the rename. With ``root``, ``path`` must lie under it: ``root`` itself must exist
    (it is never re-created), folders below it are created as needed, and a symbolic link
    among them is refused (:class:`SymlinkedFolderError`) rather than followed; a symlink
    at ``path`` itself is replaced, never written through. On any error the temp file is
    removed and the error raised.
    """
    path = Path(path)
    with _parent_folder(path, root) as dir_fd:
        tmp, fd = _create_temp(path.name, dir_fd, mode)
        try:
            with open(os.fspath(path.with_name(tmp)), "w+b", opener=lambda _p, _f: fd) as handle:
                write(handle)
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())
                if before_rename is not None:
                    before_rename(os.fstat(handle.fileno()))
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if fsync:
            _fsync_folder(dir_fd)


def temp_name(name: str) -> str:
    """A temp-file name for output ``name``: hidden, naming this pid, within NAME_MAX bytes."""
    # The pid lets a later run tell a dead run's leftover from a live one's; the name is
    # cut (by bytes) so that the temp name fits whenever the output name itself does.
    head = f"{TEMP_PREFIX}{os.getpid()}-"
    tail = f".{_random_token()}{TEMP_SUFFIX}"
    room = NAME_MAX - len(head) - len(tail)
    return head + os.fsdecode(os.fsencode(name)[:room]) + tail


def temp_file_pid(name: str) -> int | None:
    """The pid named by a temp file that :func:`temp_name` made; None for any other name."""
    match = _TEMP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def _random_token() -> str:
    return secrets.token_hex(_TOKEN_CHARS // 2)


def _create_temp(name: str, dir_fd: int, mode: int) -> tuple[str, int]:
    # O_EXCL | O_NOFOLLOW: a file or symlink already at the name is never opened.
    for _ in range(_TEMP_ATTEMPTS):
        tmp = temp_name(name)
        try:
            return tmp, os.open(tmp, _FILE_FLAGS, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temp-file name for {name}")


@contextlib.contextmanager
def _parent_folder(path: Path, root: Path | None) -> Iterator[int]:
    """A descriptor of ``path``'s folder (created if missing), closed afterwards."""
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, _DIR_FLAGS)
    else:
        parts = path.parent.relative_to(root).parts
        if ".." in parts:
            raise ValueError(f"{path} is not inside {root}")
        fd = os.open(root, _DIR_FLAGS)  # a symlinked root is the caller's choice: followed
    try:
        for depth, part in enumerate(() if root is None else parts, start=1):
            assert root is not None  # parts is empty without a root
            child = _enter_folder(fd, part, Path(root, *parts[:depth]))
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _enter_folder(parent_fd: int, name: str, shown: Path) -> int:
    """Open (creating it if missing) the folder ``name`` in ``parent_fd``, never a symlink."""
    try:
        return _open_folder(parent_fd, name, shown)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent run
            os.mkdir(name, 0o777, dir_fd=parent_fd)
    return _open_folder(parent_fd, name, shown)


def _open_folder(parent_fd: int, name: str, shown: Path) -> int:
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        # O_DIRECTORY | O_NOFOLLOW on a symlink fails with ENOTDIR (Linux) or ELOOP.
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_symlink(name, parent_fd):
            raise SymlinkedFolderError(shown) from None
        raise


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _fsync_folder(dir_fd: int) -> None:
    """Make the rename itself durable; file systems that cannot sync a folder are let be."""
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
