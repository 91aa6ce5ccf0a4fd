"""Memory: the budget of a run, what an image costs the model, and the batch size that fits."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.core.errors import UsageError
from animegan_cli.core.units import GIB, MIB, format_bytes
from animegan_cli.engines.memory import (
    BASE_BYTES,
    BYTES_PER_PIXEL,
    DEFAULT_BUDGET_SHARE,
    EMULATED_BF16_BYTES_PER_PIXEL,
    available_memory,
    bytes_per_pixel,
    default_budget,
    estimate_peak,
)
from animegan_cli.media import data

# The engines' memory model lives in engines/memory.py (the Stylizer's tiles read it too).
__all__ = [
    "BASE_BYTES", "BYTES_PER_PIXEL", "DEFAULT_BUDGET_SHARE", "EMULATED_BF16_BYTES_PER_PIXEL",
    "GIB", "MIB", "available_memory", "bytes_per_pixel", "default_budget", "estimate_peak",
]

# Share of the budget one decoder may read a file into: it holds the file's bytes and their
# decoded pixels beside the model, so a file over a quarter of the budget is not read.
FILE_SHARE_OF_BUDGET = 0.25

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str, unit: int = 1024) -> int:
    """``4G``, ``512M``, ``1.5g``, ``2048`` -> a count; K/M/G/T are powers of ``unit``."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size like 4G, 512M or 100000")
    number, prefix = float(match.group(1)), match.group(2).lower()
    return int(number * unit ** " kmgt".index(prefix or " "))


def max_file_bytes(max_memory: int | None) -> int:
    """The largest input file one decoder may read within ``max_memory`` (None: the default)."""
    return int((max_memory or default_budget()) * FILE_SHARE_OF_BUDGET)


def largest_size_within(budget: int, precision: str = "fp32") -> int:
    """The largest --size (a square's side, multiple of 64) whose image fits ``budget``."""
    per_pixel = bytes_per_pixel(precision)
    pixels = max(0.0, (budget - BASE_BYTES) / per_pixel)
    return int(math.isqrt(int(pixels)) // 64 * 64)


def header_pixels(path: Path, max_pixels: int = 0) -> int | None:
    """Pixels of one image from its header only; None when unreadable or over max_pixels."""
    size = data.header_upright_size(path)
    if size is None:
        return None
    pixels = size[0] * size[1]
    if max_pixels and pixels > max_pixels:
        return None  # the decoder refuses it before any memory is spent
    return pixels


@dataclass
class MemoryPlan:
    """The batch size that fits, images too big for the budget, and what to tell the user."""

    batch_size: int
    too_big: dict[int, str] = field(default_factory=dict)  # index -> reason
    message: str | None = None


def plan_memory(
    paths: Sequence[Path],
    size: int,
    batch_size: int,
    precision: str,
    budget: int,
    max_pixels: int = data.DEFAULT_MAX_PIXELS,
    tiled: Mapping[int, int] | None = None,
) -> MemoryPlan:
    """Fit the run into ``budget`` bytes: lower the batch size, or refuse what cannot fit.

    With --size N every model input is at most N x N, so the bound is known up front and
    a size that cannot fit even one image is a usage error. With --size 0 each image's
    header gives its size; an image that alone needs more than the budget fails.
    ``tiled`` (index -> the model pixels of one of its tiles): images styled in tiles
    (engines/tiling.py planned them within the budget), whose batches are of tiles.
    """
    tiled = tiled or {}
    hint = _size_hint(budget, precision)
    too_big: dict[int, str] = {}
    largest = max(tiled.values(), default=0)
    if size and not tiled:
        largest = size * size
        need = estimate_peak(largest, 1, precision)
        if need > budget:
            raise UsageError(
                f"--size {size} needs about {format_bytes(need)} of memory per image, more "
                f"than the budget of {format_bytes(budget)}; {hint}"
            )
    for index, path in enumerate(paths):
        if index in tiled or (size and not tiled):
            continue
        pixels = size * size if size else header_pixels(path, max_pixels)
        if pixels is None:
            continue
        need = estimate_peak(pixels, 1, precision)
        if need > budget:
            too_big[index] = (
                f"needs about {format_bytes(need)} of memory at native size "
                f"({pixels / 1e6:.1f} MP), more than the budget of {format_bytes(budget)}; "
                f"{hint}"
            )
        else:
            largest = max(largest, pixels)
    fits = batch_size
    if largest:
        per_image = bytes_per_pixel(precision) * largest
        fits = max(1, min(batch_size, int((budget - BASE_BYTES) // per_image)))
    message = None
    if fits < batch_size:
        message = (
            f"lowering batch size from {batch_size} to {fits} to fit in "
            f"{format_bytes(budget)} (see --max-memory)"
        )
    return MemoryPlan(fits, too_big, message)


def _size_hint(budget: int, precision: str) -> str:
    side = largest_size_within(budget, precision)
    return f"use --size {side} or raise --max-memory" if side >= 64 else "raise --max-memory"


def frame_refusal(pixels: int, precision: str, budget: int) -> str | None:
    """Why one clip frame of ``pixels`` model-input pixels cannot run within ``budget``
    (worded as an image's refusal in plan_memory); None when it fits."""
    need = estimate_peak(pixels, 1, precision)
    if need <= budget:
        return None
    return (
        f"needs about {format_bytes(need)} of memory per frame ({pixels / 1e6:.1f} MP at the "
        f"model's size), more than the budget of {format_bytes(budget)}; "
        f"{_size_hint(budget, precision)}"
    )


def frames_within(pixels: int, precision: str, budget: int, frames: int) -> int:
    """How many frames of ``pixels`` (up to ``frames``, at least 1) one batch fits in ``budget``."""
    per_frame = bytes_per_pixel(precision) * max(pixels, 1)
    return max(1, min(frames, int((budget - BASE_BYTES) // per_frame)))
