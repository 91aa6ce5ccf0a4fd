"""``--colour``: a styled result's brightness or colours taken back from the photo.

The reference is the image the model saw (``PreparedImage.pixels``: the input at the
model's size, upright, RGB), so a result and its reference always have the same size and
the step costs one pass over the model-sized pixels. ``Stylizer.finish`` applies it, before
``--keep-size`` scales the result back; every front end finishes its results there.

- ``style``: the model's pixels as they are (the default).
- ``keep-brightness``: AnimeGANv2's own test script (``tools/adjust_brightness.py``): every
  channel is multiplied by one factor, the photo's mean luma over the result's, where luma
  is BT.601's ``0.299 R + 0.587 G + 0.114 B`` of the channel means; colours stay the style's.
- ``keep-colours``: the photo's chroma, the style's luma: in BT.601 YCbCr (JPEG's), Y from
  the result and Cb/Cr from the photo, i.e. each channel is the photo's plus the difference
  of the two lumas.

Importable without torch (the CLI reads ``COLOURS`` for ``--colour``'s choices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from animegan_cli.settings import fields

if TYPE_CHECKING:
    import torch

# BT.601 luma weights: AnimeGANv2's adjust_brightness.py, and JPEG's (and Pillow's) YCbCr.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# keep-brightness: a result's mean luma within this share of the photo's ends the search.
BRIGHTNESS_TOLERANCE = 0.001
# Clipping at 255 leaves the mean short of the photo's; the factor is then raised by Newton
# steps (the mean is concave and piecewise linear in the factor: a few steps reach it).
BRIGHTNESS_STEPS = 8


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (H, W) float32 of (H, W, 3) pixels."""
    import torch

    return pixels.float() @ torch.tensor(LUMA_WEIGHTS)


def mean_luma(pixels: torch.Tensor) -> float:
    """The mean luma of (H, W, 3) pixels, as the original's ``calculate_average_brightness``."""
    return float(luma(pixels).mean())


def keep_brightness(reference: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """``styled`` scaled so that its mean luma is the reference's (see the module docstring).

    Like the original, one factor for all three channels, clipped to 0-255; unlike it, the
    result is rounded (the original's ``np.uint8`` truncates, darkening by up to one level)
    and the factor is raised again where clipping at 255 left the mean short. A black
    result has no brightness to scale and stays as it is.
    """
    target, current = mean_luma(reference), mean_luma(styled)
    if current <= 0:
        return styled
    pixels = styled.float()
    factor = target / current
    for _ in range(BRIGHTNESS_STEPS):
        scaled = pixels * factor
        reached = mean_luma(scaled.clamp(max=255))
        if abs(reached - target) <= BRIGHTNESS_TOLERANCE * target:
            break
        slope = mean_luma(pixels * (scaled < 255))  # what raising the factor still lifts
        if slope <= 0:
            break  # all white: no brighter result exists
        factor += (target - reached) / slope
    scaled = (pixels * factor).clamp(0, 255)
    return scaled.round().to(styled.dtype)


def keep_colours(reference: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """The reference's chroma with ``styled``'s luma (see the module docstring).

    Where the photo's chroma does not fit at the style's luma (a saturated colour made much
    lighter or darker), it is scaled down toward grey until it does: the luma is the
    style's exactly, the hue the photo's, only such pixels lose saturation.
    """
    import torch

    photo = reference.float()
    photo_luma = luma(photo).unsqueeze(-1)
    target = luma(styled).unsqueeze(-1)
    chroma = photo - photo_luma  # per channel: R - Y, G - Y, B - Y (BT.601 YCbCr's axes)
    room_up = torch.where(chroma > 0, (255 - target) / chroma.clamp(min=1e-6), 1.0)
    room_down = torch.where(chroma < 0, target / (-chroma).clamp(min=1e-6), 1.0)
    fit = torch.minimum(room_up, room_down).amin(dim=-1, keepdim=True).clamp(max=1.0)
    return (target + chroma * fit).clamp(0, 255).round().to(styled.dtype)


# --colour's choices: None = the model's pixels untouched.
Keeper = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
KEEPERS: dict[str, Keeper | None] = {
    "style": None,
    "keep-brightness": keep_brightness,
    "keep-colours": keep_colours,
}
COLOURS = tuple(KEEPERS)


def colour_problem(mode: str, name: str = fields.COLOUR.flag) -> str | None:
    """Why ``mode`` is no --colour (the user's one line, naming it ``name``), or None."""
    if mode in KEEPERS:
        return None
    return f"{name} must be one of: {', '.join(COLOURS)}, not {mode!r}"


def keep(mode: str, reference: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """``styled`` (H, W, 3) uint8 with ``mode``'s colour keeping against ``reference``
    (3, H', W') uint8, the model's input; resized to ``styled``'s size where they differ."""
    keeper = KEEPERS[mode]
    if keeper is None:
        return styled
    return keeper(_sized_like(reference, styled), styled)


def _sized_like(reference: torch.Tensor, styled: torch.Tensor) -> torch.Tensor:
    """The (3, H', W') reference as (H, W, 3), at ``styled``'s size (bilinear where needed)."""
    import torch.nn.functional as F

    height, width = int(styled.shape[0]), int(styled.shape[1])
    if tuple(reference.shape[1:]) != (height, width):
        resized = F.interpolate(reference.float().unsqueeze(0), size=(height, width),
                                mode="bilinear", align_corners=False, antialias=True)
        reference = resized.squeeze(0).round().clamp(0, 255).to(reference.dtype)
    return reference.permute(1, 2, 0)
