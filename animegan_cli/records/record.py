"""The provenance record: what one output was made from and how, its JSON form and its checks.

A record is read back from files we do not control (an output's metadata, the manifest), so
``from_dict`` validates every field and ``load_json`` refuses hostile JSON with a reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime

from animegan_cli import __version__

TOOL = f"animegan {__version__}"

# Bounds on what is read back: a record is a few hundred bytes, so anything far larger is
# hostile or broken, and is ignored like a torn line instead of being parsed.
MAX_RECORD_BYTES = 64 << 10
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_TEXT = 1024  # a style (a file name), the tool, a setting's value: far below this
_MAX_SETTINGS = 64
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_BLOB_HEX = re.compile(r"[0-9a-f]{40}")


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
            input_size=integer_field(record, "input_size", 0),
            input_mtime_ns=integer_field(record, "input_mtime_ns", INT64_MIN),
            style=_text(record, "style"),
            checkpoint=_hex(record, "checkpoint", _BLOB_HEX),
            settings=_settings(record["settings"]),
            tool=_text(record, "tool") if "tool" in record else "",
            similar_to=None if similar_to is None else _hex(record, "similar_to", _HASH_HEX),
            distance=None if distance is None else integer_field(record, "distance", 0, 64),
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


def with_reuse(record: Provenance, similar_to: str, distance: int) -> Provenance:
    """The record of an output that got a similar image's result (--reuse-similar)."""
    return dataclasses.replace(record, similar_to=similar_to, distance=distance)


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


def integer_field(record: dict, key: str, low: int, high: int = INT64_MAX) -> int:
    """``record[key]``, an integer from ``low`` to ``high``; ValueError (saying so) if not."""
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
            scalar = INT64_MIN <= item <= INT64_MAX
        elif kind is float:
            scalar = math.isfinite(item)
        else:
            scalar = item is None or kind is bool
        if not scalar or len(key) > _MAX_TEXT:
            raise ValueError(f"settings.{key[:40]} must be a JSON scalar")
    return dict(value)


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)
