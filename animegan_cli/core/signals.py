"""Ctrl-C and SIGTERM: turned into one exception the converter stops on, cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT or SIGTERM; carries the signal and what was done."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.summary: object | None = None

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class _State:
    # Nesting depth of deferred() sections, and a signal that arrived inside one.
    depth = 0
    pending: int | None = None
    # A signal that arrived while the program was still starting (see hold_early).
    early: int | None = None
    holding = False


def _hold(signum: int, frame: object) -> None:
    _State.early = _State.early or signum


def hold_early() -> None:
    """From now on, remember SIGINT/SIGTERM instead of dying; stop_on_signals acts on them.

    Installed first thing by the executable, before the slow imports (torch takes
    seconds), so a run stopped while starting still ends through the CLI: its summary,
    its --report, exit 130/143.
    """
    if threading.current_thread() is threading.main_thread():
        _State.holding = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _hold)


def release_early() -> None:
    """Commands that do not stop cleanly get the default handling back (a held signal ends now)."""
    if not _State.holding:
        return
    _State.holding = False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _State.early is not None:
        signum, _State.early = _State.early, None
        signal.raise_signal(signum)


def _handler(signum: int, frame: object) -> None:
    if _State.depth:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread while this is active."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        if _State.early is not None:  # it came while starting: stop before doing anything
            signum, _State.early = _State.early, None
            raise Interrupted(signum)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _State.pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal that arrives inside this block until the block ends.

    Used around the few statements that must not be cut in half: taking a finished write
    off the queue and counting it. The wait is bounded by one image's write.
    """
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """An Interrupted for any KeyboardInterrupt (a plain one came from Python's SIGINT)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
