"""What made each output: the provenance record, input hashes, embedded metadata, the manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image

from animegan_cli import __version__
from animegan_cli.errors import WeightsError
from animegan_cli.weights import STYLES, WeightsStore, git_blob_id

TOOL = f"animegan {__version__}"
METADATA_KEY = "animegan"
MANIFEST_NAME = ".animegan-manifest.jsonl"
HASH_BYTES = 32  # BLAKE2b-256: the same digest as `b2sum -l 256 FILE`
HASH_WORKERS = 4
_CHUNK_BYTES = 1 << 20
LOSSY_FORMATS = frozenset({".jpg", ".jpeg", ".webp"})

XMP_NAMESPACE = "urn:animegan:provenance:1"
_XMP_TEMPLATE = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    f'<rdf:Description rdf:about="" xmlns:animegan="{XMP_NAMESPACE}">'
    "<animegan:provenance>{text}</animegan:provenance>"
    "</rdf:Description></rdf:RDF></x:xmpmeta>"
    '<?xpacket end="w"?>'
)
_TIFF_IMAGE_DESCRIPTION = 270


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
        """Parse a record; ValueError when it is not one of ours."""
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        try:
            prov = cls(
                input_blake2b=str(record["input_blake2b"]),
                input_size=int(record["input_size"]),
                input_mtime_ns=int(record["input_mtime_ns"]),
                style=str(record["style"]),
                checkpoint=str(record["checkpoint"]),
                settings=dict(record["settings"]),
                tool=str(record.get("tool", "")),
                similar_to=record.get("similar_to"),
                distance=record.get("distance"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an animegan provenance record ({exc})") from exc
        return prov

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        """Parse JSON text; ValueError when it is not a record."""
        return cls.from_dict(json.loads(text))

    def describe(self) -> list[str]:
        """Human-readable lines for ``animegan inspect``."""
        when = datetime.fromtimestamp(self.input_mtime_ns / 1e9).isoformat(" ", "seconds")
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


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def pixel_settings(
    size: int, precision: str, align_corners: bool, keep_size: bool, backend: str
) -> dict[str, object]:
    """The settings that change an output's pixels; ``precision``/``backend`` resolved."""
    return {
        "size": size,
        "precision": precision,
        "backend": backend,
        "align_corners": align_corners,
        "keep_size": keep_size,
    }


def settings_for_output(base: dict[str, object], output: Path, quality: int) -> dict[str, object]:
    """The settings recorded for one output: ``base`` plus the quality of a lossy format."""
    if output.suffix.lower() in LOSSY_FORMATS:
        return {**base, "quality": quality}
    return dict(base)


def hash_file(path: Path) -> str:
    """BLAKE2b-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.blake2b(digest_size=HASH_BYTES)
    with open(path, "rb") as handle:
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


def embed_options(pil_format: str, text: str) -> dict[str, object]:
    """Pillow save options that store ``text`` in a file of this format (none for BMP).

    PNG: a tEXt chunk named "animegan"; JPEG and WebP: an XMP packet; TIFF: the
    ImageDescription tag. All read back by :func:`read_embedded`.
    """
    if pil_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(METADATA_KEY, text)
        return {"pnginfo": info}
    if pil_format in ("JPEG", "WEBP"):
        return {"xmp": _XMP_TEMPLATE.format(text=escape(text)).encode("utf-8")}
    if pil_format == "TIFF":
        return {"tiffinfo": {_TIFF_IMAGE_DESCRIPTION: text}}
    return {}


def read_embedded(path: Path) -> Provenance | None:
    """The record stored in an image file's metadata, or None (reads the header only)."""
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                text = img.info.get(METADATA_KEY)
            elif img.format in ("JPEG", "WEBP"):
                text = _from_xmp(img.info.get("xmp"))
            elif img.format == "TIFF":
                text = img.tag_v2.get(_TIFF_IMAGE_DESCRIPTION)  # type: ignore[attr-defined]
            else:
                text = None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if not text:
        return None
    try:
        return Provenance.from_json(text)
    except ValueError:
        return None


def _from_xmp(packet: bytes | str | None) -> str | None:
    if not packet:
        return None
    try:
        root = ET.fromstring(packet)
    except ET.ParseError:
        return None
    node = root.find(f".//{{{XMP_NAMESPACE}}}provenance")
    return node.text if node is not None else None


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
    """``OUT/.animegan-manifest.jsonl``: one JSON line per written output, last one wins.

    Lines are only appended (one ``write`` each, after the output's atomic rename), so a
    crash loses at most the last records, and a torn last line is ignored when read. Each
    entry holds the output's size and mtime: an output changed behind the manifest's back
    is not trusted by it (its embedded metadata is read instead). The manifest is a cache:
    without it, every output's own metadata still says what made it.
    """

    out_dir: Path
    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    lines: int = 0
    failure: str | None = None
    _needs_newline: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        """Where the manifest lives."""
        return self.out_dir / MANIFEST_NAME

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        """Read the manifest in ``out_dir`` (empty when absent or unreadable)."""
        manifest = cls(Path(out_dir))
        try:
            data = manifest.path.read_bytes()
        except OSError:
            return manifest
        manifest._needs_newline = bool(data) and not data.endswith(b"\n")
        for line in data.splitlines():
            manifest.lines += 1
            try:
                record = json.loads(line)
                entry = ManifestEntry(
                    int(record["size"]),
                    int(record["mtime_ns"]),
                    Provenance.from_dict(record["provenance"]),
                )
                manifest.entries[str(record["output"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a crash, or a line from a future version
        return manifest

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

    def record(self, output: Path, provenance: Provenance) -> None:
        """Append an entry for an output that has just been written (stats it now)."""
        try:
            stat = os.stat(output)
        except OSError as exc:
            self.failure = f"cannot stat {output}: {exc.strerror or exc}"
            return
        entry = ManifestEntry(stat.st_size, stat.st_mtime_ns, provenance)
        line = self._line(self.key(output), entry)
        with self._lock:
            try:
                self._append(line)
            except OSError as exc:
                self.failure = f"cannot write {self.path}: {exc.strerror or exc}"
                return
            self.entries[self.key(output)] = entry
            self.lines += 1

    def _append(self, line: bytes) -> None:
        if self._needs_newline:
            line = b"\n" + line
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            # One write per record: appends of concurrent runs (shards) do not interleave.
            os.write(fd, line)
        finally:
            os.close(fd)
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

    def compact_if_needed(self, min_lines: int = 1000) -> bool:
        """Rewrite the manifest with live entries only, once it holds over twice as many lines.

        Entries whose output no longer exists are dropped. The file is read again just
        before the atomic rewrite, so records appended meanwhile by concurrent runs (other
        shards) are kept; one appended in the instant between is lost, which costs its
        output a metadata read on the next run.
        """
        if self.lines <= max(min_lines, 2 * len(self.entries)):
            return False
        current = Manifest.load(self.out_dir).entries or self.entries
        live = {k: e for k, e in current.items() if (self.out_dir / k).is_file()}
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=MANIFEST_NAME + ".", dir=self.out_dir)
        except OSError as exc:
            self.failure = f"cannot compact {self.path}: {exc.strerror or exc}"
            return False
        try:
            with os.fdopen(fd, "wb") as handle:
                for key, entry in live.items():
                    handle.write(self._line(key, entry))
            os.chmod(tmp_name, 0o666 & ~_umask())
            os.replace(tmp_name, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            self.failure = f"cannot compact {self.path}: {exc.strerror or exc}"
            return False
        self.entries, self.lines, self._needs_newline = live, len(live), False
        return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def find_provenance(path: Path) -> Provenance | None:
    """An output's record: its embedded metadata, else the nearest manifest above it."""
    embedded = read_embedded(path)
    if embedded is not None:
        return embedded
    try:
        stat = os.stat(path)
    except OSError:
        return None
    resolved = Path(os.path.abspath(path))
    for folder in resolved.parents:
        if (folder / MANIFEST_NAME).is_file():
            entry = Manifest.load(folder).get(resolved)
            if entry is not None:
                return entry.provenance if entry.matches(stat) else None
    return None


def with_reuse(record: Provenance, similar_to: str, distance: int) -> Provenance:
    """The record of an output that got a similar image's result (--reuse-similar)."""
    return dataclasses.replace(record, similar_to=similar_to, distance=distance)

