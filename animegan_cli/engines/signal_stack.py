"""Keep a thread's alternate signal stack across calls into OpenVINO's CPU plugin.

Compiling a model makes the plugin install its own alternate signal stack on the calling
thread (sigaltstack, ~20 KB, mmap'd); destroying the compiled model puts back the stack it
found, but on whichever thread the destruction runs (the garbage collector's). Compiled on
one thread and freed on another, the first keeps a stack that is unmapped: its next signal
with a handler (SIGCHLD from a DataLoader worker or a subprocess) then kills the process
with SIGSEGV. Seen in the test suite; reproduced in isolation. Restoring the caller's stack
right after the compile leaves the plugin's stack installed nowhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int),
                ("ss_size", ctypes.c_size_t)]


def _libc():  # -> ctypes.CDLL | None
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def current() -> tuple[int, int, int] | None:
    """The calling thread's alternate signal stack (address, flags, size); None if unknown."""
    libc = _libc()
    stack = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return (stack.ss_sp or 0, stack.ss_flags, stack.ss_size)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Run the body, then give the calling thread back the signal stack it had before."""
    libc = _libc()
    saved = _StackT()
    if libc is None or libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        saved.ss_flags &= ~1  # SS_ONSTACK is a status, not something sigaltstack takes
        libc.sigaltstack(ctypes.byref(saved), None)
