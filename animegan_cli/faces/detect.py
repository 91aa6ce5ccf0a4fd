"""Face detection for ``--faces``: the settings, the detector protocol, the bundled Haar detector.

The detector's model must ship inside a pip package (no download at run time): OpenCV's
Haar cascades are in every ``opencv-python-headless`` 4.x wheel (5.0 drops them, hence the
``<5`` pin of the ``faces`` extra). cv2 and numpy are imported only when a detector is
built, and PIL and the style registry inside the functions that use them: importing this
module (cli.py does, for the flag choices) costs nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from animegan_cli.core.errors import UsageError, install_hint
from animegan_cli.settings import fields

if TYPE_CHECKING:
    from PIL import Image

MODES = ("off", "crop", "paste")
FALLBACKS = ("fail", "whole")
FACE_SIZE = 512  # the face styles' trained size: every crop is styled at FACE_SIZE x FACE_SIZE
# --faces' settings are declared (and their defaults explained) in settings/fields.py.
DEFAULT_MARGIN: float = fields.FACE_MARGIN.default
DEFAULT_MIN_FACE: int = fields.MIN_FACE.default  # px of the input image
DEFAULT_NEIGHBOURS: int = fields.FACE_NEIGHBOURS.default
DEFAULT_MAX_FACES: int = fields.MAX_FACES.default
# Detection runs on a copy whose long side is at most this: the cascade's cost grows with
# the pixel count, and a face worth styling is far above the 24 px window at this scale.
DETECT_LONG_SIDE = 1280
NO_FACE = "no face found (--faces-fallback whole converts such an image whole)"
EXTRA_HINT = f"face detection needs OpenCV: {install_hint('faces')}"

# --face-detector name -> the OpenCV cascade file (cv2.data.haarcascades) it loads.
DETECTORS = {
    "haar": "haarcascade_frontalface_default.xml",
    "haar-alt2": "haarcascade_frontalface_alt2.xml",
}
DEFAULT_DETECTOR: str = fields.FACE_DETECTOR.default  # fewer false faces: docs/faces.md


def face_styles() -> list[str]:
    """The published styles trained on face crops (the ones --faces is made for)."""
    from animegan_cli.model.weights import STYLES

    return [name for name, style in STYLES.items() if "face" in style.trained_on]


def style_note(style: str, weights: Path | None) -> str | None:
    """A note for --faces with a published style that was not trained on faces."""
    from animegan_cli.model.weights import STYLES

    if weights is not None or style not in STYLES or style in face_styles():
        return None
    return (
        f"--faces: {style} was not trained on faces ({', '.join(face_styles())} were); "
        "its faces are cropped and styled at 512x512 all the same"
    )


@dataclass(frozen=True)
class Box:
    """A face's box in pixels of the image it was found in: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        """[x, y, w, h], for JSON."""
        return [self.x, self.y, self.w, self.h]

    def scaled(self, factor: float) -> Box:
        """The box in an image ``factor`` times the size."""
        return Box(*(round(v * factor) for v in (self.x, self.y, self.w, self.h)))


class Detector(Protocol):
    """Anything that finds faces: boxes in the given image's pixels, any order."""

    def detect(self, image: Image.Image) -> list[Box]: ...


@dataclass(frozen=True)
class FaceSettings:
    """What ``--faces`` does; everything here is recorded and redoes outputs when changed."""

    mode: str = fields.FACES.default
    margin: float = DEFAULT_MARGIN
    detector: str = DEFAULT_DETECTOR
    min_face: int = DEFAULT_MIN_FACE
    neighbours: int = DEFAULT_NEIGHBOURS
    # crop mode only: paste styles a faceless image whole anyway
    fallback: str = fields.FACES_FALLBACK.default
    max_faces: int = DEFAULT_MAX_FACES

    @property
    def on(self) -> bool:
        """Whether faces are looked for at all."""
        return self.mode != "off"

    def validate(self, reuse_similar: bool = False) -> None:
        """UsageError for values that cannot work (or OpenCV missing when faces are on)."""
        checks = [
            (not (self.on and reuse_similar),
             "--faces and --reuse-similar cannot be combined (a look-alike has other faces)"),
            (self.mode in MODES, f"--faces must be one of {', '.join(MODES)}"),
            (1.0 <= self.margin <= 4.0, "--face-margin must be between 1.0 and 4.0"),
            (self.detector in DETECTORS, f"--face-detector must be one of {', '.join(DETECTORS)}"),
            (self.min_face >= 8, "--min-face must be at least 8 (px)"),
            (self.neighbours >= 1, "--face-neighbours must be at least 1"),
            (self.fallback in FALLBACKS, f"--faces-fallback must be one of {', '.join(FALLBACKS)}"),
            (self.max_faces >= 1, "--max-faces must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.on and importlib.util.find_spec("cv2") is None:
            raise UsageError(EXTRA_HINT)

    def dry_run_note(self) -> str:
        """What a dry run cannot say: faces are found only when an image is decoded."""
        named = " (each crop output is listed by its first name, <stem>_face1)"
        return (
            f"--faces {self.mode}: faces are found only when images are decoded, so a dry "
            f"run does not detect them{named if self.mode == 'crop' else ''}"
        )

    def record(self) -> dict[str, object]:
        """The settings an output records ({} when off: plain outputs record what they did).

        The fallback only in crop mode, the one it acts in; max_faces always, compared only
        where the cap left faces out (staleness.CONDITIONAL_SETTINGS).
        """
        if not self.on:
            return {}
        recorded: dict[str, object] = {
            "faces": self.mode,
            "face_margin": self.margin,
            "face_detector": self.detector,
            "min_face": self.min_face,
            "face_neighbours": self.neighbours,
            "max_faces": self.max_faces,
        }
        if self.mode == "crop":
            recorded["faces_fallback"] = self.fallback
        return recorded

    def build_detector(self) -> HaarDetector:
        """The detector these settings name; UsageError (naming the extra) without OpenCV."""
        return HaarDetector(DETECTORS[self.detector], self.min_face, self.neighbours)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, run on a copy at most DETECT_LONG_SIDE px long."""

    def __init__(self, cascade: str, min_face: int, neighbours: int) -> None:
        try:
            import cv2
        except ImportError:
            raise UsageError(EXTRA_HINT) from None
        self._cv2 = cv2
        cascades = cv2.data.haarcascades  # type: ignore[attr-defined]  # not in cv2's stubs
        self.classifier = cv2.CascadeClassifier(str(Path(cascades) / cascade))
        if self.classifier.empty():
            raise UsageError(f"OpenCV has no {cascade}; {EXTRA_HINT}")
        self.min_face = min_face
        self.neighbours = neighbours

    def detect(self, image: Image.Image) -> list[Box]:
        """Face boxes in ``image``'s pixels."""
        import numpy as np
        from PIL import Image

        scale = min(1.0, DETECT_LONG_SIDE / max(image.size))
        small = image.convert("L")
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            small = small.resize(size, Image.Resampling.BILINEAR)
        gray = self._cv2.equalizeHist(np.asarray(small))
        side = max(1, round(self.min_face * scale))
        found = self.classifier.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=self.neighbours, minSize=(side, side)
        )
        return [Box(*(int(v) for v in box)).scaled(1 / scale) for box in found]


def reading_order(boxes: list[Box]) -> list[Box]:
    """Boxes left to right, top to bottom: a box starts a new row when its centre is below
    the current row's first centre by more than half the typical face height."""
    if not boxes:
        return []
    heights = sorted(b.h for b in boxes)
    tolerance = heights[len(heights) // 2] / 2
    rows: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: b.y + b.h / 2):
        centre = box.y + box.h / 2
        if rows and centre - (rows[-1][0].y + rows[-1][0].h / 2) <= tolerance:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [box for row in rows for box in sorted(row, key=lambda b: b.x)]


def find_faces(detector: Detector, image: Image.Image) -> list[Box]:
    """The faces of an upright image, in reading order."""
    return reading_order(detector.detect(image))


def largest_faces(boxes: list[Box], limit: int) -> list[Box]:
    """At most ``limit`` of ``boxes``: the largest by area, in reading order."""
    if len(boxes) <= limit:
        return boxes
    return reading_order(sorted(boxes, key=lambda b: b.w * b.h, reverse=True)[:limit])


def crop_output(output: Path, index: int) -> Path:
    """The output of face ``index`` (from 1) of the input whose output is ``output``."""
    return output.with_name(f"{output.stem}_face{index}{output.suffix}")
