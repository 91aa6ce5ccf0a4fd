"""Face geometry and blending for ``--faces``: the square crop around a face, and pasting a
styled face back over the plain result with a feathered mask."""

from __future__ import annotations

import numpy as np
from PIL import Image

from animegan_cli.faces.detect import FACE_SIZE, Box

# The feather (the mask's ramp from 0 at the crop's edge to 1) as a share of the crop's side.
FEATHER_SHARE = 0.15


def square_crop(box: Box, margin: float, width: int, height: int) -> Box:
    """The square around ``box`` (its long side times ``margin``), inside the image.

    Near a border the square is shifted inward, and it is shrunk to the image's short side
    when larger: never padded, so every pixel styled is a real one.
    """
    side = min(round(max(box.w, box.h) * margin), width, height)
    left = round(box.x + box.w / 2 - side / 2)
    top = round(box.y + box.h / 2 - side / 2)
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return Box(left, top, side, side)


def face_input(image: Image.Image, crop: Box) -> Image.Image:
    """The RGB crop, resized to FACE_SIZE x FACE_SIZE (bicubic, as the model inputs are)."""
    region = image.convert("RGB").crop((crop.x, crop.y, crop.x + crop.w, crop.y + crop.h))
    return region.resize((FACE_SIZE, FACE_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)


def feather_mask(width: int, height: int) -> np.ndarray:
    """(height, width) weights: 0 on the outermost pixels, rising smoothly to 1 inside."""

    def ramp(n: int, feather: float) -> np.ndarray:
        edge = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64)
        t = np.clip(edge / feather, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no kink where the ramp meets 1

    feather = max(1.0, FEATHER_SHARE * min(width, height))
    return ramp(height, feather)[:, None] * ramp(width, feather)[None, :]


def output_region(crop: Box, original: tuple[int, int], result: tuple[int, int]) -> Box:
    """Where a crop of the original image lies in the result (which may be smaller)."""
    fx, fy = result[0] / original[0], result[1] / original[1]
    left, top = round(crop.x * fx), round(crop.y * fy)
    right = min(result[0], round((crop.x + crop.w) * fx))
    bottom = min(result[1], round((crop.y + crop.h) * fy))
    return Box(left, top, max(1, right - left), max(1, bottom - top))


def paste_face(base: Image.Image, face: Image.Image, region: Box) -> Image.Image:
    """``base`` with ``face`` blended over ``region``; pixels where the mask is 0 (the
    region's edge and everything outside it) keep ``base``'s exact values, alpha too."""
    pixels = np.array(base)
    resized = np.asarray(
        face.convert("RGB").resize((region.w, region.h), Image.Resampling.LANCZOS), np.float64
    )
    rows, columns = slice(region.y, region.y + region.h), slice(region.x, region.x + region.w)
    window = (rows, columns, slice(0, 3))
    plain = pixels[window].astype(np.float64)
    mask = feather_mask(region.w, region.h)[:, :, None]
    blended = np.clip(np.rint(plain + mask * (resized - plain)), 0, 255).astype(np.uint8)
    pixels[window] = np.where(mask > 0, blended, pixels[window])
    return Image.fromarray(pixels, base.mode)
