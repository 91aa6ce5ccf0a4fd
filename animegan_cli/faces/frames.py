"""``--faces paste`` on a clip: a frame stage of the clip runner (runners/video_run.py).

Each frame batch is styled whole as without --faces; then each frame's faces are found (in
the frame as the model sees it: scaled to --size by FFmpeg), their square crops styled at
FACE_SIZE x FACE_SIZE and pasted back with the photo path's feathered blend (blend.py).
Pixels outside every face's crop are the plain frame's, bit for bit; the clip's frames,
timestamps and audio are untouched (the stage changes pixels only). Crop mode writes one
file per face of a photo, which a clip has no equivalent of: it stays refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from animegan_cli.faces import blend as face_blend
from animegan_cli.faces.detect import (
    FACE_SIZE,
    Box,
    Detector,
    FaceSettings,
    find_faces,
    largest_faces,
)
from animegan_cli.media import data

if TYPE_CHECKING:
    import torch

FACES_CROP_ON_CLIP = (
    "--faces crop writes one file per face of a photo and a clip's faces change from frame "
    "to frame; use --faces paste for clips, or convert them in a run without --faces"
)
_FACE_PREP = data.PreprocessSettings(size=FACE_SIZE, max_pixels=0)

# Styles prepared model inputs of one shape: Stylizer.run, or a wrapper that checks them.
RunModel = Callable[[list[data.PreparedImage]], "list[torch.Tensor]"]
# A styled face's pixels with --colour's keeping: Stylizer.keep_colour (as Stylizer.finish
# does for the frame); a styled face is pasted, never finished.
KeepColour = Callable[[data.PreparedImage, "torch.Tensor"], "torch.Tensor"]


def _as_styled(item: data.PreparedImage, pixels: torch.Tensor) -> torch.Tensor:
    return pixels


@dataclass
class FramePaste:
    """Finds each frame's faces, styles their crops and pastes them into the styled frame."""

    settings: FaceSettings
    batch_size: int  # face crops styled together (the clip's frames per batch)
    keep_colour: KeepColour = _as_styled
    faces_found: int = 0  # over the clip: what its result reports
    frames_with_faces: int = 0
    detector: Detector = field(init=False)

    def __post_init__(self) -> None:
        self.detector = self.settings.build_detector()

    def apply(self, frames: Sequence[Image.Image], styled: list[Image.Image],
              run: RunModel) -> list[Image.Image]:
        """``styled`` (the frames' plain results) with each frame's faces pasted over."""
        crops = [self._crops(frame) for frame in frames]
        parts = [face_blend.face_input(frame, crop) for frame, found in zip(frames, crops)
                 for crop in found]
        prepared = [data.prepare_decoded(-1, p, p.size, _FACE_PREP) for p in parts]
        pixels = [self.keep_colour(item, styled_face)
                  for item, styled_face in zip(prepared, self._style(prepared, run))]
        done, results = 0, []
        for frame, found, image in zip(frames, crops, styled):
            for crop in found:
                region = face_blend.output_region(crop, frame.size, image.size)
                face = Image.fromarray(pixels[done].numpy(), "RGB")
                image = face_blend.paste_face(image, face, region)
                done += 1
            results.append(image)
        return results

    def report(self) -> dict[str, object]:
        """What --json says about a clip's faces."""
        return {"count": self.faces_found, "frames": self.frames_with_faces}

    def _crops(self, frame: Image.Image) -> list[Box]:
        boxes = largest_faces(find_faces(self.detector, frame), self.settings.max_faces)
        self.faces_found += len(boxes)
        self.frames_with_faces += bool(boxes)
        return [face_blend.square_crop(b, self.settings.margin, *frame.size) for b in boxes]

    def _style(self, parts: list[data.PreparedImage], run: RunModel) -> list[torch.Tensor]:
        styled: list[torch.Tensor] = []
        for start in range(0, len(parts), self.batch_size):
            styled += run(parts[start:start + self.batch_size])
        return styled
