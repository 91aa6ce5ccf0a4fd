"""What made each output: the provenance record, input hashes, embedded metadata, the manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import stat as stat_module
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from animegan_cli import __version__
from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import WeightsError
from animegan_cli.core.failures import PER_ITEM_ERRORS
from animegan_cli.media.formats import format_by_extension, format_named, read_record_text
from animegan_cli.media.video import is_video, read_record
from animegan_cli.model.weights import STYLES, WeightsStore, file_style_name, git_blob_id

TOOL = f"animegan {__version__}"
MANIFEST_NAME = ".animegan-manifest.jsonl"
HASH_BYTES = 32  # BLAKE2b-256: the same digest as `b2sum -l 256 FILE`
HASH_WORKERS = 4
_CHUNK_BYTES = 1 << 20

# Bounds on what is read back: a record is a few hundred bytes, so anything far larger is
# hostile or broken, and is ignored like a torn line instead of being parsed.
MAX_RECORD_BYTES = 64 << 10
MAX_LINE_BYTES = MAX_RECORD_BYTES + (64 << 10)  # a record plus its output's path
MAX_MANIFEST_BYTES = 256 << 20  # about 600,000 outputs; a larger manifest is ignored
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MAX_TEXT = 1024  # a style (a file name), the tool, a setting's value: far below this
_MAX_SETTINGS = 64
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_BLOB_HEX = re.compile(r"[0-9a-f]{40}")

# Settings recorded to say which engine made an output, but not compared: fp32, bf16 and
# fp16 results differ by rounding only (invisible), while int8 visibly changes pixels.
ENGINE_SETTINGS = ("backend", "device", "precision")
# What --faces found in an image (recorded for crop planning and people, not compared: the
# settings that decide it, detector and margin, are).
RESULT_SETTINGS = ("face_count", "face_index", "face_box", "face_boxes", "faces_found")


def _fallback_decides(recorded: dict[str, object], wanted: dict[str, object]) -> bool:
    return wanted.get("faces") == "crop"  # paste styles a faceless image whole either way


def _face_cap_decides(recorded: dict[str, object], wanted: dict[str, object]) -> bool:
    found = recorded.get("faces_found", recorded.get("face_count"))
    caps = [c for c in (recorded.get("max_faces"), wanted.get("max_faces")) if isinstance(c, int)]
    return isinstance(found, int) and bool(caps) and found > min(caps)


# Settings that decide pixels only in some cases, and are compared only then: a setting that
# does not change an output's pixels must not make it stale (nor a record from before it).
CONDITIONAL_SETTINGS: dict[str, Callable[[dict[str, object], dict[str, object]], bool]] = {
    "faces_fallback": _fallback_decides,  # crop mode's image without a face
    "max_faces": _face_cap_decides,  # where the cap left (or would leave) faces out
}


@dataclass(frozen=True)
class Provenance:
    """What one output was made from and how: enough to tell whether it is still up to date."""

    input_blake2b: str
    input_size: int
    input_mtime_ns: int
    style: str
    checkpoint: str
    settings: dict[str, object]
    tool: str = TOOL
    # Set when --reuse-similar gave this output another image's result.
    similar_to: str | None = None
    distance: int | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form; the reuse fields appear only when set."""
        record: dict[str, object] = {
            "tool": self.tool,
            "input_blake2b": self.input_blake2b,
            "input_size": self.input_size,
            "input_mtime_ns": self.input_mtime_ns,
            "style": self.style,
            "checkpoint": self.checkpoint,
            "settings": dict(self.settings),
        }
        if self.similar_to is not None:
            record["similar_to"] = self.similar_to
            record["distance"] = self.distance
        return record

    def to_json(self) -> str:
        """Compact, ASCII-only JSON (fits a TIFF ASCII tag and a PNG tEXt chunk)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, record: object) -> Provenance:
        """Parse and validate a record; ValueError (saying why) when it is not a valid one."""
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        if not record.keys() >= _REQUIRED:
            raise ValueError(f"missing {', '.join(sorted(_REQUIRED - record.keys()))}")
        similar_to, distance = record.get("similar_to"), record.get("distance")
        if (similar_to is None) != (distance is None):
            raise ValueError("similar_to and distance must be given together")
        return cls(
            input_blake2b=_hex(record, "input_blake2b", _HASH_HEX),
            input_size=_integer(record, "input_size", 0),
            input_mtime_ns=_integer(record, "input_mtime_ns", _INT64[0]),
            style=_text(record, "style"),
            checkpoint=_hex(record, "checkpoint", _BLOB_HEX),
            settings=_settings(record["settings"]),
            tool=_text(record, "tool") if "tool" in record else "",
            similar_to=None if similar_to is None else _hex(record, "similar_to", _HASH_HEX),
            distance=None if distance is None else _integer(record, "distance", 0, 64),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        """Parse JSON text; ValueError (saying why) when it is not a valid record."""
        return cls.from_dict(load_json(text, MAX_RECORD_BYTES))

    def describe(self) -> list[str]:
        """Human-readable lines for ``animegan inspect``."""
        try:
            when = datetime.fromtimestamp(self.input_mtime_ns / 1e9).isoformat(" ", "seconds")
        except (OverflowError, OSError, ValueError):
            when = f"{self.input_mtime_ns} ns after the epoch"
        settings = " ".join(f"{k}={_show(v)}" for k, v in self.settings.items())
        lines = [
            f"  made by    {self.tool}",
            f"  input      blake2b-256 {self.input_blake2b}",
            f"             {self.input_size} bytes, modified {when}",
            f"  style      {self.style} (checkpoint {self.checkpoint})",
            f"  settings   {settings}",
        ]
        if self.similar_to is not None:
            lines.append(
                f"  reused     result of a SIMILAR image (blake2b-256 {self.similar_to}, "
                f"dHash distance {self.distance}), not of this input"
            )
        return lines


_REQUIRED = frozenset(
    {"input_blake2b", "input_size", "input_mtime_ns", "style", "checkpoint", "settings"}
)


def load_json(text: str | bytes, limit: int) -> object:
    """json.loads for text from files we do not control; ValueError for anything hostile.

    Too long, too deeply nested (RecursionError), NaN/Infinity, numbers that overflow:
    each is refused with a reason rather than raising something a caller does not expect.
    """
    if len(text) > limit:
        raise ValueError(f"over {limit} bytes")
    try:
        return _DECODER.decode(text if isinstance(text, str) else text.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (OverflowError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {str(exc).splitlines()[0][:80]}") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _integer(record: dict, key: str, low: int, high: int = _INT64[1]) -> int:
    value = record[key]
    if type(value) is not int or not low <= value <= high:  # bool is an int: refused too
        raise ValueError(f"{key} must be an integer from {low} to {high}")
    return value


def _text(record: dict, key: str) -> str:
    value = record[key]
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"{key} must be a string of at most {_MAX_TEXT} characters")
    return value


def _hex(record: dict, key: str, pattern: re.Pattern[str]) -> str:
    value = _text(record, key)
    # Empty: the input (or checkpoint) could not be identified when the output was made.
    if value and not pattern.fullmatch(value):
        raise ValueError(f"{key} must be a lower-case hex digest")
    return value


def _settings(value: object) -> dict[str, object]:
    if not isinstance(value, dict) or len(value) > _MAX_SETTINGS:
        raise ValueError(f"settings must be a JSON object of at most {_MAX_SETTINGS} values")
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            scalar = len(item) <= _MAX_TEXT
        elif kind is int:
            scalar = _INT64[0] <= item <= _INT64[1]
        elif kind is float:
            scalar = math.isfinite(item)
        else:
            scalar = item is None or kind is bool
        if not scalar or len(key) > _MAX_TEXT:
            raise ValueError(f"settings.{key[:40]} must be a JSON scalar")
    return dict(value)


def staleness_key(settings: dict[str, object]) -> dict[str, object]:
    """The part of recorded settings that decides whether an output is stale.

    Everything that visibly changes pixels (size, keep_size, align_corners, the quality
    of a lossy format, int8 or not) is compared; the engine (backend, device, and which
    float precision) is recorded but not compared.
    """
    ignored = (*ENGINE_SETTINGS, *RESULT_SETTINGS, *CONDITIONAL_SETTINGS)
    key = {k: v for k, v in settings.items() if k not in ignored}
    key["precision"] = "int8" if settings.get("precision") == "int8" else "float"
    return key


def settings_change(recorded: dict[str, object], wanted: dict[str, object]) -> str | None:
    """"settings changed: ..." when an output made with ``recorded`` is stale, else None."""
    old, new = staleness_key(recorded), staleness_key(wanted)
    for k, decides in CONDITIONAL_SETTINGS.items():
        if decides(recorded, wanted):
            old[k], new[k] = recorded.get(k), wanted.get(k)
    if old == new:
        return None
    changes = []
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            prefix = "" if k == "precision" else f"{k} "
            changes.append(f"{prefix}{old.get(k)} -> {new.get(k)}")
    return "settings changed: " + ", ".join(changes)


def engine_change(recorded: dict[str, object], wanted: dict[str, object]) -> str | None:
    """How the engine differs, for an output that is up to date all the same; else None."""
    changes = [
        f"{k} {recorded[k]} -> {wanted[k]}"
        for k in ENGINE_SETTINGS
        if k in recorded and k in wanted and recorded[k] != wanted[k]
    ]
    if not changes:
        return None
    return f"engine differs: {', '.join(changes)}; same pixels within float tolerance"


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def recorded_settings(
    size: int,
    precision: str,
    align_corners: bool,
    keep_size: bool,
    backend: str,
    device: str | None = None,
) -> dict[str, object]:
    """The settings an output records; ``precision``/``backend``/``device`` resolved.

    Which of them make an output stale is :func:`staleness_key`'s rule.
    """
    settings: dict[str, object] = {
        "size": size,
        "precision": precision,
        "backend": backend,
        "align_corners": align_corners,
        "keep_size": keep_size,
    }
    if device is not None:
        settings["device"] = device
    return settings


def settings_for_output(
    base: dict[str, object], output: Path, quality: int, video_crf: int | None = None
) -> dict[str, object]:
    """The settings recorded for one output: ``base`` plus the quality of a lossy format
    (for a video output: its ``video_crf``)."""
    if video_crf is not None and is_video(output):
        return {**base, "video_crf": video_crf}
    fmt = format_by_extension(output.suffix)
    if fmt is not None and fmt.lossy:
        return {**base, "quality": quality}
    return dict(base)


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


def checkpoint_id(style: str, weights: Path | None, store: WeightsStore | None = None) -> str:
    """The checkpoint id a run will record (ResolvedWeights.checkpoint_id), without loading it.

    A published style is identified by its registered git blob id (the file is verified
    against it when it is loaded); a file of your own by the git blob id of its bytes.
    """
    if weights is None and style in STYLES:
        return STYLES[style].blob_id
    if weights is None:
        store = store or WeightsStore.from_env()
        found = store.find(style)
        if found is None:
            raise store.unknown_style(style)
        weights = found
    try:
        return git_blob_id(Path(weights).read_bytes())
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {weights} does not exist") from None
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint {weights}: {exc.strerror or exc}") from exc


def record_style(style: str, weights: Path | None, checkpoint: str | None) -> str:
    """The style name an output records.

    With ``--weights FILE`` that is the file's name (``paprika.pt``), unless its git blob
    id is a published style's: a published name is never claimed without its blob id.
    """
    if weights is None:
        return style
    return file_style_name(weights, checkpoint or "")


def read_embedded(path: Path) -> Provenance | None:
    """The record stored in an image file's metadata, or None (reads the header only).

    None also for a record that does not validate: such an output is treated as one
    without provenance (``read_embedded_checked`` says why).
    """
    try:
        return read_embedded_checked(path)
    except ValueError:
        return None


def read_embedded_checked(path: Path) -> Provenance | None:
    """Like read_embedded, but ValueError (saying why) for a record that is invalid."""
    text = _embedded_text(path)
    if not text:
        return None
    return Provenance.from_json(text)


def _embedded_text(path: Path) -> str | bytes | None:
    if is_video(path):
        return read_record(path)
    try:
        with Image.open(path) as img:
            return read_record_text(img)
    except PER_ITEM_ERRORS:  # a damaged file in OUT is an output without a record
        return None


def embeds_record(pil_format: str) -> bool:
    """Whether files of this Pillow format carry their own record (BMP does not)."""
    fmt = format_named(pil_format)
    return fmt is not None and fmt.embeds_record


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
                _integer(record, "size", 0),
                _integer(record, "mtime_ns", _INT64[0]),
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


def with_reuse(record: Provenance, similar_to: str, distance: int) -> Provenance:
    """The record of an output that got a similar image's result (--reuse-similar)."""
    return dataclasses.replace(record, similar_to=similar_to, distance=distance)

