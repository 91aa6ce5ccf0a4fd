"""A decoder process ends with its parent, quietly: no traceback from a pipe the death broke."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# What a worker's threads see when the parent end of a pipe or socket goes away (torch
# hands tensors over through a socket served by a thread of the worker).
_LINK_ERRORS = (ConnectionError, EOFError)


def end_with_parent() -> None:
    """Make this (worker) process die with its parent and stay silent about broken links.

    Without this, a worker whose parent was SIGKILLed lives on until torch's watchdog
    notices (up to 5 s), and a thread of it can print a ConnectionResetError traceback
    into the parent's log.
    """
    parent = multiprocessing.parent_process()
    _ask_kernel_to_kill_on_parent_death()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)  # the parent died before the request above took effect
    sys.excepthook = _quiet(sys.excepthook)
    original = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not issubclass(args.exc_type, _LINK_ERRORS):
            original(args)

    threading.excepthook = thread_hook


def _ask_kernel_to_kill_on_parent_death() -> None:
    # Linux only; elsewhere torch's watchdog still ends the worker, just later.
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _quiet(hook):  # noqa: ANN001, ANN202 - sys.excepthook's shape
    def excepthook(kind, value, traceback):  # noqa: ANN001, ANN202
        if not issubclass(kind, _LINK_ERRORS):
            hook(kind, value, traceback)

    return excepthook
