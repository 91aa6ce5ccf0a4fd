"""The torch engine: the reference, eager torch on CPU or CUDA, fp32 or bf16.

torch is imported inside the functions that run the model: this module is imported at start
(its declaration is in the registry), and torch alone costs ~1.5 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from animegan_cli.engines.contract import (
    Backend,
    Engine,
    EngineContext,
    EngineSpec,
    cpu_has_fast_bf16,
    to_model_input,
    to_pixels,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animegan_cli.model.generator import Generator


@dataclass(frozen=True)
class TorchOptions:
    """The torch backend's own settings."""

    compile: bool = False  # torch.compile the model (a slow first batch per shape)


@dataclass
class TorchEngine:
    """The reference engine: eager torch on CPU or CUDA, fp32 or bf16 (cast, channels_last)."""

    generator: Generator
    device: torch.device
    precision: str = "fp32"
    compile: bool = False
    threads: int | None = None  # None: whatever torch runs on when the batch comes

    def __post_init__(self) -> None:
        import torch

        # Casting the whole model to bf16 ran ~4x faster than autocast on AMX CPUs, and
        # channels_last lets oneDNN pick its blocked convolution kernels (2x on AVX2 too).
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.generator = (
            self.generator.eval()
            .to(self.device, dtype=self.dtype)
            .to(memory_format=torch.channels_last)
        )
        self.model = torch.compile(self.generator) if self.compile else self.generator
        compiled = " compiled" if self.compile else ""
        self.description = f"torch {self.device.type} {self.precision}{compiled}"
        self.last_threads = torch.get_num_threads()

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one uint8 batch (N, 3, H, W); returns uint8 (N, H, W, 3) on the CPU."""
        import torch

        with torch.inference_mode(), torch_threads(self.threads):
            self.last_threads = torch.get_num_threads()
            if self.device.type == "cuda":
                # Pinned host memory lets the copy run asynchronously to the GPU.
                batch = batch.pin_memory()
            x = batch.to(self.device, non_blocking=True)
            x = to_model_input(x, self.dtype).contiguous(memory_format=torch.channels_last)
            return to_pixels(self.model(x)).cpu()

    def run_stats(
        self, batch: torch.Tensor, stats: np.ndarray | None = None,
        mix: np.ndarray | None = None, grids: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """run() with normalisation statistics in and out (model/norm_stats.py); eager
        torch (never the compiled model): own statistics give run()'s pixels exactly."""
        import torch

        from animegan_cli.model.norm_stats import StatsGenerator, as_mix, as_stats

        model = StatsGenerator(self.generator)
        n = len(batch)
        supplied = None if stats is None else torch.from_numpy(as_stats(stats, n, model.layers))
        blend = None if mix is None else torch.from_numpy(as_mix(mix, n))
        with torch.inference_mode(), torch_threads(self.threads):
            self.last_threads = torch.get_num_threads()
            x = batch.to(self.device)
            x = to_model_input(x, self.dtype).contiguous(memory_format=torch.channels_last)
            sampled = None if grids is None else (
                torch.from_numpy(grids[0]).to(self.device),
                torch.from_numpy(grids[1]).to(self.device),
            )
            y, used = model(x, _to(supplied, self.device), _to(blend, self.device), sampled)
            return to_pixels(y).cpu(), used.float().cpu().numpy()

    def threads_in_use(self) -> int:
        """torch's intra-op threads during the last batch (before one: now)."""
        return self.last_threads


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for the duration of a run, then restore them.

    Where they are set already (a convert run sets them once around its loop) nothing is
    touched: resizing the thread pool per batch would cost time for nothing.
    """
    import torch

    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _create(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    import torch

    options = spec.options_as(TorchOptions)
    return TorchEngine(generator, torch.device(spec.device), spec.precision,
                       compile=options.compile, threads=spec.threads)


def _auto_precision(device: str) -> str:
    if device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def _default_threads() -> str:
    # Only torch knows its default: imported for this one row of `info`.
    import torch

    return str(torch.get_num_threads())


# On CPUs without bf16 units torch's channels_last fp32 beat OpenVINO (0.99 vs 0.87 img/s
# at 512x352 on a 2-core AVX2 EPYC); on CUDA it is the only engine.
BACKEND = Backend(
    name="torch",
    factory=_create,
    package="torch",
    install="pip install torch",
    devices=("cpu", "cuda"),
    precisions=("fp32", "bf16"),
    shape_modes=("dynamic",),
    rank=lambda: 1,
    options=TorchOptions,
    norm_stats=("fp32", "bf16"),
    auto_precision=_auto_precision,
    default_threads=_default_threads,
)
