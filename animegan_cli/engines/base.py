"""Running the generator on batches: device, precision and threads, each decided once.

torch is imported inside the functions that run the model: planning (EngineSpec.resolve,
the choices, CPU flags) must not pay its import (~1.5 s) for a run with nothing to convert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from animegan_cli.core.errors import UsageError

if TYPE_CHECKING:
    import torch

    from animegan_cli.engines.openvino_warmup import Warmup
    from animegan_cli.model.generator import Generator

PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("cpu", "cuda")
# OpenVINO: one model compiled per input shape (faster), or one for every shape.
SHAPE_MODES = ("static", "dynamic")


class Engine(Protocol):
    """Anything that styles a uint8 batch (N, 3, H, W) into a uint8 batch (N, H, W, 3)."""

    description: str

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one batch of equally sized images."""
        ...


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


def resolve_device(device: str) -> torch.device:
    """torch.device for ``cpu`` or ``cuda``; a clear error when CUDA is asked for but absent."""
    import torch

    return torch.device(check_device(device))


def check_device(device: str) -> str:
    """``cpu`` or ``cuda``, checked; torch is imported only to ask whether CUDA is there."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose from: {', '.join(DEVICES)}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                "--device cuda was given but no CUDA GPU is available; use --device cpu"
            )
    return device


def _device_type(device: str | torch.device) -> str:
    return device if isinstance(device, str) else device.type


def resolve_backend(backend: str, device: str | torch.device, precision: str = "auto") -> str:
    """Turn ``auto`` into an engine, by where each was measured to be faster.

    OpenVINO where the CPU has bf16 units (AMX, AVX512-BF16: 35 vs 15.8 img/s at 256x256
    in bf16) and for int8, which only it has. On CPUs without them torch's channels_last
    fp32 was faster (0.99 vs 0.87 img/s at 512x352 on a 2-core AVX2 EPYC), and on CUDA
    torch is the only engine. `animegan tune` measures the user's own machine.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    device = _device_type(device)
    if backend == "openvino" and device != "cpu":
        raise UsageError("--backend openvino runs on the CPU only; use --backend torch for CUDA")
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    return "openvino" if precision == "int8" or cpu_has_fast_bf16() else "torch"


def resolve_precision(precision: str, device: str | torch.device, backend: str = "torch") -> str:
    """Turn ``auto`` into fp32 or bf16 for this device; bf16 only where it is fast.

    int8 is never chosen automatically: it costs visible quality.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision == "int8" and backend != "openvino":
        raise UsageError("--precision int8 needs --backend openvino")
    if precision != "auto":
        return precision
    if _device_type(device) == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def to_model_input(batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1], as the generator was trained."""
    import torch

    return (batch.to(torch.float32) / 127.5 - 1.0).to(dtype)


class NonFiniteOutput(Exception):
    """The model produced NaN or inf for some images of a batch; the others are usable."""

    def __init__(self, pixels: torch.Tensor, bad: list[int]) -> None:
        super().__init__(NON_FINITE_REASON)
        self.pixels = pixels  # uint8 (N, H, W, 3), the whole batch
        self.bad = bad  # positions in the batch whose result is not finite


NON_FINITE_REASON = "model produced non-finite values (NaN/inf)"


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


@dataclass
class TorchEngine:
    """The reference engine: eager torch on CPU or CUDA, fp32 or bf16 (cast, channels_last)."""

    generator: Generator
    device: torch.device
    precision: str = "fp32"
    compile: bool = False

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

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one uint8 batch (N, 3, H, W); returns uint8 (N, H, W, 3) on the CPU."""
        import torch

        with torch.inference_mode():
            if self.device.type == "cuda":
                # Pinned host memory lets the copy run asynchronously to the GPU.
                batch = batch.pin_memory()
            x = batch.to(self.device, non_blocking=True)
            x = to_model_input(x, self.dtype).contiguous(memory_format=torch.channels_last)
            return to_pixels(self.model(x)).cpu()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Set torch's intra-op threads for the duration of a run, then restore them."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class EngineSpec:
    """How the model runs, with nothing left on ``auto``: resolved once, read everywhere."""

    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"
    threads: int | None = None  # None: torch's / OpenVINO's default (all cores)
    streams: int = 1
    compile: bool = False
    shapes: str = "static"  # OpenVINO only; changes speed, not pixels (beyond float noise)

    @classmethod
    def resolve(
        cls,
        device: str = "cpu",
        backend: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        streams: int = 1,
        compile: bool = False,
        shapes: str = "static",
    ) -> EngineSpec:
        """The one place where ``auto`` becomes concrete; UsageError for what cannot work."""
        if threads is not None and threads < 1:
            raise UsageError("--threads must be at least 1")
        if streams < 1:
            raise UsageError("--streams must be at least 1")
        if shapes not in SHAPE_MODES:
            raise UsageError(f"unknown shapes {shapes!r}; choose from: {', '.join(SHAPE_MODES)}")
        device = check_device(device)
        chosen = resolve_backend(backend, device, precision)
        return cls(
            device,
            chosen,
            resolve_precision(precision, device, chosen),
            threads,
            streams,
            compile,
            shapes,
        )


@dataclass(frozen=True)
class EngineContext:
    """What an engine may need besides the model: its checkpoint id, calibration, a cache."""

    checkpoint_id: str
    cache_dir: Path
    # INT8 calibration images, uint8 (3, H, W); asked for only when quantizing.
    calibration: Callable[[], Sequence[torch.Tensor]] | None = None
    # OpenVINO models read and compiled ahead on a thread (ov_warmup), for the engine to adopt.
    warmup: Warmup | None = None


EngineFactory = Callable[["Generator", EngineSpec, EngineContext], Engine]


def _torch_engine(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    import torch

    return TorchEngine(generator, torch.device(spec.device), spec.precision, compile=spec.compile)


def _openvino_engine(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    from animegan_cli.engines.openvino_engine import OpenVINOEngine

    return OpenVINOEngine(
        generator,
        context.checkpoint_id,
        spec.precision,
        spec.threads,
        cache_dir=context.cache_dir,
        calibration=context.calibration,
        streams=spec.streams,
        shapes=spec.shapes,
        warmup=context.warmup,
    )


# The engines by backend name: a new engine is one module plus one entry here.
ENGINES: dict[str, EngineFactory] = {"torch": _torch_engine, "openvino": _openvino_engine}
BACKENDS = ("auto", *sorted(ENGINES))  # the --backend choices


def create_engine(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    """Build the engine ``spec`` names, with the generator's weights."""
    return ENGINES[spec.backend](generator, spec, context)
