"""``animegan tune``: choose engine, precision, batch size, threads and workers by measuring."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from animegan_cli.engines.base import ENGINES, resolve_spec, torch_threads, tune_candidates
from animegan_cli.media import data
from animegan_cli.media.formats import DEFAULT_PNG_LEVEL, PngLevel
from animegan_cli.media.inputs import discover_inputs
from animegan_cli.model.weights import DEFAULT_STYLE
from animegan_cli.pipeline import resources
from animegan_cli.pipeline.convert import ConvertOptions, convert
from animegan_cli.settings import fields

if TYPE_CHECKING:  # cli imports this module at start: numpy, torch and the model come later
    import torch

    from animegan_cli.stylizer import Stylizer

BATCH_SIZES = (1, 2, 4, 8, 16)
# A bigger batch must beat the best so far by this much to count as better: smaller
# differences are noise on a busy machine, and a smaller batch has lower latency.
MIN_GAIN = 1.05
TUNE_PHOTOS = 8


@dataclass
class TuneRequest:
    """What to tune for."""

    size: int = fields.SIZE.default
    budget: float = 120.0
    photos: Path | None = None
    objective: str = "throughput"  # or "latency"
    style: str | None = None
    weights: Path | None = None
    memory_budget_mb: float | None = None


@dataclass
class Trial:
    """One measured setting (a row of the table)."""

    backend: str
    precision: str
    batch_size: int
    threads: int
    num_workers: int | None
    streams: int = fields.STREAMS.default
    images_per_second: float = 0.0
    latency_ms: float = 0.0
    peak_mb: float = 0.0
    per_image_mb: float = 0.0  # memory one more image in the batch costs (measured)
    note: str = ""
    png_level: PngLevel | None = None  # set by the PNG stage only
    # OpenVINO: "static" (a model per input shape) or "dynamic"; None until tune compared them.
    shapes: str | None = None

    def settings(self) -> dict[str, object]:
        """The config-file keys this trial stands for."""
        chosen = {"backend": self.backend, "precision": self.precision,
                  "batch_size": self.batch_size, "threads": self.threads,
                  "streams": self.streams}
        if self.num_workers is not None:
            chosen["num_workers"] = self.num_workers
        if self.png_level is not None:
            chosen["png_level"] = self.png_level
        if self.shapes is not None:
            chosen["shapes"] = self.shapes
        return chosen


@dataclass
class TuneResult:
    """Every trial in the order run, and the winner."""

    trials: list[Trial] = field(default_factory=list)
    winner: Trial | None = None
    shape: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"shape": list(self.shape), "seconds": self.seconds,
                "trials": [asdict(t) for t in self.trials],
                "winner": asdict(self.winner) if self.winner else None}


def candidate_engines() -> list[tuple[str, str]]:
    """(backend, precision) pairs worth measuring here, from the engine registry; int8 is
    opt-in, never tuned in."""
    return tune_candidates()


def _has_option(backend: str, name: str) -> bool:
    """Whether the engine declares an option of its own by this name (streams, shapes)."""
    return name in ENGINES[backend].option_names()


def tuning_images(request: TuneRequest, workdir: Path) -> Path:
    """A folder of photos to tune on: the user's first few, or generated photo-like ones."""
    folder = workdir / "photos"
    folder.mkdir()
    if request.photos is not None:
        for i, item in enumerate(discover_inputs([request.photos])[:TUNE_PHOTOS]):
            shutil.copyfile(item.path, folder / f"{i:02d}{item.path.suffix.lower()}")
        if any(folder.iterdir()):
            return folder
    import numpy as np

    rng = np.random.default_rng(0)
    width = request.size or fields.SIZE.default
    width, height = width, width * 3 // 4
    for i in range(TUNE_PHOTOS):
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 255
        noisy = base + rng.normal(0, 12, base.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            folder / f"{i:02d}.jpg", quality=90)
    return folder


def typical_shape(folder: Path, size: int) -> tuple[int, int]:
    """The most common model input shape (H, W) among the tuning photos."""
    shapes: dict[tuple[int, int], int] = {}
    for i, item in enumerate(discover_inputs([folder])):
        prepared = data.prepare_image(i, item.path, data.PreprocessSettings(size))
        if prepared.pixels is not None:
            shapes[prepared.shape] = shapes.get(prepared.shape, 0) + 1
    return max(shapes, key=lambda s: shapes[s]) if shapes else (size * 3 // 4, size)


@dataclass(frozen=True)
class _Tuning:
    """What every stage reads (the request, the shape, the clock, the budgets) and where each
    measured trial goes."""

    request: TuneRequest
    photos: Path
    shape: tuple[int, int]  # (H, W) of the model input
    cores: int
    memory_budget_mb: float
    per_trial: float  # seconds one measurement runs for
    deadline: float  # time.perf_counter() at which the budget is spent
    result: TuneResult
    on_trial: Callable[[Trial], None]
    on_message: Callable[[str], None]

    def out_of_time(self) -> bool:
        """Whether the budget is spent."""
        return time.perf_counter() > self.deadline

    def better(self, a: Trial, b: Trial) -> bool:
        """Whether ``a`` beats ``b`` for the objective."""
        if self.request.objective == "latency":
            return a.latency_ms < b.latency_ms
        return a.images_per_second > b.images_per_second

    def predicted_mb(self, best: Trial, batch: int) -> float:
        """Peak memory at ``batch`` images, from what one more image cost in ``best``."""
        return best.peak_mb + (batch - best.batch_size) * best.per_image_mb

    def record(self, trial: Trial) -> Trial:
        """Add a row to the table and report it."""
        self.result.trials.append(trial)
        self.on_trial(trial)
        return trial


def run_tune(request: TuneRequest, on_trial: Callable[[Trial], None] = lambda t: None,
             on_message: Callable[[str], None] = lambda m: None) -> TuneResult:
    """Measure settings in stages, pruning as it goes, within ``request.budget`` seconds.

    Stages: engines at batch 1; batch sizes for the best engine (stopping once bigger
    stops paying or would not fit in memory); OpenVINO streams; thread counts; then
    DataLoader workers, end to end on the photos; one model thread fewer while decoders run;
    the PNG level. Each stage keeps the best so far.
    """
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    result = TuneResult()
    workdir = Path(tempfile.mkdtemp(prefix="animegan-tune-"))
    try:
        photos = tuning_images(request, workdir)
        result.shape = typical_shape(photos, request.size)
        engines = candidate_engines()
        # Rough share per measurement: engines + ~4 batch sizes + threads + 3 worker runs.
        planned = len(engines) + 4 + max(cores - 1, 1) + 3
        tuning = _Tuning(
            request, photos, result.shape, cores,
            # The same budget convert plans for (a share of MemAvailable, or the cgroup limit).
            memory_budget_mb=request.memory_budget_mb or resources.default_budget() / 2**20,
            per_trial=max(1.0, request.budget / planned / 2),
            deadline=started + request.budget,
            result=result, on_trial=on_trial, on_message=on_message,
        )
        best = _tune_shapes(tuning, _tune_engines(tuning, engines))
        for stage in (_tune_batch_sizes, _tune_streams, _tune_threads, _tune_workers,
                      *PIPELINE_STAGES):
            best = stage(tuning, best)
        result.winner = best
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _measure(tuning: _Tuning, trial: Trial) -> Trial:
    """Time ``trial``'s engine on batches of the typical shape; the measured trial, recorded."""
    from animegan_cli.tools.measure import (
        current_rss_mb,
        measure_engine,
        peak_rss_mb,
        reset_peak_rss,
    )

    height, width = tuning.shape
    with torch_threads(trial.threads):
        engine = _stylizer(tuning.request, trial, tuning.on_message).engine
        reset_peak_rss()
        before = current_rss_mb()
        m = measure_engine(engine, height, width, trial.batch_size,
                           min_seconds=tuning.per_trial, min_batches=1)
        peak = peak_rss_mb()
        trial = replace(trial, images_per_second=m.images_per_second,
                        latency_ms=m.latency_ms, peak_mb=peak,
                        per_image_mb=max(peak - before, 1.0) / trial.batch_size)
        del engine
    return tuning.record(trial)


def _tune_engines(tuning: _Tuning, engines: list[tuple[str, str]]) -> Trial:
    """Each (backend, precision) at batch 1 on all cores (at least the first, out of time)."""
    best: Trial | None = None
    for backend, precision in engines:
        if best is not None and tuning.out_of_time():
            break
        trial = _measure(tuning, Trial(backend, precision, 1, tuning.cores, None))
        best = trial if best is None or tuning.better(trial, best) else best
    assert best is not None
    return best


def _tune_shapes(tuning: _Tuning, best: Trial) -> Trial:
    """An engine that compiles per shape (OpenVINO): one dynamic model against the per-shape
    static ones (the default)."""
    if not _has_option(best.backend, "shapes") or tuning.out_of_time():
        return best
    default = ENGINES[best.backend].options().shapes
    best = replace(best, shapes=default)  # what it measured: the default
    trial = _measure(tuning, replace(best, shapes="dynamic", note="dynamic shapes"))
    return trial if tuning.better(trial, best) else best


def _tune_batch_sizes(tuning: _Tuning, engine_best: Trial) -> Trial:
    """Bigger batches for the best engine, while they pay, fit in memory and time is left."""
    if tuning.request.objective == "latency":
        return engine_best  # a bigger batch never lowers the time to one image
    best = engine_best
    for batch in BATCH_SIZES[1:]:
        predicted = tuning.predicted_mb(best, batch)
        if predicted > tuning.memory_budget_mb:
            tuning.record(replace(engine_best, batch_size=batch, note=(
                f"skipped: needs about {predicted / 1024:.1f} GB, budget "
                f"{tuning.memory_budget_mb / 1024:.1f} GB")))
            break
        if tuning.out_of_time():
            break
        trial = _measure(tuning, replace(engine_best, batch_size=batch))
        if trial.images_per_second > best.images_per_second * MIN_GAIN:
            best = trial
        elif trial.images_per_second < best.images_per_second / MIN_GAIN:
            break  # bigger batches only get slower from here
    return best


def _tune_streams(tuning: _Tuning, best: Trial) -> Trial:
    """An engine with streams (OpenVINO), for throughput: one stream per core, each on its
    own image of a batch."""
    if (not _has_option(best.backend, "streams") or tuning.cores <= 1
            or tuning.request.objective != "throughput"):
        return best
    # No cross-core sync inside an image: each stream's image runs on its own core.
    streams = min(tuning.cores, 4)
    batch = max(best.batch_size, streams)
    if tuning.out_of_time() or tuning.predicted_mb(best, batch) > tuning.memory_budget_mb:
        return best
    trial = _measure(tuning, replace(best, streams=streams, batch_size=batch))
    return trial if trial.images_per_second > best.images_per_second * MIN_GAIN else best


def _tune_threads(tuning: _Tuning, best: Trial) -> Trial:
    """Fewer threads than cores, from cores - 1 down to 1, while time is left."""
    for threads in range(tuning.cores - 1, 0, -1):
        if tuning.out_of_time():
            break
        trial = _measure(tuning, replace(best, threads=threads))
        best = trial if tuning.better(trial, best) else best
    return best


def _tune_workers(tuning: _Tuning, best: Trial) -> Trial:
    """End-to-end runs over the photos with 0..cores workers; the model time is shared."""
    chosen: Trial | None = None
    for workers in range(0, tuning.cores + 1):
        if tuning.out_of_time() and chosen is not None:
            break
        trial, _ = _end_to_end(tuning, replace(best, num_workers=workers), f"out{workers}")
        if chosen is None or trial.images_per_second > chosen.images_per_second * MIN_GAIN:
            chosen = trial
    return chosen or best


def _convert_options(request: TuneRequest, trial: Trial, photos: Path,
                     out: Path) -> ConvertOptions:
    """The convert run an end-to-end trial times: the tuning photos into ``out``."""
    extra: dict[str, object] = {"style": request.style} if request.style else {}
    if trial.png_level is not None:  # the PNG stage: PNG outputs at the trial's level
        extra.update(format="png", png_level=trial.png_level)
    if trial.shapes is not None:
        extra.update(shapes=trial.shapes)
    return ConvertOptions(
        inputs=[str(photos)], output=out, weights=request.weights,
        size=request.size, batch_size=trial.batch_size, threads=trial.threads,
        num_workers=trial.num_workers or 0, backend=trial.backend, streams=trial.streams,
        precision=trial.precision, **extra,  # type: ignore[arg-type]
    )


def _end_to_end(tuning: _Tuning, trial: Trial, name: str,
                note: str = "end to end") -> tuple[Trial, int]:
    """Convert the photos with ``trial``'s settings; the recorded trial and the bytes written."""
    from animegan_cli.tools.measure import peak_rss_mb, reset_peak_rss

    out = tuning.photos.parent / name
    reset_peak_rss()
    summary = convert(_convert_options(tuning.request, trial, tuning.photos, out))
    busy = summary.seconds - summary.startup_seconds
    written = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    trial = replace(trial, images_per_second=summary.converted / busy if busy else 0.0,
                    latency_ms=0.0, peak_mb=peak_rss_mb(), note=note)
    return tuning.record(trial), written


def _stylizer(request: TuneRequest, trial: Trial, on_message: Callable[[str], None]) -> Stylizer:
    from animegan_cli.stylizer import Stylizer

    # The trial's streams and shapes go to the engine that declares them (OpenVINO).
    shapes = {"shapes": trial.shapes} if trial.shapes else {}
    spec = resolve_spec(backend=trial.backend, precision=trial.precision,
                        threads=trial.threads, streams=trial.streams, **shapes)
    return Stylizer.load(
        request.style or DEFAULT_STYLE, weights=request.weights, size=request.size,
        spec=spec, on_message=on_message, calibration=_calibration_refused,
    )


def _calibration_refused() -> list[torch.Tensor]:
    raise AssertionError("tune never measures int8")


# ---- pipeline stages: threads while decoding, PNG level (end to end, after the workers) ----

# PNG levels tried: convert's default (rle, formats.py), the old default 4 and zlib's 6.
PNG_LEVELS = (DEFAULT_PNG_LEVEL, 4, 6)
# A faster PNG level wins only while its files stay within this factor of the smallest.
PNG_SIZE_TOLERANCE = 1.15


def _tune_decoding_threads(tuning: _Tuning, best: Trial) -> Trial:
    """One model thread fewer while decoder processes run: they take a share of a core."""
    if not best.num_workers or best.threads <= 1 or tuning.out_of_time():
        return best
    trial, _ = _end_to_end(tuning, replace(best, threads=best.threads - 1), "fewer-threads",
                           "end to end, one model thread fewer while decoding")
    return trial if trial.images_per_second > best.images_per_second * MIN_GAIN else best


def _tune_png_level(tuning: _Tuning, best: Trial) -> Trial:
    """The fastest PNG level whose files stay within PNG_SIZE_TOLERANCE of the smallest.

    Only where runs write PNG: the photos tuned on hold PNGs (--format same keeps them),
    or the config file asks for PNG outputs.
    """
    if not _writes_png(tuning.photos):
        return best
    measured: list[tuple[Trial, int]] = []
    for level in PNG_LEVELS:
        if tuning.out_of_time() and measured:
            break
        trial, written = _end_to_end(tuning, replace(best, png_level=level), f"png{level}",
                                     f"end to end, PNG level {level}")
        measured.append((trial, written))
    smallest = min(written for _, written in measured)
    small_enough = [t for t, written in measured if written <= smallest * PNG_SIZE_TOLERANCE]
    return max(small_enough, key=lambda t: t.images_per_second)


PIPELINE_STAGES = (_tune_decoding_threads, _tune_png_level)


def _writes_png(photos: Path) -> bool:
    from animegan_cli.settings.config import load_config

    if load_config().get("format") == "png":
        return True
    return any(f.path.suffix.lower() == ".png" for f in discover_inputs([str(photos)]))
