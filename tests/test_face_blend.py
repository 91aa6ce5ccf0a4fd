"""Crop geometry and the feathered paste: exact outside, different inside, no seam."""

from __future__ import annotations

import numpy as np
from PIL import Image

from animegan_cli.faces.blend import (
    FEATHER_SHARE,
    face_input,
    feather_mask,
    output_region,
    paste_face,
    square_crop,
)
from animegan_cli.faces.detect import FACE_SIZE, Box


def test_square_crop_is_centred_with_the_margin():
    assert square_crop(Box(100, 100, 40, 60), 1.5, 1000, 1000) == Box(75, 85, 90, 90)


def test_square_crop_is_shifted_inside_at_a_border():
    assert square_crop(Box(0, 5, 50, 50), 2.0, 300, 200) == Box(0, 0, 100, 100)
    assert square_crop(Box(260, 160, 40, 40), 2.0, 300, 200) == Box(220, 120, 80, 80)


def test_square_crop_shrinks_to_the_short_side():
    assert square_crop(Box(10, 10, 150, 150), 1.3, 400, 160) == Box(5, 0, 160, 160)


def test_face_input_is_the_trained_size_in_rgb():
    image = Image.new("RGBA", (300, 200), (10, 20, 30, 40))
    face = face_input(image, Box(50, 50, 100, 100))
    assert face.size == (FACE_SIZE, FACE_SIZE) and face.mode == "RGB"


def test_feather_mask_is_zero_on_the_edge_and_one_inside():
    mask = feather_mask(100, 80)
    assert mask.shape == (80, 100)
    assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0
    assert mask[40, 50] == 1.0
    assert 0.0 <= mask.min() and mask.max() <= 1.0


def test_output_region_scales_to_a_smaller_result():
    assert output_region(Box(100, 200, 400, 400), (2000, 1000), (1000, 500)) == Box(
        50, 100, 200, 200
    )


def _plain_and_face(size=(240, 180)):
    rng = np.random.default_rng(0)
    plain = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    face = Image.fromarray(np.full((FACE_SIZE, FACE_SIZE, 3), 255, np.uint8))
    return plain, face


def test_paste_leaves_everything_outside_the_region_exact():
    plain, face = _plain_and_face()
    region = Box(60, 40, 100, 100)
    pasted = np.asarray(paste_face(plain, face, region))
    before = np.asarray(plain)
    outside = np.ones(before.shape[:2], bool)
    outside[region.y:region.y + region.h, region.x:region.x + region.w] = False
    assert np.array_equal(pasted[outside], before[outside])
    # The region's own edge has weight 0 too; its middle is the face.
    assert np.array_equal(pasted[region.y, region.x:region.x + region.w],
                          before[region.y, region.x:region.x + region.w])
    assert (pasted[90, 110] == 255).all()


def test_paste_keeps_alpha():
    plain, face = _plain_and_face()
    plain.putalpha(77)
    pasted = paste_face(plain, face, Box(10, 10, 50, 50))
    assert pasted.mode == "RGBA" and pasted.getchannel("A").getextrema() == (77, 77)


def test_blend_is_continuous_across_the_mask_border():
    # Black plain, white face: each pixel is 255 * its weight, so the steepest step between
    # neighbours is the mask's steepest slope (smoothstep: 1.5 / feather), never a hard edge.
    plain = Image.new("RGB", (300, 300), (0, 0, 0))
    face = Image.new("RGB", (FACE_SIZE, FACE_SIZE), (255, 255, 255))
    region = Box(50, 50, 200, 200)
    pasted = np.asarray(paste_face(plain, face, region)).astype(int)[:, :, 0]
    feather = FEATHER_SHARE * 200
    bound = 255 * 1.5 / feather + 1  # +1: rounding
    assert np.abs(np.diff(pasted, axis=0)).max() <= bound
    assert np.abs(np.diff(pasted, axis=1)).max() <= bound
    assert pasted[150, 150] == 255 and pasted[49, 150] == 0
