"""A run's first OpenVINO models, read and compiled on a thread while torch imports.

A converting run spends its first ~2 s in ``import torch``: the decoder processes and the
tensors need it. Reading the cached IR and compiling a static model for each of the first
input shapes (~0.1 s each) need no torch, and OpenVINO releases the GIL while it compiles,
so on a second core that work runs alongside the import and the first images find their
models ready. The shapes come from the first images' headers. What the thread does not do
(no cached IR yet: a checkpoint's first run converts it, with torch) the engine does as
before; a warm-up that fails costs nothing but its time, the engine compiling again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.core.limits import MAX_COMPILED_PIXELS, MIN_SIDE
from animegan_cli.engines import openvino_engine as ove
from animegan_cli.engines.contract import EngineSpec, WarmupRequest
from animegan_cli.engines.openvino_engine import OpenVINOOptions
from animegan_cli.media import data
from animegan_cli.model.variants import VARIANTS

# Headers read for the first shapes: enough for the first batches of a run of any length,
# at ~0.3 ms each.
LOOKAHEAD = 32
# Shapes compiled ahead, each ~100 MB; the engine compiles later ones on first sight.
MAX_AHEAD = 4

Shape = tuple[int, int, int, int]  # (N, 3, H, W)

log = logging.getLogger(__name__)


def first_shapes(
    paths: Sequence[Path], settings: data.PreprocessSettings, batch: int, min_count: int = 1
) -> list[Shape]:
    """The model inputs (N, 3, H, W) of the run's first batches, in first-seen order; only
    those of at least ``min_count`` of the first images (hybrid shapes: 2, those that repeat).

    From headers alone (EXIF orientation included). An image whose header is unreadable,
    or that will be refused (too big, too small), is left out: it compiles nothing.
    """
    counts: dict[tuple[int, int], int] = {}
    for path in paths[:LOOKAHEAD]:
        upright = data.header_upright_size(path)
        if upright is None or (settings.max_pixels and math.prod(upright) > settings.max_pixels):
            continue
        width, height = data.target_size(*upright, settings.size, settings.multiple)
        if min(width, height) >= MIN_SIDE:
            counts[height, width] = counts.get((height, width), 0) + 1
    # A batch holds `batch` images of one shape, fewer when the run has no more of them.
    whole_run = len(paths) <= LOOKAHEAD
    shapes, pixels = [], 0
    repeating = [(shape, count) for shape, count in counts.items() if count >= min_count]
    for (height, width), count in repeating[:MAX_AHEAD]:
        n = min(batch, count) if whole_run else batch
        pixels += n * height * width
        if pixels > MAX_COMPILED_PIXELS:  # the engine's LRU would evict what is compiled ahead
            break
        shapes.append((n, 3, height, width))
    return shapes


@dataclass
class Ready:
    """What the thread made: the IR it read, and a compiled model per shape."""

    xml: Path
    config: dict[str, object]
    model: object  # openvino.Model
    compiled: dict[Shape, object] = field(default_factory=dict)  # shape -> CompiledShape
    seconds: float = 0.0  # compiling them


class Warmup:
    """Reads a checkpoint's cached IR and compiles it for ``shapes`` on a thread of its own."""

    def __init__(
        self,
        spec: EngineSpec,
        checkpoint_id: str,
        align_corners: bool,
        cache_dir: Path,
        shapes: Sequence[Shape],
    ) -> None:
        self.spec = spec
        self.checkpoint_id = checkpoint_id
        self.align_corners = align_corners
        self.cache_dir = cache_dir
        self.shapes = list(shapes)
        self._stop = threading.Event()
        self._imported = threading.Event()
        self._ready: Ready | None = None
        self._thread = threading.Thread(target=self._work, name="openvino warm-up", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._ready = self._read_and_compile()
        except Exception:  # the engine reads and compiles again, and reports what fails
            log.debug("openvino warm-up failed", exc_info=True)
        finally:
            self._imported.set()

    def _read_and_compile(self) -> Ready | None:
        import openvino  # noqa: F401  (all this thread imports, before before_fork returns)

        self._imported.set()
        spec = self.spec
        streams = spec.options_as(OpenVINOOptions).streams
        # The checkpoint id fixes its variant (stored with its weights), so the one variant
        # whose IR is cached for this id is the right one; reading the checkpoint to learn it
        # would cost the torch import this warm-up runs beside.
        xml = next((path for path in (
            ove.ir_path(self.cache_dir, self.checkpoint_id, self.align_corners,
                        spec.precision == "int8", variant) for variant in VARIANTS)
            if ove.ir_is_cached(path)), None)
        if xml is None:
            return None
        core = ove.shared_core()
        config = ove.compile_config(spec.precision, spec.threads, streams)
        ready = Ready(xml, config, core.read_model(xml))
        for shape in self.shapes:
            if self._stop.is_set():
                break
            if not ove.static_is_safe(shape):
                continue
            entry, seconds = ove.compile_shape(core, ready.model, shape, config, streams,
                                               ove.model_cache_dir(self.cache_dir))
            ready.compiled[shape] = entry
            ready.seconds += seconds
            ove.log_compiled(shape, seconds, ahead=True,
                             totals=(len(ready.compiled), ready.seconds))
        return ready

    def before_fork(self) -> None:
        """Wait until the thread imports nothing more. A module it is importing when the
        decoder processes fork would stay locked in them, for ever, by a thread they lack."""
        self._imported.wait()

    def take(self, xml: Path, config: dict[str, object]) -> Ready | None:
        """Once the thread is done, what it made, if it is ``xml`` compiled with ``config``."""
        self._thread.join()
        ready, self._ready = self._ready, None
        if ready is None or ready.xml != xml or ready.config != config:
            return None
        return ready

    def close(self) -> None:
        """Compile no further shape, and wait for the one under way (a fraction of a second)."""
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def warmed(spec: EngineSpec, request: WarmupRequest) -> Iterator[Warmup | None]:
    """A Warmup for a run with static shapes (None with dynamic ones: one model, compiled by
    the engine), closed when the run ends: an interrupted run does not exit under a compile.
    The OpenVINO backend's warm-up (Backend.warm_up), called through base.warmed."""
    options = spec.options_as(OpenVINOOptions)
    if options.shapes == "dynamic":
        yield None
        return
    # With streams each image runs on its own, as a batch of one (OpenVINOEngine.run).
    batch = 1 if options.streams > 1 else request.batch_size
    settings = request.preprocess
    assert isinstance(settings, data.PreprocessSettings)
    # Hybrid shapes compile only the shapes that repeat; the engine runs the others dynamic.
    shapes = first_shapes(request.paths, settings, batch,
                          min_count=2 if options.shapes == "hybrid" else 1)
    warmup = Warmup(spec, request.checkpoint_id, request.align_corners, request.cache_dir,
                    shapes)
    try:
        yield warmup
    finally:
        warmup.close()
