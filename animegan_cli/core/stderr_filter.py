"""Dropping a native library's own log lines that it writes straight to file descriptor 2.

Ray's C++ core worker logs to the driver's stderr (``[2026-12-07 12:25:04,635 E 12109 12109]
core_worker.cc:2465: Actor with class name ...``) on every run, messages that look like
failures but are not ours to act on; they are also in Ray's session logs. Python cannot
reach that logger, so while a filter is active fd 2 is a pipe: a thread copies what comes
through to the real stderr and leaves out the lines that match. Everything else written to
stderr (this process's messages, the progress bar) passes unchanged and in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

_STDERR = 2
_JOIN_SECONDS = 2.0  # a writer that kept the pipe open (a child process) is not waited for
# An unfinished piece that may still become a timestamped log line ("[2026-12-07 12:2"), held
# until its line ends; a progress bar's "[00:01<00:02, 1.5img/s]" is not held.
_MAYBE_LOG_START = re.compile(rb"\[(\d{0,4}|\d{4}-[^\n\r]*)\Z")


@contextlib.contextmanager
def dropping_lines(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """Leave out of fd 2 the lines matching ``pattern`` while the block runs.

    Without a real stderr (a test runner's, say) nothing is redirected.
    """
    try:
        sys.stderr.flush()
        real = os.dup(_STDERR)
    except (AttributeError, OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    copier = threading.Thread(target=_copy, args=(read_end, real, pattern), daemon=True,
                              name="animegan-stderr-filter")
    copier.start()
    os.dup2(write_end, _STDERR)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        os.dup2(real, _STDERR)  # the pipe's last writer here: the copier sees its end
        copier.join(_JOIN_SECONDS)
        if not copier.is_alive():
            os.close(real)


def _copy(read_end: int, real: int, pattern: re.Pattern[bytes]) -> None:
    """Copy the pipe to ``real``, without the matching lines, until every writer is gone."""
    held = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            held = _pass_through(held + chunk, real, pattern)
    if held:
        _write(real, held)


def _pass_through(data: bytes, real: int, pattern: re.Pattern[bytes]) -> bytes:
    """Write ``data`` without the matches of ``pattern`` (each to the end of its line);
    returns an unfinished last piece held back while it may still become one."""
    lines = data.splitlines(keepends=True)
    held = b""
    if lines and not lines[-1].endswith((b"\n", b"\r")):
        maybe = _MAYBE_LOG_START.search(lines[-1])
        if maybe is not None:
            lines[-1], held = lines[-1][: maybe.start()], lines[-1][maybe.start():]
    kept = b"".join(_without_match(line, pattern) for line in lines)
    if kept:
        _write(real, kept)
    return held


def _without_match(line: bytes, pattern: re.Pattern[bytes]) -> bytes:
    # A log line may follow a progress bar's text on the same line (the bar ends in no
    # newline): the bar's part stays.
    found = pattern.search(line)
    return line if found is None else line[: found.start()]


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a stderr whose reader went away: nothing to say
        while data:
            data = data[os.write(fd, data):]
