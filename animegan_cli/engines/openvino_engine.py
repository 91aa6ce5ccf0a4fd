"""The OpenVINO engine: the generator converted once to OpenVINO IR (cached), run on the CPU.

openvino is a required dependency, imported inside the functions that use it: importing it
costs over half a second, which commands that never run the model should not pay. torch too
is imported only where a tensor is made: ov_warmup reads and compiles the IR on a thread
while the main thread imports torch, and must not wait for that import.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import UsageError, install_hint
from animegan_cli.core.limits import MAX_COMPILED_PIXELS, MAX_COMPILED_SHAPES, MODEL_CACHE_BYTES
from animegan_cli.engines import arrays, signal_stack
from animegan_cli.engines.contract import (
    SHAPE_MODES,
    Backend,
    Engine,
    EngineContext,
    EngineSpec,
    WarmupHandle,
    cpu_has_fast_bf16,
    to_model_input,
    to_pixels,
)
from animegan_cli.media import data
from animegan_cli.model.variants import DEFAULT_VARIANT, VARIANTS, variant_tag
from animegan_cli.settings import fields

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animegan_cli.engines.openvino_stats import StatsRunner
    from animegan_cli.model.generator import Generator

# OpenVINO names for our precisions. bf16 is a hint: CPUs without bf16 units run f32.
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}

# Smaller images run on the dynamic model (see static_is_safe).
MIN_STATIC_PIXELS = 64 * 64
DYNAMIC_SHAPE = (-1, 3, -1, -1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenVINOOptions:
    """The OpenVINO backend's own settings: how a batch is spread, how shapes are compiled."""

    # With several streams, the images of a batch run side by side, one per stream.
    streams: int = fields.STREAMS.default
    # One model compiled per input shape (faster), or one for every shape.
    shapes: str = fields.SHAPES.default

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise UsageError("--streams must be at least 1")
        if self.shapes not in SHAPE_MODES:
            raise UsageError(
                f"unknown shapes {self.shapes!r}; choose from: {', '.join(SHAPE_MODES)}"
            )


class Ahead(WarmupHandle, Protocol):
    """Models read and compiled ahead (openvino_warmup.Warmup), for the engine to adopt."""

    def take(self, xml: Path, config: dict[str, object]) -> Any:
        """What was made, if it is ``xml`` compiled with ``config``; else None."""
        ...


def ir_cache_key(checkpoint_id: str, align_corners: bool, int8: bool,
                 variant: str = DEFAULT_VARIANT) -> str:
    """Name of a cached IR: what it was converted from (the checkpoint, its graph's
    variant, the resize setting), and with which OpenVINO."""
    import openvino as ov

    version = ov.__version__.split("-")[0]
    kind = "int8" if int8 else "float"
    graph = f"align{int(align_corners)}{variant_tag(variant)}"
    return f"{checkpoint_id[:16]}-{graph}-{kind}-ov{version}"


def ir_path(cache_dir: Path, checkpoint_id: str, align_corners: bool, int8: bool,
            variant: str = DEFAULT_VARIANT) -> Path:
    """The .xml of a checkpoint's cached IR (its .bin beside it)."""
    return cache_dir / f"{ir_cache_key(checkpoint_id, align_corners, int8, variant)}.xml"


def model_cache_dir(cache_dir: Path) -> Path | None:
    """Where OpenVINO keeps compiled models across runs (None: the cache is off)."""
    return cache_dir / "compiled" if MODEL_CACHE_BYTES > 0 else None


def prune_model_cache(folder: Path | None, limit: int = MODEL_CACHE_BYTES) -> None:
    """Remove the oldest compiled blobs until the folder holds at most ``limit`` bytes.

    A blob removed while another run reads it costs that run a compile: OpenVINO compiles
    when a cached blob cannot be read.
    """
    if folder is None:
        return
    blobs = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                st = entry.stat()
                blobs.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in blobs)
    for _, size, path in sorted(blobs):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            total -= size


def ir_is_cached(xml: Path) -> bool:
    """Whether the IR pair is there: save_ir_atomic places the .xml last."""
    return xml.exists() and xml.with_suffix(".bin").exists()


def _save_ir(xml: Path, generator: Generator | None,
             calibration: Callable[[], Sequence[torch.Tensor]] | None) -> None:
    """A checkpoint's first run: its generator converted (quantized with ``calibration``:
    int8) and saved as the IR every later run reads."""
    if generator is None:
        raise UsageError(f"no cached OpenVINO model {xml.name}, and no generator")
    model = convert_generator(generator)
    if calibration is not None:
        model = quantize(model, calibration())
    save_ir_atomic(model, xml)


class OpenVINOEngine:
    """Runs the generator through OpenVINO's CPU plugin, compiled per input shape by default.

    The model is read (or converted) once. With ``shapes="static"`` each input shape
    (N, 3, H, W) gets a model reshaped to it and compiled for it, kept in a small LRU: on
    CPUs static models ran 1.65-1.75x faster than one model with dynamic N/H/W, for a
    compile of ~0.1 s per shape. ``shapes="dynamic"`` compiles one model for every shape;
    ``shapes="hybrid"`` runs a shape's first batch on that one and compiles for it from its
    second on (or at once where the warm-up saw it repeat): a shape that occurs once costs
    no compile. Compiled models go through OpenVINO's model cache (model_cache_dir).
    """

    # run() takes a numpy batch too (and answers in numpy): no torch on that path.
    takes_numpy = True

    def __init__(
        self,
        generator: Generator | None,
        checkpoint_id: str,
        precision: str,
        threads: int | None,
        cache_dir: Path,
        calibration: Callable[[], Sequence[torch.Tensor]] | None = None,
        streams: int = OpenVINOOptions.streams,
        shapes: str = OpenVINOOptions.shapes,
        max_shapes: int = MAX_COMPILED_SHAPES,
        max_pixels: int = MAX_COMPILED_PIXELS,
        warmup: Ahead | None = None,
        align_corners: bool | None = None,
        variant: str | None = None,
        load_generator: Callable[[], Generator] | None = None,
    ) -> None:
        if precision == "int8" and calibration is None:
            raise UsageError("--precision int8 needs calibration images")
        OpenVINOOptions(streams, shapes)  # checked as resolve_spec checks them
        started = time.perf_counter()
        # Without a generator (the IR is cached: from_cache) the caller names its graph.
        if align_corners is None or variant is None:
            assert generator is not None
            align_corners, variant = generator.align_corners, generator.variant
        xml = ir_path(cache_dir, checkpoint_id, align_corners, precision == "int8", variant)
        self.config = compile_config(precision, threads, streams)
        # Taken (the warm-up thread joined) before this thread touches the shared Core.
        ready = warmup.take(xml, self.config) if warmup is not None else None
        self.core = shared_core()
        self.from_cache = ready is not None or ir_is_cached(xml)
        if not self.from_cache:
            _save_ir(xml, generator, calibration if precision == "int8" else None)
        # The saved IR, also on the first run: every run compiles the same model.
        self.model = ready.model if ready is not None else self.core.read_model(xml)
        # With several streams, the images of a batch run side by side, one per stream.
        self.streams = streams
        self.shapes = shapes
        self.max_shapes = max_shapes
        self.max_pixels = max_pixels
        self.compiled: OrderedDict[tuple[int, ...] | None, CompiledShape] = OrderedDict()
        self.compile_seconds = 0.0  # all compiles so far, for -v and benchmarks
        self.compiles = 0
        self.seen: set[tuple[int, ...]] = set()  # hybrid: shapes run once on the dynamic model
        self.model_cache = model_cache_dir(cache_dir)
        if ready is not None:
            for shape, entry in ready.compiled.items():
                self._keep(shape, entry)
            self.compile_seconds += ready.seconds
            self.compiles += len(ready.compiled)
        if shapes == "dynamic":
            self._compile(None)
        self.precision = precision
        # For the stats IR variant (openvino_stats.py), converted on the first run_stats.
        self._generator = (lambda: generator) if generator is not None else load_generator
        self._plain_xml = xml
        self._stats: StatsRunner | None = None
        self.load_seconds = time.perf_counter() - started
        self.description = self._describe()

    def _describe(self) -> str:
        # What the plugin really runs: a bf16 hint on a CPU without bf16 units gives f32.
        capabilities = self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        actual = "bf16" if self.precision == "bf16" and "BF16" in capabilities else "f32"
        runs = "int8 weights and activations" if self.precision == "int8" else actual
        streams_text = f", {self.streams} streams" if self.streams > 1 else ""
        return f"openvino cpu {self.precision} (runs {runs}{streams_text}, {self.shapes} shapes)"

    def _compiled_for(self, shape: tuple[int, ...]) -> CompiledShape:
        """The compiled model for ``shape`` (or the dynamic one), compiling it if new."""
        key = shape if self._static_for(shape) else None
        found = self.compiled.get(key)
        if found is not None:
            self.compiled.move_to_end(key)
            return found
        return self._compile(key)

    def _static_for(self, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` runs on a model compiled for it. With hybrid shapes, only a
        shape met before (or compiled ahead, from the plan): a shape that occurs once runs
        on the one dynamic model instead of paying a compile of its own."""
        if self.shapes == "dynamic" or not static_is_safe(shape):
            return False
        if self.shapes == "static" or shape in self.compiled or shape in self.seen:
            return True
        self.seen.add(shape)
        return False

    def _compile(self, shape: tuple[int, ...] | None) -> CompiledShape:
        entry, seconds = compile_shape(self.core, self.model, shape, self.config, self.streams,
                                       self.model_cache)
        self.compile_seconds += seconds
        self.compiles += 1
        log_compiled(shape, seconds, totals=(self.compiles, self.compile_seconds))
        return self._keep(shape, entry)

    def _keep(self, shape: tuple[int, ...] | None, entry: CompiledShape) -> CompiledShape:
        self.compiled[shape] = entry
        while len(self.compiled) > 1 and (
            len(self.compiled) > self.max_shapes or self._compiled_pixels() > self.max_pixels
        ):
            self.compiled.popitem(last=False)  # least recently used: its memory goes
        return entry

    def _compiled_pixels(self) -> int:
        # The dynamic model's buffers follow the batch it runs: count it as one 384x512 image.
        return sum(math.prod(s) // 3 if s else 384 * 512 for s in self.compiled)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one uint8 batch (N, 3, H, W); returns uint8 (N, H, W, 3).

        A numpy batch gives a numpy result, through arrays' twins of the contract's
        conversions (the same pixels): a run that never imported torch does not start to.
        """
        if data.is_numpy(batch):
            return arrays.pixels(self._infer(arrays.model_input(batch)))  # type: ignore[arg-type,return-value]
        import torch

        x = to_model_input(batch, torch.float32).numpy()
        return to_pixels(torch.from_numpy(self._infer(x)))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """The float model input (N, 3, H, W) through the compiled model for its shape."""
        import numpy as np

        if self.streams > 1 and len(x) > 1:
            # Each stream runs one image, so the static model is the one for N = 1.
            compiled = self._compiled_for((1, *x.shape[1:]))
            return compiled.run_streams(x)
        # A short last batch gets a model of its own N rather than padding: a compile
        # (~0.1 s, once) costs less than running the padding images on every such batch.
        compiled = self._compiled_for(tuple(x.shape))
        # infer() releases the GIL, so the writer thread encodes while the model runs.
        result = compiled.request.infer([x])
        return np.asarray(next(iter(result.values())))

    def run_stats(
        self, batch: torch.Tensor, stats: np.ndarray | None = None,
        mix: np.ndarray | None = None, grids: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """run() with normalisation statistics in and out, on the stats IR variant."""
        if self._stats is None:
            from animegan_cli.engines.openvino_stats import StatsRunner

            if self._generator is None:
                raise UsageError("this OpenVINO engine was built from its cached model "
                                 "without the generator its statistics variant needs")
            self._stats = StatsRunner(self._generator, self._plain_xml, self.config,
                                      self.core, save_ir_atomic)
        return self._stats.run(batch, stats, mix, grids)

    def threads_in_use(self) -> int:
        """The CPU plugin's inference threads for the model compiled last (0: its default)."""
        if not self.compiled:
            return int(self.config.get("INFERENCE_NUM_THREADS", 0))  # type: ignore[call-overload]
        latest = next(reversed(self.compiled.values()))
        return int(latest.model.get_property("INFERENCE_NUM_THREADS"))


class CompiledShape:
    """One compiled model with its infer request (and, with streams, its async queue)."""

    def __init__(self, compiled, streams: int) -> None:  # compiled: openvino.CompiledModel
        import openvino as ov

        self.model = compiled
        self.source = None  # the openvino.Model it was compiled from
        self.request = compiled.create_infer_request()
        self.queue = ov.AsyncInferQueue(compiled, streams) if streams > 1 else None

    def run_streams(self, x: np.ndarray) -> np.ndarray:
        """Each image of ``x`` as its own request, side by side on the streams."""
        import numpy as np

        assert self.queue is not None
        out: list[np.ndarray | None] = [None] * len(x)

        def done(request, index: int) -> None:
            out[index] = np.array(request.get_output_tensor(0).data)

        self.queue.set_callback(done)
        for i in range(len(x)):
            self.queue.start_async({0: x[i : i + 1]}, userdata=i)
        self.queue.wait_all()
        return np.concatenate(out)  # type: ignore[arg-type]


_core_lock = threading.Lock()  # the warm-up thread and the main thread may both ask first


def shared_core():  # -> openvino.Core
    """The process's one OpenVINO Core, its CPU plugin loaded; it lives until exit.

    Each Core's CPU plugin swaps the creating thread's signal stack and swaps it back on
    whichever thread frees it (see signal_stack): one Core, made under ``kept``, never freed,
    keeps every thread's signal stack valid.
    """
    with _core_lock:
        return _new_core()


@functools.lru_cache(maxsize=1)
def _new_core():  # -> openvino.Core
    import openvino as ov

    with signal_stack.kept():
        core = ov.Core()
        core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return core


def ov_shape(shape: tuple[int, ...]):  # -> openvino.PartialShape
    """An OpenVINO shape for the model's one input (-1: any size)."""
    import openvino as ov

    return ov.PartialShape(list(shape))


def static_is_safe(shape: tuple[int, ...]) -> bool:
    """Whether a static model may be compiled for ``shape``.

    OpenVINO 2026.4's CPU plugin crashes (segfault) compiling f32 static models for
    batches of tiny images (32x24 and smaller). Images under 64x64 run on the dynamic
    model, where the speed of a static one hardly matters.
    """
    _, _, h, w = shape
    return h * w >= MIN_STATIC_PIXELS


def compile_shape(
    core, model, shape: tuple[int, ...] | None, config: dict[str, object], streams: int,
    cache: Path | None = None,
) -> tuple[CompiledShape, float]:
    """``model`` (an openvino.Model) compiled for ``shape`` (None: dynamic), and the seconds
    it took. Releases the GIL while it compiles. With ``cache`` (model_cache_dir), a shape
    compiled by an earlier run is loaded from OpenVINO's model cache instead: the same
    compiled model, so the same pixels; a new one is added to it (pruned to its bound)."""
    started = time.perf_counter()
    # A copy per shape, kept with its compiled model: no reshape ever touches a model
    # that a live compiled one came from.
    shaped = model.clone()
    shaped.reshape(ov_shape(shape or DYNAMIC_SHAPE))
    with signal_stack.kept():  # see signal_stack: else a later SIGCHLD can be a SIGSEGV
        entry = CompiledShape(_compiled(core, shaped, config, cache), streams)
    entry.source = shaped
    prune_model_cache(cache)
    return entry, time.perf_counter() - started


def _compiled(core, shaped, config: dict[str, object], cache: Path | None):
    """core.compile_model through the model cache; without it where the cache fails (a
    folder that cannot be written): the cache saves time, it is never needed."""
    if cache is not None:
        try:
            return core.compile_model(shaped, "CPU", {**config, "CACHE_DIR": str(cache)})
        except RuntimeError:
            log.debug("openvino: model cache %s unusable; compiling without it", cache,
                      exc_info=True)
    return core.compile_model(shaped, "CPU", config)


def log_compiled(shape: tuple[int, ...] | None, seconds: float, ahead: bool = False,
                 totals: tuple[int, float] | None = None) -> None:
    """The -v line for one compile (a load from the model cache counts as one), with the
    run's count and seconds so far: the last such line is the run's compile time."""
    shown = "dynamic shapes" if shape is None else "x".join(map(str, shape))
    when = ", ahead of its first image" if ahead else ""
    so_far = f" ({totals[0]} compiles, {totals[1]:.2f} s in all)" if totals else ""
    log.info("openvino: compiled for %s in %.2f s%s%s", shown, seconds, when, so_far)


def compile_config(precision: str, threads: int | None, streams: int) -> dict[str, object]:
    """The CPU plugin's properties for our precision, threads and streams."""
    config: dict[str, object] = {
        "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    if streams > 1:
        config["NUM_STREAMS"] = streams
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def convert_generator(generator: Generator):  # -> openvino.Model
    """Trace the generator into an OpenVINO model with dynamic batch, height and width."""
    import openvino as ov
    import torch

    example = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode(), warnings_silenced():
        return ov.convert_model(generator.eval(), example_input=example, input=[-1, 3, -1, -1])


def quantize(model, images: Sequence[torch.Tensor]):  # -> openvino.Model
    """Post-training INT8 quantization (NNCF) calibrated on the given uint8 (3, H, W) images."""
    try:
        import nncf
    except ImportError as exc:
        raise UsageError(
            f"--precision int8 needs NNCF: {install_hint('int8')} (or pip install nncf)"
        ) from exc
    import numpy as np

    # numpy pixels (a torch-free run's) or tensors alike: the same float32 values.
    samples = [arrays.model_input(np.asarray(img)[None]) for img in images]
    with signal_stack.kept():  # NNCF runs the model on Cores of its own (see shared_core)
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            subset_size=len(samples),
            fast_bias_correction=True,
        )


def save_ir_atomic(model, xml: Path) -> None:
    """Save an IR pair (.xml + .bin) so a reader never sees a half-written one."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    # OpenVINO writes only to paths: save the pair aside, then place each file atomically.
    tmp = Path(tempfile.mkdtemp(prefix=".ir-", dir=xml.parent))
    try:
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        # .bin first: the .xml's presence is what marks the pair complete.
        for name, target in (("model.bin", xml.with_suffix(".bin")), ("model.xml", xml)):
            with open(tmp / name, "rb") as source:
                atomic_write(target, functools.partial(shutil.copyfileobj, source))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def warnings_silenced():
    """Tracing warns about Python control flow on shapes; it is expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _create(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    return _engine(generator, spec, context)


def _engine(generator: Generator | None, spec: EngineSpec, context: EngineContext,
            **from_cache: object) -> OpenVINOEngine:
    """The engine for ``spec`` and ``context``; ``from_cache``: what an engine built from
    its cached IR alone adds (align_corners, variant, load_generator)."""
    options = spec.options_as(OpenVINOOptions)
    return OpenVINOEngine(
        generator,
        context.checkpoint_id,
        spec.precision,
        spec.threads,
        cache_dir=context.cache_dir,
        calibration=context.calibration,
        streams=options.streams,
        shapes=options.shapes,
        warmup=context.warmup,  # type: ignore[arg-type]  # openvino_warmup's, or None
        **from_cache,  # type: ignore[arg-type]
    )


def _from_cache(spec: EngineSpec, context: EngineContext, align_corners: bool) -> Engine | None:
    """The engine on the IR cached for the checkpoint (or read by the warm-up), without the
    generator: a run with nothing to convert imports no torch. None when it is not cached.
    The checkpoint id fixes its variant, so the one variant cached for it is the right one
    (as the warm-up finds it)."""
    int8 = spec.precision == "int8"
    variant = next((v for v in VARIANTS if ir_is_cached(
        ir_path(context.cache_dir, context.checkpoint_id, align_corners, int8, v))), None)
    if variant is None:
        return None
    return _engine(None, spec, context, align_corners=align_corners, variant=variant,
                   load_generator=context.generator)


def _rank() -> int:
    # First where the CPU has bf16 units (AMX, AVX512-BF16: 35 vs 15.8 img/s at 256x256 in
    # bf16 against torch); below torch elsewhere (see torch_engine). int8 is its own.
    return 2 if cpu_has_fast_bf16() else 0


BACKEND = Backend(
    name="openvino",
    factory=_create,
    package="openvino",
    install="pip install openvino",
    devices=("cpu",),
    precisions=("fp32", "bf16", "int8"),
    shape_modes=SHAPE_MODES,
    rank=_rank,
    options=OpenVINOOptions,
    # int8: the stats variant is not quantized (tiles would change an int8 model's pixels).
    norm_stats=("fp32", "bf16"),
    default_threads=lambda: "OpenVINO's default",
    warm_up="animegan_cli.engines.openvino_warmup:warmed",
    from_cache=_from_cache,
)
