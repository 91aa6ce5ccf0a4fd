"""Bounds that planning checks before any model loads; importable without torch."""

from __future__ import annotations

MIN_SIDE = 8
"""Smallest side the generator takes: two stride-2 convs, then reflection padding of 1."""

# Compiled static OpenVINO models kept at once: a run rarely has more shapes. Each holds its
# own weights and buffers, ~100 MB at 1x3x384x512 in bf16 (8 such: +665 MB RSS), growing with
# the pixels, so the pixels they are compiled for are bounded too (~0.8 GB in all). Here so
# that the warm-up (ov_warmup) plans within them without importing the engine.
MAX_COMPILED_SHAPES = 8
MAX_COMPILED_PIXELS = 8 * 384 * 512
