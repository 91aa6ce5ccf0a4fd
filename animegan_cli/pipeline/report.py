"""``--report FILE``: the JSON account of a run (counts, failures, settings, time, status)."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from animegan_cli.core.atomic import atomic_write
from animegan_cli.pipeline.convert import ConvertOptions, Summary


def json_safe(text: str | os.PathLike[str]) -> str:
    """Text that always encodes as UTF-8: a non-UTF-8 file name's bytes become \\xNN."""
    return os.fspath(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(text: str | os.PathLike[str]) -> str:
    """json_safe, with control characters escaped (a newline in a file name shows as \\n)."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in json_safe(text)
    )


def _jsonable(value: object) -> object:
    if isinstance(value, (str, Path)):
        return json_safe(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}  # --faces
    return value


def build_report(
    summary: Summary | None,
    options: ConvertOptions | None,
    exit_status: int,
    error: str | None = None,
    interrupted_by: str | None = None,
) -> dict[str, object]:
    """The report as a JSON-ready dict; ``summary`` is None when the run never started.

    ``options`` is None when the command line could not be read (a usage error, or a
    signal while starting): ``settings`` is then null.
    """
    summary = summary or Summary()
    done = summary.converted + summary.skipped + summary.failed
    settings: dict[str, object] | None = None
    if options is not None:
        settings = {field.name: _jsonable(getattr(options, field.name))
                    for field in dataclasses.fields(options)}
        if options.weights is not None:
            settings["style"] = None  # --weights replaces the style: naming one would mislead
    return {
        "exit_status": exit_status,
        "error": json_safe(error) if error else None,
        "interrupted_by": interrupted_by,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_seconds": round(summary.seconds, 3),
        "counts": {
            "found": summary.found,
            "converted": summary.converted,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "not_done": max(0, summary.found - done),
        },
        "failures": [
            {"input": json_safe(r.input), "error": json_safe(r.error or "")}
            for r in summary.failures
        ],
        "settings": settings,
        "notes": [json_safe(note) for note in summary.notes],
        "engine": summary.engine or None,
        "batch_size_used": summary.batch_size or None,
        # --faces: each output's face count and boxes (in the upright input's pixels)
        **({"faces": [_jsonable(f) for f in summary.faces]} if summary.faces else {}),
        **({"videos": [
            {"input": json_safe(r.input), "output": json_safe(r.output or ""),
             "frames": r.frames, "duration": round(r.duration or 0.0, 3),
             **({"worker": r.worker} if r.worker else {})}
            for r in summary.videos
        ]} if summary.videos else {}),
    }


def write_report(path: Path, report: dict[str, object]) -> None:
    """Write the report atomically (temp file + rename): never a half-written JSON file."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
