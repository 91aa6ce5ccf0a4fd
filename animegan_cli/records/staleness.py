"""The settings an output records, and which of them make it stale when they change.

``recorded_settings`` (and ``settings_for_output``, per output) is what a record holds;
``staleness_key`` and ``CONDITIONAL_SETTINGS`` are the rule for comparing it with a run's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from animegan_cli.media import kinds
from animegan_cli.media.formats import format_by_extension
from animegan_cli.settings import fields

# Settings recorded to say which engine made an output, but not compared: fp32, bf16 and
# fp16 results differ by rounding only (invisible), while int8 visibly changes pixels.
ENGINE_SETTINGS = ("backend", "device", "precision")
# What --faces found in an image (recorded for crop planning and people, not compared: the
# settings that decide it, detector and margin, are).
RESULT_SETTINGS = ("face_count", "face_index", "face_box", "face_boxes", "faces_found")
# How an image was styled in tiles (pipeline/tiles.py): the tile side is recorded, not
# compared (tiles with the same statistics give the same pixels, >= 60 dB); the size of the
# pass its statistics came from is compared (it changes the pixels). Absent: styled whole.
TILES_KEY, TILE_STATS_KEY = "tiles", "tile_stats"


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


def staleness_key(settings: dict[str, object]) -> dict[str, object]:
    """The part of recorded settings that decides whether an output is stale.

    Everything that visibly changes pixels (size, keep_size, align_corners, the quality
    of a lossy format, int8 or not) is compared; the engine (backend, device, and which
    float precision) is recorded but not compared.
    """
    ignored = (*ENGINE_SETTINGS, *RESULT_SETTINGS, *CONDITIONAL_SETTINGS, TILES_KEY)
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


def recorded_settings(
    size: int,
    precision: str,
    align_corners: bool,
    keep_size: bool,
    backend: str,
    device: str | None = None,
    colour: str = fields.COLOUR.default,
) -> dict[str, object]:
    """The settings an output records; ``precision``/``backend``/``device`` resolved.

    Which of them make an output stale is :func:`staleness_key`'s rule. ``colour`` is
    recorded only when it is not the default (``style``): outputs made before it existed,
    and today's default outputs, keep the same record (and bytes), and stay up to date.
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
    if colour != fields.COLOUR.default:
        settings["colour"] = colour
    return settings


def settings_for_output(
    base: dict[str, object], output: Path, quality: int, video_crf: int | None = None,
    video_smoothing: str | None = None,
) -> dict[str, object]:
    """The settings recorded for one output: ``base`` plus the quality of a lossy format
    (for a video output: its ``video_crf``, and ``video_smoothing`` where it is on: a clip
    made before the option, or with it off, records none, so it stays up to date)."""
    if video_crf is not None and kinds.output_kind(output).name == kinds.VIDEO:
        smoothing = {} if video_smoothing in (None, fields.VIDEO_SMOOTHING.default) else {
            "video_smoothing": video_smoothing}
        return {**base, "video_crf": video_crf, **smoothing}
    fmt = format_by_extension(output.suffix)
    if fmt is not None and fmt.lossy:
        return {**base, "quality": quality}
    return dict(base)
