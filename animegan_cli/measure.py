"""Measuring an engine: throughput, latency per batch and peak memory (benchmarks and tune)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from animegan_cli.engine import Engine


@dataclass(frozen=True)
class Measurement:
    """One engine setting at one input shape."""

    batch_size: int
    height: int
    width: int
    images_per_second: float
    latency_ms: float  # median wall time of one batch
    batches: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start (or the last reset), in MiB."""
    peak_now = _status_mb("VmHWM")
    if peak_now is not None:
        return peak_now
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark (Linux), so the next reading is one setting's own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_engine(
    engine: Engine,
    height: int,
    width: int,
    batch_size: int,
    min_seconds: float = 3.0,
    min_batches: int = 2,
    seed: int = 0,
) -> Measurement:
    """Time ``engine.run`` on random uint8 batches after one warm-up batch.

    Runs at least ``min_batches`` batches and at least ``min_seconds``; throughput is
    images over total timed seconds, latency the median batch time.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8,
                          generator=generator)
    engine.run(batch)  # warm-up: first-call allocation, kernel selection, compile
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_batches or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        engine.run(batch)
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return Measurement(
        batch_size=batch_size,
        height=height,
        width=width,
        images_per_second=batch_size * len(times) / total,
        latency_ms=statistics.median(times) * 1000,
        batches=len(times),
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
