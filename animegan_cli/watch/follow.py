"""Following folders: file-system events in, batches of settled files out.

Knows nothing of styling. watchdog's observer (inotify on Linux; polling where that is not
available or with ``--poll``) reports paths on its own thread into a bounded queue; the
caller's thread turns them into batches of files whose size and mtime have stayed the same
for ``settle`` seconds (and, where inotify says so, that were closed after their last write).
Memory is bounded: past ``MAX_PENDING`` paths, events are dropped and the caller is told to
rescan the folders once they have been quiet for ``settle`` seconds.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animegan_cli.core.errors import UsageError

# Paths waiting to settle (and events queued): past this many, a burst is caught up by one
# rescan instead (a path is ~200 bytes: a few MB at most, whatever is copied in).
MAX_PENDING = 10_000
# Files per batch: a stop (SIGTERM) finishes the batch in flight, so this bounds that wait.
BATCH_FILES = 64
# How often pending files are stat'ed: the part of the latency the settle wait does not own.
TICK_S = 0.1
# A file written to and not closed yet waits for its close, but no longer than this many
# settle periods (an IN_ATTRIB looks like a write to watchdog 4; a writer may never close).
OPEN_WAIT_SETTLES = 10

# The events that say a file's content may have changed (watchdog's event_type strings).
_CHANGED = {"created", "modified", "moved", "closed"}


@dataclass
class _Pending:
    fingerprint: tuple[int, int] | None  # (size, mtime_ns) at the last look
    since: float  # monotonic time that fingerprint was first seen
    open: bool  # written to with no close seen since (inotify only)


class _Handler:
    """watchdog's handler: paths into the bounded queue, from the observer's thread."""

    def __init__(self, inbox: queue.Queue[tuple[str, bool]], wanted: Callable[[str], bool],
                 overflow: threading.Event) -> None:
        self.inbox, self.wanted, self.overflow = inbox, wanted, overflow
        self.last_event = time.monotonic()
        self.tracks_closes = False  # inotify reports a close after writing; polling cannot

    def dispatch(self, event: Any) -> None:  # watchdog's FileSystemEventHandler protocol
        self.last_event = time.monotonic()
        if event.event_type == "events_lost":  # the kernel's queue overflowed
            self.overflow.set()
            return
        if event.event_type not in _CHANGED:
            return  # opened, closed without writing (our own reads), deleted, attrib
        if event.is_directory and event.event_type not in ("created", "moved"):
            return  # a folder's listing changed: its files' own events follow
        path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
        if not (event.is_directory or self.wanted(path)):
            return
        closed = event.event_type in ("closed", "moved") or not self.tracks_closes
        try:
            self.inbox.put_nowait((path, event.is_directory or closed))
        except queue.Full:
            self.overflow.set()


class Follower:
    """The watched folders; ``batches()`` yields lists of settled files, ``None`` for
    "rescan everything" (a burst past MAX_PENDING, or events the kernel lost)."""

    def __init__(self, roots: list[Path], recursive: bool, settle: float, poll: bool,
                 wanted: Callable[[Path], bool], on_message: Callable[[str], None]) -> None:
        self.roots, self.recursive, self.settle = roots, recursive, settle
        self.wanted = wanted
        self.inbox: queue.Queue[tuple[str, bool]] = queue.Queue(maxsize=MAX_PENDING)
        self.overflow = threading.Event()
        self.handler = _Handler(self.inbox, lambda p: wanted(Path(p)), self.overflow)
        self.pending: dict[Path, _Pending] = {}
        self.observer = _start_observer(roots, recursive, self.handler, poll, settle, on_message)

    def close(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    def batches(self, stopping: Callable[[], bool]) -> Iterator[list[Path] | None]:
        """Settled files, at most BATCH_FILES at a time, until ``stopping()``."""
        while not stopping():
            self._take_events()
            if self.overflow.is_set():
                if time.monotonic() - self.handler.last_event >= self.settle:
                    self._forget_all()
                    yield None
                else:
                    time.sleep(TICK_S)
                continue
            ready = self._settled()
            if ready:
                yield ready
            else:
                time.sleep(TICK_S)

    def _take_events(self) -> None:
        now = time.monotonic()
        while True:
            try:
                name, closed = self.inbox.get_nowait()
            except queue.Empty:
                return
            path = Path(name)
            if os.path.isdir(path) and not os.path.islink(path):
                self._add_folder(path, now)  # created or moved in: its files send no events
                continue
            entry = self.pending.get(path)
            if entry is None:
                self._add(path, _Pending(None, now, not closed))
            else:
                entry.open = not closed
                entry.since = now

    def _add(self, path: Path, entry: _Pending) -> None:
        if path in self.pending or len(self.pending) < MAX_PENDING:
            self.pending[path] = entry
        else:
            self.overflow.set()

    def _add_folder(self, folder: Path, now: float) -> None:
        if not self.recursive and folder not in self.roots:
            return
        for parent, folders, files in os.walk(folder):
            if not self.recursive:
                folders.clear()
            for name in files:
                path = Path(parent, name)
                if self.wanted(path):
                    self._add(path, _Pending(None, now, False))

    def _forget_all(self) -> None:
        self.overflow.clear()
        self.pending.clear()
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                return

    def _settled(self) -> list[Path]:
        """The pending files whose size and mtime stayed put for ``settle`` seconds (closed,
        where that is known); vanished or non-regular ones are dropped quietly."""
        now, ready = time.monotonic(), []
        for path, entry in list(self.pending.items()):
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                del self.pending[path]  # vanished (or moved on): nothing to style
                continue
            if not stat.S_ISREG(st.st_mode):
                del self.pending[path]
                continue
            fingerprint = (st.st_size, st.st_mtime_ns)
            if fingerprint != entry.fingerprint:
                entry.fingerprint, entry.since = fingerprint, now
                continue
            waited = now - entry.since
            if waited >= self.settle and (not entry.open
                                          or waited >= self.settle * OPEN_WAIT_SETTLES):
                ready.append(path)
                del self.pending[path]
                if len(ready) == BATCH_FILES:
                    break
        return ready


def _start_observer(roots: list[Path], recursive: bool, handler: _Handler, poll: bool,
                    settle: float, on_message: Callable[[str], None]) -> Any:
    """watchdog's native observer (inotify), else its polling one: asked for, or where the
    native one cannot start (no inotify, or its watch limit reached)."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    if not poll:
        try:
            native = Observer()
            # Set before the first event can arrive; FSEvents and others report no closes.
            handler.tracks_closes = "inotify" in type(native).__module__
            return _scheduled(native, roots, recursive, handler)
        except OSError as exc:
            handler.tracks_closes = False
            on_message(f"cannot watch with inotify ({exc.strerror or exc}); polling instead")
    # A poll walks the whole tree: not more often than every half second.
    return _scheduled(PollingObserver(timeout=max(0.5, settle / 2)), roots, recursive, handler)


def _scheduled(observer: Any, roots: list[Path], recursive: bool, handler: _Handler) -> Any:
    for root in roots:
        observer.schedule(handler, str(root), recursive=recursive)
    try:
        observer.start()
    except OSError:
        observer.stop()
        raise
    return observer


def check_roots(inputs: list[str], output: Path) -> list[Path]:
    """The folders to watch: each INPUT an existing folder, none inside OUT."""
    roots = []
    out = output.resolve()
    for given in inputs:
        root = Path(given)
        if not root.is_dir():
            raise UsageError(f"watch: {given} is not a folder (watch follows folders)")
        resolved = root.resolve()
        if resolved == out or out in resolved.parents:
            raise UsageError(f"watch: input folder {given} is inside the output folder {output}")
        roots.append(root)
    return roots
