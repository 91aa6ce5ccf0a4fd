"""Reading files we do not control: opening only regular files, and their BLAKE2b-256 hashes.

Below every layer that reads inputs (``media.data`` decodes, ``records`` identifies an
output's input, ``faces`` reads a file again): one opener that never blocks on a FIFO, one
digest everywhere, so that a hash taken while planning matches one taken while decoding.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_module
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

HASH_BYTES = 32  # BLAKE2b-256: the same digest as `b2sum -l 256 FILE`
HASH_WORKERS = 4
_CHUNK_BYTES = 1 << 20


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading; OSError if it is not a regular file (never blocks on one).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer, and
    the fstat then refuses it (and devices such as /dev/zero) before anything is read.
    """
    handle = open(path, "rb", opener=_open_nonblocking)
    try:
        mode = os.fstat(handle.fileno()).st_mode
        if stat_module.S_ISDIR(mode):
            raise OSError(errno.EISDIR, "Is a directory", str(path))  # IsADirectoryError
        if not stat_module.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(handle.fileno(), True)
    except BaseException:
        handle.close()
        raise
    return handle


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def hash_bytes(data: bytes) -> str:
    """BLAKE2b-256 of bytes in memory, as hex."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES).hexdigest()


def hash_file(path: Path) -> str:
    """BLAKE2b-256 of a regular file's bytes, read in 1 MiB chunks."""
    digest = hashlib.blake2b(digest_size=HASH_BYTES)
    with open_regular(path) as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_or_none(path: Path) -> str | None:
    try:
        return hash_file(path)
    except OSError:
        # The decoder reports the file's problem when it is converted.
        return None


def _hash_all(paths: Sequence[Path]) -> list[str | None]:
    return [_hash_or_none(p) for p in paths]


def hash_files(paths: Sequence[Path], workers: int = HASH_WORKERS) -> list[str | None]:
    """Hash many files on a few threads (reads and hashing release the GIL); None if unreadable.

    Each thread takes one contiguous slice: a task per file would cost more in queueing
    than hashing a small file does.
    """
    if len(paths) < 64:
        return _hash_all(paths)
    step = -(-len(paths) // workers)
    slices = [paths[i : i + step] for i in range(0, len(paths), step)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="animegan-hash") as pool:
        return [h for part in pool.map(_hash_all, slices) for h in part]
