"""What every engine module implements and declares: the contract under the engine registry.

An engine module (torch_engine, openvino_engine, onnxruntime_engine) imports this module and
nothing of the registry (engines/base.py), which imports the engine modules: one direction,
no cycle. Everything here is importable without torch, OpenVINO or ONNX Runtime: planning
(the --backend choices, resolving ``auto``, CPU flags) must not pay their import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from animegan_cli.settings import fields

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animegan_cli.model.generator import Generator

PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("cpu", "cuda")
OptionsT = TypeVar("OptionsT")

# How an engine meets a new input shape: compiles a model for it, or runs any shape as is,
# or (hybrid) runs a shape's first image as is and compiles for the shapes that repeat.
SHAPE_MODES = ("static", "dynamic", "hybrid")


class Engine(Protocol):
    """Anything that styles a uint8 batch (N, 3, H, W) into a uint8 batch (N, H, W, 3).

    ``run`` raises NonFiniteOutput (through to_pixels) when an image's result holds NaN or
    inf; ``threads_in_use`` says how many intra-op threads its runtime runs the model on.
    """

    description: str

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one batch of equally sized images."""
        ...

    def threads_in_use(self) -> int:
        """The intra-op threads the model runs on, as the runtime reports them."""
        ...


class StatsEngine(Engine, Protocol):
    """An engine that also runs with normalisation statistics in and out.

    See model/norm_stats.py for the statistics array and the three ways to call it;
    ``Backend.norm_stats`` says at which precisions an engine module's engines do.
    """

    def run_stats(
        self, batch: torch.Tensor, stats: np.ndarray | None = None,
        mix: np.ndarray | None = None, grids: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Style one uint8 batch (N, 3, H, W) with statistics ``stats`` (N, L, 2) (None:
        each image's own), blended with the own ones by ``mix`` (N,) (None: as given),
        tiles sampling as their whole image would at ``grids`` (norm_stats.tile_grids);
        returns uint8 (N, H, W, 3) and the statistics each layer used, (N, L, 2) float32."""
        ...


class WarmupHandle(Protocol):
    """What a backend's warm-up (Backend.warm_up) hands the run, and then the engine."""

    def before_fork(self) -> None:
        """Wait until it imports nothing more: a module being imported when the decoder
        processes fork would stay locked in them."""
        ...


@dataclass(frozen=True)
class NoOptions:
    """A backend without options of its own."""


@dataclass(frozen=True)
class EngineSpec:
    """How the model runs, with nothing left on ``auto``: resolved once (base.resolve_spec),
    read everywhere. ``options`` is the backend's own options object (its declared
    ``Backend.options`` type, e.g. OpenVINO's streams and shapes)."""

    device: str = fields.DEVICE.default
    backend: str = "torch"
    precision: str = "fp32"
    threads: int | None = None  # None: the runtime's default (all cores)
    options: object = NoOptions()

    def options_as(self, kind: type[OptionsT]) -> OptionsT:
        """The backend's options as ``kind``; its defaults where the spec holds none."""
        return self.options if isinstance(self.options, kind) else kind()


@dataclass(frozen=True)
class EngineContext:
    """What an engine may need besides the model: its checkpoint id, calibration, a cache."""

    checkpoint_id: str
    cache_dir: Path  # the engine's converted models (OpenVINO IR, ONNX), keyed by checkpoint
    # INT8 calibration images, uint8 (3, H, W); asked for only when quantizing.
    calibration: Callable[[], Sequence[torch.Tensor]] | None = None
    # What the backend's warm-up made ahead of the engine (Backend.warm_up), for it to adopt.
    warmup: WarmupHandle | None = None
    # The generator, loaded when asked: an engine built from its cache without it converts
    # its statistics variant (OpenVINO's stats IR, model/norm_stats.py) from it, once.
    generator: Callable[[], Generator] | None = None


EngineFactory = Callable[["Generator", EngineSpec, EngineContext], Engine]


@dataclass(frozen=True)
class Backend:
    """One engine's declaration: everything the registry, ``auto``, ``tune``, ``info`` and
    the CLI know about it. An engine module declares one; base.ENGINES lists them."""

    name: str  # the --backend choice
    factory: EngineFactory  # builds the engine; imports the runtime inside
    package: str  # the module whose presence makes the engine available here
    install: str  # what to install when it is not
    devices: tuple[str, ...]
    precisions: tuple[str, ...]  # concrete precisions it runs (never "auto")
    shape_modes: tuple[str, ...]  # "static" where it compiles per shape, "dynamic" any shape
    # How ``auto`` ranks it on this machine: the highest available one that can run the
    # device and precision wins. Numbers come from measurements (see each module).
    rank: Callable[[], int]
    options: type = NoOptions  # a frozen dataclass of its own settings, validated on creation
    # Precision for ``auto`` on a device; None: bf16 where it runs bf16 and the CPU is fast
    # at it, else fp32.
    auto_precision: Callable[[str], str] | None = None
    # What ``info`` shows for --threads left to the runtime.
    default_threads: Callable[[], str] = lambda: "the runtime's default (all cores)"
    # "module:function" of a context manager that prepares models ahead of a run
    # (warm_up(spec, request) -> WarmupHandle | None), imported only when a run starts: the
    # warm-up module imports its engine module, never the reverse (no import cycle), and
    # its own imports (media, threads) stay out of the start.
    warm_up: str | None = None
    tuned_precisions: tuple[str, ...] = ("fp32", "bf16")  # what `tune` may measure
    # The engine built from its converted model cached by checkpoint id alone, without the
    # generator (so without torch): (spec, context, align_corners) -> Engine, or None when
    # nothing is cached yet. None: the engine always needs the generator.
    from_cache: Callable[[EngineSpec, EngineContext, bool], Engine | None] | None = None
    # Precisions at which its engines are StatsEngines (normalisation statistics in and
    # out, model/norm_stats.py): tiles and smoothed video need one. Empty: it cannot.
    norm_stats: tuple[str, ...] = ()

    def available(self) -> bool:
        """Whether its runtime is installed (found without importing it)."""
        return importlib.util.find_spec(self.package) is not None

    def option_names(self) -> tuple[str, ...]:
        """The names of its own options."""
        return tuple(f.name for f in dataclasses.fields(self.options))

    def precision_for_auto(self, device: str) -> str:
        """What ``--precision auto`` becomes on this backend and device."""
        if self.auto_precision is not None:
            return self.auto_precision(device)
        return "bf16" if "bf16" in self.precisions and cpu_has_fast_bf16() else "fp32"


@dataclass(frozen=True)
class WarmupRequest:
    """What a backend's warm-up may read: the run's checkpoint and first inputs."""

    checkpoint_id: str
    align_corners: bool
    cache_dir: Path
    paths: Sequence[Path]
    preprocess: object  # media.data.PreprocessSettings
    batch_size: int


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True where bf16 matrix math runs in hardware (AMX or AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def to_model_input(batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1], as the generator was trained."""
    import torch

    return (batch.to(torch.float32) / 127.5 - 1.0).to(dtype)


NON_FINITE_REASON = "model produced non-finite values (NaN/inf)"


class NonFiniteOutput(Exception):
    """The model produced NaN or inf for some images of a batch; the others are usable."""

    def __init__(self, pixels: torch.Tensor, bad: list[int]) -> None:
        super().__init__(NON_FINITE_REASON)
        self.pixels = pixels  # uint8 (N, H, W, 3), the whole batch
        self.bad = bad  # positions in the batch whose result is not finite


def to_pixels(output: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (N, 3, H, W) -> uint8 (N, H, W, 3), rounded.

    Raises NonFiniteOutput when an image's result holds NaN or inf: converted to uint8
    it would be a black (or speckled) picture that looks like a success.
    """
    import torch

    values = output.float()
    # The generator ends in tanh: a finite result sums to a finite number, while one NaN or
    # inf makes the sum NaN or inf. One reduction is ~20x cheaper than isfinite().all().
    finite = values.flatten(1).sum(dim=1).isfinite()
    scaled = (values.clamp(-1, 1) + 1.0) * 127.5
    pixels = scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if not bool(finite.all()):
        bad = [int(i) for i in torch.nonzero(~finite).flatten()]
        raise NonFiniteOutput(pixels.cpu(), bad)
    return pixels
