"""The engines' memory model: what an image costs the model at peak, and the machine's budget.

Read by pipeline/resources.py (batch sizes, refusals) and by the tiles (engines/tiling.py:
the tile and statistics sizes that fit a budget).
"""

from __future__ import annotations

import os
from pathlib import Path

from animegan_cli.core.units import GIB, MIB
from animegan_cli.engines.contract import cpu_has_fast_bf16

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


def bytes_per_pixel(precision: str) -> float:
    """Peak bytes per pixel of model input for the CPU engine at ``precision``."""
    if precision == "bf16" and not cpu_has_fast_bf16():
        return EMULATED_BF16_BYTES_PER_PIXEL
    return BYTES_PER_PIXEL.get(precision, BYTES_PER_PIXEL["fp32"])


def estimate_peak(pixels: int, batch: int = 1, precision: str = "fp32") -> int:
    """Peak bytes of a run whose model input is ``pixels`` per image, ``batch`` at a time."""
    return int(BASE_BYTES + bytes_per_pixel(precision) * pixels * batch)
