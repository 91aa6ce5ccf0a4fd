"""Memory: the budget of a run, what an image costs the model, and the batch size that fits."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.core.errors import UsageError
from animegan_cli.core.units import GIB, MIB, format_bytes
from animegan_cli.engines.base import cpu_has_fast_bf16
from animegan_cli.media import data

# Peak RSS of `convert --size 0 --num-workers 0` on one W x H image (benchmarks/peak_memory.py),
# torch 2.14.1 on an x86-64 CPU without bf16 hardware, in MiB:
#   MP of model input    0.004  0.066  0.26  0.52  1.05  2.10  3.15
#   fp32                   559    645   901  1392  1869  3184  4470
#   bf16 (emulated)                           3989  7486
# Least squares gives 612 MiB + 1230 MiB per MP for fp32 (1.29 GB per MP); the line below
# lies above every measurement. Threads (1 or 2) did not change it, and a batch of n
# images costs what one image of n times the pixels does (batch 4 at 0.26 MP: 1863 MiB).
# bf16 where the CPU has no bf16 instructions takes 5x the memory of fp32 (oneDNN's
# fallback); with AMX/AVX512-BF16 it was not measured here, and the fp32 figure, whose
# activations are twice as wide, is used as its bound.
BASE_BYTES = 750 * MIB
BYTES_PER_PIXEL = {"fp32": 1240 * MIB / 1e6, "bf16": 1240 * MIB / 1e6}
EMULATED_BF16_BYTES_PER_PIXEL = 6700 * MIB / 1e6
# Share of the available memory a run plans to use by default (--max-memory overrides):
# the rest is for decoder workers, the page cache and everything else on the machine.
DEFAULT_BUDGET_SHARE = 0.75
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


def available_memory() -> int:
    """Bytes this process can still use: MemAvailable, or less under a cgroup limit."""
    available = _meminfo_available()
    limit = _cgroup_room()
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 * GIB  # no way to know; a modest machine


def _cgroup_room() -> int | None:
    # cgroup v2: memory.max minus memory.current of this process's group.
    try:
        with open("/proc/self/cgroup") as handle:
            group = next((line.split(":", 2)[2].strip() for line in handle
                          if line.startswith("0::")), None)
        if group is None:
            return None
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def default_budget() -> int:
    """The memory a run plans for when --max-memory is not given."""
    return int(available_memory() * DEFAULT_BUDGET_SHARE)


def max_file_bytes(max_memory: int | None) -> int:
    """The largest input file one decoder may read within ``max_memory`` (None: the default)."""
    return int((max_memory or default_budget()) * FILE_SHARE_OF_BUDGET)


def bytes_per_pixel(precision: str) -> float:
    """Peak bytes per pixel of model input for the CPU engine at ``precision``."""
    if precision == "bf16" and not cpu_has_fast_bf16():
        return EMULATED_BF16_BYTES_PER_PIXEL
    return BYTES_PER_PIXEL.get(precision, BYTES_PER_PIXEL["fp32"])


def estimate_peak(pixels: int, batch: int = 1, precision: str = "fp32") -> int:
    """Peak bytes of a run whose model input is ``pixels`` per image, ``batch`` at a time."""
    return int(BASE_BYTES + bytes_per_pixel(precision) * pixels * batch)


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
) -> MemoryPlan:
    """Fit the run into ``budget`` bytes: lower the batch size, or refuse what cannot fit.

    With --size N every model input is at most N x N, so the bound is known up front and
    a size that cannot fit even one image is a usage error. With --size 0 each image's
    header gives its size; an image that alone needs more than the budget fails.
    """
    hint = _size_hint(budget, precision)
    too_big: dict[int, str] = {}
    if size:
        largest = size * size
        need = estimate_peak(largest, 1, precision)
        if need > budget:
            raise UsageError(
                f"--size {size} needs about {format_bytes(need)} of memory per image, more "
                f"than the budget of {format_bytes(budget)}; {hint}"
            )
    else:
        largest = 0
        for index, path in enumerate(paths):
            pixels = header_pixels(path, max_pixels)
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
