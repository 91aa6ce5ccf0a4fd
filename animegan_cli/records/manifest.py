"""``OUT/.animegan-manifest.jsonl``: the record of every output a run wrote, one JSON line each.

A cache beside the records embedded in outputs (and the only record of a BMP output):
``find_provenance`` reads an output's own record first, then the nearest manifest's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat as stat_module
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from animegan_cli.core.atomic import atomic_write
from animegan_cli.records.embedded import read_embedded_checked
from animegan_cli.records.record import (
    INT64_MIN,
    MAX_RECORD_BYTES,
    Provenance,
    integer_field,
    load_json,
)

MANIFEST_NAME = ".animegan-manifest.jsonl"
# Bounds on what is read back (a record's own: record.MAX_RECORD_BYTES).
MAX_LINE_BYTES = MAX_RECORD_BYTES + (64 << 10)  # a record plus its output's path
MAX_MANIFEST_BYTES = 256 << 20  # about 600,000 outputs; a larger manifest is ignored


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: an output (its size and mtime when recorded) and its provenance."""

    output_size: int
    output_mtime_ns: int
    provenance: Provenance

    def matches(self, stat: os.stat_result) -> bool:
        """Whether the output file is still the one this entry was written for."""
        return (stat.st_size, stat.st_mtime_ns) == (self.output_size, self.output_mtime_ns)


@dataclass
class Manifest:
    """``OUT/.animegan-manifest.jsonl``: one JSON line per written output.

    Lines are only appended (one ``write`` each), so a crash loses at most the last records,
    and a torn line is ignored when read. Each entry holds the output's size and mtime; an
    output's entry is the last one whose size and mtime match the file. The line is
    appended before the output's rename (with the temp file's stat, which the rename
    keeps), so a kill leaves either no output or one its entry matches, and an entry for a
    rename that never happened cannot hide the older entry of the file still there. An
    output changed behind the manifest's back is not trusted by it (its embedded metadata
    is read instead). The manifest is a cache: without it, every output's own metadata
    (all formats but BMP) still says what made it.
    """

    out_dir: Path
    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    lines: int = 0
    failure: str | None = None
    warning: str | None = None  # said once by the caller: the manifest could not be read
    _needs_newline: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Entries superseded by a later line, oldest first: the later one may describe a
    # rename that never happened.
    _earlier: dict[str, list[ManifestEntry]] = field(default_factory=dict)
    _oversized: bool = False

    @property
    def path(self) -> Path:
        """Where the manifest lives."""
        return self.out_dir / MANIFEST_NAME

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        """Read the manifest in ``out_dir`` (empty when absent, unreadable or too big).

        Read line by line: a line over MAX_LINE_BYTES is skipped unread, and a manifest
        over MAX_MANIFEST_BYTES is ignored (with a warning) and rewritten at the end.
        """
        manifest = cls(Path(out_dir))
        try:
            handle = os.fdopen(_open_manifest(manifest.path, os.O_RDONLY), "rb")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                manifest.failure = f"cannot use {manifest.path}: {exc.strerror}"
            return manifest
        with handle:
            try:
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_MANIFEST_BYTES:
                    manifest._oversized = manifest._needs_newline = True
                    manifest.warning = (
                        f"{manifest.path} is over {MAX_MANIFEST_BYTES / 2**20:g} MiB; ignored "
                        "(outputs' own records are read instead) and rewritten at the end"
                    )
                    return manifest
                for line in _bounded_lines(handle, MAX_LINE_BYTES):
                    manifest.lines += 1
                    if line is not None:
                        manifest._add_line(line)
                if size:
                    handle.seek(-1, os.SEEK_END)
                    manifest._needs_newline = handle.read(1) != b"\n"
            except OSError:
                pass  # a read error mid-way: what was read is kept
        return manifest

    def _add_line(self, line: bytes) -> None:
        try:
            record = load_json(line, MAX_LINE_BYTES)
            if not isinstance(record, dict) or not isinstance(record.get("output"), str):
                raise ValueError("not a manifest entry")
            entry = ManifestEntry(
                integer_field(record, "size", 0),
                integer_field(record, "mtime_ns", INT64_MIN),
                Provenance.from_dict(record["provenance"]),
            )
        except (ValueError, KeyError):
            return  # a torn line from a crash, a hostile one, or one from a future version
        self._put(record["output"], entry)

    def _put(self, key: str, entry: ManifestEntry) -> None:
        previous = self.entries.get(key)
        if previous is not None:
            self._earlier.setdefault(key, []).append(previous)
        self.entries[key] = entry

    def key(self, output: Path) -> str:
        """The manifest key of an output: its POSIX path relative to the output folder."""
        text, prefix = str(output), str(self.out_dir) + os.sep
        # Outputs are built as out_dir / relative path: slicing is enough, and much cheaper.
        relative = text[len(prefix) :] if text.startswith(prefix) else os.path.relpath(
            output, self.out_dir
        )
        return relative.replace(os.sep, "/")

    def get(self, output: Path) -> ManifestEntry | None:
        """The last entry recorded for ``output``, if any."""
        return self.entries.get(self.key(output))

    def match(self, output: Path, stat: os.stat_result) -> ManifestEntry | None:
        """The last entry for ``output`` whose size and mtime are those of ``stat``."""
        return self._match(self.key(output), stat)

    def _match(self, key: str, stat: os.stat_result) -> ManifestEntry | None:
        last = self.entries.get(key)
        if last is None or last.matches(stat):
            return last
        return next((e for e in reversed(self._earlier.get(key, ())) if e.matches(stat)), None)

    def keys_by_input_hash(self) -> dict[str, list[str]]:
        """Output keys by the input hash of any of their entries (candidates, not checked)."""
        found: dict[str, list[str]] = {}
        for key, last in self.entries.items():
            hashes = {last.provenance.input_blake2b}
            hashes.update(e.provenance.input_blake2b for e in self._earlier.get(key, ()))
            for digest in hashes:
                if digest:
                    found.setdefault(digest, []).append(key)
        return found

    def record(self, output: Path, provenance: Provenance) -> None:
        """Append an entry for an output that is in place (stats it now); failures noted."""
        try:
            stat = os.stat(output)
        except OSError as exc:
            self.failure = f"cannot stat {output}: {exc.strerror or exc}"
            return
        with contextlib.suppress(OSError):
            self.add(output, stat, provenance)

    def add(self, output: Path, stat: os.stat_result, provenance: Provenance) -> None:
        """Append an entry for ``output`` as ``stat`` describes it (a temp file about to be
        renamed to it); OSError when the line could not be written (also noted in failure)."""
        entry = ManifestEntry(stat.st_size, stat.st_mtime_ns, provenance)
        line = self._line(self.key(output), entry)
        with self._lock:
            try:
                self._append(line)
            except OSError as exc:
                self.failure = f"cannot write {self.path}: {exc.strerror or exc}"
                raise
            self._put(self.key(output), entry)
            self.lines += 1

    def _append(self, line: bytes) -> None:
        if self._needs_newline:
            line = b"\n" + line
        fd = _open_manifest(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            # One write per record: appends of concurrent runs (shards) do not interleave.
            written = os.write(fd, line)
        except OSError:
            self._needs_newline = True  # part of the line may be there: start the next anew
            raise
        finally:
            os.close(fd)
        if written != len(line):  # a full disk: the line is torn (and ignored when read)
            self._needs_newline = True
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        self._needs_newline = False

    @staticmethod
    def _line(key: str, entry: ManifestEntry) -> bytes:
        record = {
            "output": key,
            "size": entry.output_size,
            "mtime_ns": entry.output_mtime_ns,
            "provenance": entry.provenance.to_dict(),
        }
        return (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode()

    def live_entries(self) -> dict[str, ManifestEntry]:
        """For each output that still exists, its entry (the one matching the file)."""
        live = {}
        for key, last in self.entries.items():
            try:
                stat = os.stat(self.out_dir / key)
            except OSError:
                continue
            if stat_module.S_ISREG(stat.st_mode):
                live[key] = self._match(key, stat) or last
        return live

    def compact_if_needed(self, min_lines: int = 1000) -> bool:
        """Rewrite the manifest with live entries only, once it holds over twice as many lines.

        Entries whose output no longer exists are dropped. The file is read again just
        before the atomic rewrite, so records appended meanwhile by concurrent runs (other
        shards) are kept; one appended in the instant between is lost, which costs its
        output a metadata read on the next run.
        """
        if self.lines <= max(min_lines, 2 * len(self.entries)) and not self._oversized:
            return False
        current = Manifest.load(self.out_dir)
        live = (current if current.entries else self).live_entries()

        def write_lines(handle: BinaryIO) -> None:
            for key, entry in live.items():
                handle.write(self._line(key, entry))

        try:
            atomic_write(self.path, write_lines, root=self.out_dir)
        except OSError as exc:
            self.failure = f"cannot compact {self.path}: {exc.strerror or exc}"
            return False
        self.entries, self.lines, self._needs_newline = live, len(live), False
        self._earlier, self._oversized = {}, False
        return True


def _open_manifest(path: Path, flags: int) -> int:
    """Open the manifest itself, never a symlink's target, and only a regular file."""
    try:
        # O_NONBLOCK: a FIFO planted at the name must not hang the run.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "it is a symbolic link; not following it") from None
        raise
    if not stat_module.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def _bounded_lines(handle: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of a file, each with its newline; None for a line over ``limit`` bytes,
    which is skipped without being held in memory."""
    while line := handle.readline(limit + 1):
        if len(line) <= limit or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(limit + 1)
        yield None


def find_provenance(path: Path) -> Provenance | None:
    """An output's record: its embedded metadata, else the nearest manifest above it.

    ValueError (saying why) when the file's embedded record is invalid.
    """
    embedded = read_embedded_checked(path)
    if embedded is not None:
        return embedded
    try:
        stat = os.stat(path)
    except OSError:
        return None
    resolved = Path(os.path.abspath(path))
    for folder in resolved.parents:
        if (folder / MANIFEST_NAME).is_file():
            manifest = Manifest.load(folder)
            if manifest.get(resolved) is not None:
                entry = manifest.match(resolved, stat)
                return entry.provenance if entry is not None else None
    return None
