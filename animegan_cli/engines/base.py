"""The engine registry: which engines exist, which one ``auto`` picks, and building one.

Each engine is a module that declares itself in one ``Backend`` (engines/contract.py): its
name, devices, precisions, shape modes, its own options, whether it is installed and how it
ranks for ``auto``. ``ENGINES`` lists them; the --backend choices, ``auto``, ``tune``'s
candidates and ``info`` all read it. Nothing here imports torch, OpenVINO or ONNX Runtime:
planning must not pay their import (~1.5 s for torch) for a run with nothing to convert.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from animegan_cli.core.errors import UsageError
from animegan_cli.engines import onnxruntime_engine, openvino_engine, torch_engine
from animegan_cli.engines.contract import (
    DEVICES,
    NON_FINITE_REASON,
    PRECISIONS,
    SHAPE_MODES,
    Backend,
    Engine,
    EngineContext,
    EngineFactory,
    EngineSpec,
    NonFiniteOutput,
    StatsEngine,
    WarmupHandle,
    WarmupRequest,
    cpu_flags,
    cpu_has_fast_bf16,
    to_model_input,
    to_pixels,
)
from animegan_cli.engines.torch_engine import TorchEngine, torch_threads
from animegan_cli.settings import fields

if TYPE_CHECKING:
    import torch

    from animegan_cli.model.generator import Generator

# The names other modules import from here (the contract's, re-exported).
__all__ = [
    "BACKENDS", "Backend", "DEVICES", "ENGINES", "Engine", "EngineContext", "EngineFactory",
    "EngineSpec", "NON_FINITE_REASON", "NonFiniteOutput", "PRECISIONS", "SHAPE_MODES",
    "StatsEngine", "TorchEngine", "WarmupHandle", "WarmupRequest", "available_backends",
    "cached_engine", "check_device", "cpu_flags", "cpu_has_fast_bf16", "create_engine",
    "resolve_backend", "resolve_device", "resolve_precision", "resolve_spec", "stats_engine",
    "supports_norm_stats", "to_model_input", "to_pixels", "torch_threads", "tune_candidates",
    "warmed",
]


def _registry(*backends: Backend) -> dict[str, Backend]:
    return {backend.name: backend for backend in backends}


# The engines by backend name: a new engine is one module plus one entry here.
ENGINES: dict[str, Backend] = _registry(
    torch_engine.BACKEND,
    openvino_engine.BACKEND,
    onnxruntime_engine.BACKEND,
)
BACKENDS = ("auto", *sorted(ENGINES))  # the --backend choices


def available_backends() -> list[Backend]:
    """The installed engines, the one ``auto`` prefers here first."""
    found = [b for b in ENGINES.values() if b.available()]
    return sorted(found, key=lambda b: -b.rank())


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


def _can_run(backend: Backend, device: str, precision: str) -> bool:
    return device in backend.devices and (precision == "auto" or precision in backend.precisions)


def resolve_backend(backend: str, device: str | torch.device,
                    precision: str = fields.PRECISION.default) -> str:
    """Turn ``auto`` into an engine: the installed one that can run the device and precision
    and ranks highest here (each module says why it ranks where it does); `animegan tune`
    measures the user's own machine."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}")
    device = _device_type(device)
    if backend != "auto":
        _check_backend(ENGINES[backend], device)
        return backend
    for candidate in available_backends():
        if _can_run(candidate, device, precision):
            return candidate.name
    raise UsageError(f"no installed engine runs --device {device} --precision {precision}; "
                     f"engines: {', '.join(ENGINES)} (see animegan info)")


def _check_backend(backend: Backend, device: str) -> None:
    if device not in backend.devices:
        where = "the CPU" if backend.devices == ("cpu",) else ", ".join(backend.devices)
        others = [b.name for b in ENGINES.values() if device in b.devices]
        raise UsageError(f"--backend {backend.name} runs on {where} only; use --backend "
                         f"{' or '.join(others)} for {device.upper()}")
    if not backend.available():
        raise UsageError(f"--backend {backend.name} needs {backend.package}: {backend.install}")


def resolve_precision(precision: str, device: str | torch.device, backend: str = "torch") -> str:
    """Turn ``auto`` into a precision the backend runs on this device; bf16 only where it is
    fast. int8 is never chosen automatically: it costs visible quality."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    engine = ENGINES[backend]
    if precision == "auto":
        return engine.precision_for_auto(_device_type(device))
    if precision not in engine.precisions:
        running = [b.name for b in ENGINES.values() if precision in b.precisions]
        raise UsageError(f"--precision {precision} needs --backend {' or '.join(running)}")
    return precision


def resolve_spec(
    device: str = fields.DEVICE.default,
    backend: str = fields.BACKEND.default,
    precision: str = fields.PRECISION.default,
    threads: int | None = None,
    **options: Any,
) -> EngineSpec:
    """The one place where ``auto`` becomes concrete; UsageError for what cannot work.

    ``options`` are backends' own settings by name (streams, shapes, compile): each is
    checked by the backend that declares it, and the chosen backend's are kept.
    """
    if threads is not None and threads < 1:
        raise UsageError("--threads must be at least 1")
    own = _backend_options(options)
    device = check_device(device)
    chosen = resolve_backend(backend, device, precision)
    return EngineSpec(device, chosen, resolve_precision(precision, device, chosen), threads,
                      own[chosen])


def _backend_options(given: dict[str, Any]) -> dict[str, object]:
    """Each backend's options object from the names it declares (each one validated)."""
    declared = {name for b in ENGINES.values() for name in b.option_names()}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise TypeError(f"no engine has the option(s) {', '.join(unknown)}")
    return {b.name: b.options(**{k: v for k, v in given.items() if k in b.option_names()})
            for b in ENGINES.values()}


def create_engine(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    """Build the engine ``spec`` names, with the generator's weights."""
    return ENGINES[spec.backend].factory(generator, spec, context)


def cached_engine(spec: EngineSpec, context: EngineContext, align_corners: bool) -> Engine | None:
    """The engine ``spec`` names built from its cached converted model alone (no generator,
    no torch), or None where its backend has no such model yet (Backend.from_cache)."""
    from_cache = ENGINES[spec.backend].from_cache
    return from_cache(spec, context, align_corners) if from_cache is not None else None


def tune_candidates() -> list[tuple[str, str]]:
    """(backend, precision) pairs worth measuring here, the likely fastest first: the
    installed CPU engines at fp32, and bf16 where the CPU has bf16 units. int8 is opt-in."""
    fast_bf16 = cpu_has_fast_bf16()
    return [(b.name, precision) for b in available_backends() if "cpu" in b.devices
            for precision in b.tuned_precisions
            if precision in b.precisions and (precision != "bf16" or fast_bf16)]


@contextlib.contextmanager
def warmed(spec: EngineSpec, request: WarmupRequest) -> Iterator[WarmupHandle | None]:
    """What the spec's backend prepares ahead of a run (None where it prepares nothing),
    for the engine to adopt through EngineContext.warmup; closed when the run ends."""
    hook = ENGINES[spec.backend].warm_up
    if hook is None or not request.checkpoint_id:
        yield None
        return
    module, name = hook.split(":")
    with getattr(importlib.import_module(module), name)(spec, request) as ahead:
        yield ahead



def supports_norm_stats(spec: EngineSpec) -> bool:
    """Whether ``spec``'s engine runs with normalisation statistics (its Backend says)."""
    return spec.precision in ENGINES[spec.backend].norm_stats


def stats_engine(engine: Engine, spec: EngineSpec, wanted_for: str) -> StatsEngine:
    """``engine`` as a StatsEngine, or a UsageError saying what ``wanted_for`` needs."""
    if not supports_norm_stats(spec):
        able = [f"{b.name} ({', '.join(b.norm_stats)})" for b in ENGINES.values() if b.norm_stats]
        raise UsageError(
            f"{wanted_for} needs an engine that takes normalisation statistics; "
            f"{spec.backend} {spec.precision} does not (these do: {'; '.join(able)})"
        )
    return engine  # type: ignore[return-value]  # its Backend declares it one
