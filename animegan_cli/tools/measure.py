"""Measuring an engine: throughput, latency per batch and peak memory (benchmarks and tune)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from animegan_cli.engines.base import Engine, EngineSpec
from animegan_cli.settings import fields


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


# A batch shape (N, H, W) of uint8 RGB images.
BatchShape = tuple[int, int, int]


def interleaved_rates(
    engines: Mapping[str, Engine],
    shapes: Sequence[BatchShape],
    rounds: int = 3,
    seconds: float = 1.0,
    varying: bool = False,
) -> dict[tuple[str, BatchShape], Measurement]:
    """Model-only rate of each engine at each batch shape, measured in alternating rounds.

    Each round gives every (engine, shape) ``seconds`` of batches in turn, so load from
    other processes falls on all of them alike and their ratio stays fair. With
    ``varying`` an engine's batches cycle through the shapes one batch at a time (what a
    run of mixed photos does) instead of one shape after the other.
    """
    inputs = {s: _random_batch(s) for s in shapes}
    times: dict[tuple[str, BatchShape], list[float]] = {(n, s): [] for n in engines for s in shapes}
    for engine in engines.values():
        for shape in shapes:
            engine.run(inputs[shape])  # warm-up: compile, kernel selection, allocation
    for _ in range(rounds):
        for name, engine in engines.items():
            cycles = [list(shapes)] if varying else [[shape] for shape in shapes]
            for cycle in cycles:
                _time_batches(engine, inputs, cycle, seconds * len(cycle), times, name)
    return {key: _measurement(key[1], spent) for key, spent in times.items() if spent}


def _time_batches(engine: Engine, inputs: Mapping[BatchShape, torch.Tensor],
                  cycle: list[BatchShape], seconds: float,
                  times: dict[tuple[str, BatchShape], list[float]], name: str) -> None:
    """Run batches of ``cycle``'s shapes in turn for ``seconds``; each batch's time is kept."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for shape in cycle:
            t0 = time.perf_counter()
            engine.run(inputs[shape])
            times[name, shape].append(time.perf_counter() - t0)


def model_only_rate(
    source: Engine | EngineSpec | object,
    shapes: Sequence[tuple[int, int]],
    batch_size: int = fields.BATCH_SIZE.default,
    rounds: int = 3,
    seconds: float = 1.0,
    weights: Path | None = None,
    style: str | None = None,
) -> dict[tuple[int, int], Measurement]:
    """The model alone at each (H, W): the limit an end-to-end run is compared with.

    ``source`` is a Stylizer, an Engine, or an EngineSpec (loaded with ``weights`` or
    ``style``); the rate counts only ``engine.run`` on ready uint8 batches.
    """
    engine = _engine_of(source, weights, style)
    batch_shapes = [(batch_size, h, w) for h, w in shapes]
    rates = interleaved_rates({"model": engine}, batch_shapes, rounds, seconds)
    return {(h, w): rates["model", (batch_size, h, w)] for _, h, w in batch_shapes}


def _engine_of(source: object, weights: Path | None, style: str | None) -> Engine:
    if isinstance(source, EngineSpec):
        from animegan_cli.stylizer import Stylizer

        extra: dict[str, Any] = {"style": style} if style else {}
        return Stylizer.load(weights=weights, spec=source, **extra).engine
    # a Stylizer's engine, or the engine itself
    return cast(Engine, getattr(source, "engine", source))


def _random_batch(shape: BatchShape) -> torch.Tensor:
    n, h, w = shape
    generator = torch.Generator().manual_seed(h * 10007 + w)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=generator)


def _measurement(shape: BatchShape, spent: list[float]) -> Measurement:
    n, h, w = shape
    return Measurement(n, h, w, n * len(spent) / sum(spent), statistics.median(spent) * 1000,
                       len(spent))
