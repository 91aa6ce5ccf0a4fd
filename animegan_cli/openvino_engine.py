"""The OpenVINO engine: the generator converted once to OpenVINO IR (cached), run on the CPU.

openvino is a required dependency, imported inside the functions that use it: importing it
costs over half a second, which commands that never run the model should not pay.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from animegan_cli.atomic import atomic_write
from animegan_cli.engine import to_model_input, to_pixels
from animegan_cli.errors import UsageError
from animegan_cli.model import Generator

# OpenVINO names for our precisions. bf16 is a hint: CPUs without bf16 units run f32.
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def ir_cache_key(checkpoint_id: str, align_corners: bool, int8: bool) -> str:
    """Name of a cached IR: what it was converted from, and with which OpenVINO."""
    import openvino as ov

    version = ov.__version__.split("-")[0]
    kind = "int8" if int8 else "float"
    return f"{checkpoint_id[:16]}-align{int(align_corners)}-{kind}-ov{version}"


class OpenVINOEngine:
    """Runs the generator through OpenVINO's CPU plugin; dynamic shapes, one compile."""

    def __init__(
        self,
        generator: Generator,
        checkpoint_id: str,
        precision: str,
        threads: int | None,
        cache_dir: Path,
        calibration: Callable[[], Sequence[torch.Tensor]] | None = None,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        if precision == "int8" and calibration is None:
            raise UsageError("--precision int8 needs calibration images")
        started = time.perf_counter()
        self.core = ov.Core()
        key = ir_cache_key(checkpoint_id, generator.align_corners, precision == "int8")
        xml = cache_dir / f"{key}.xml"
        self.from_cache = xml.exists() and xml.with_suffix(".bin").exists()
        if self.from_cache:
            model = self.core.read_model(xml)
        else:
            model = convert_generator(generator)
            if precision == "int8":
                assert calibration is not None
                model = quantize(model, calibration())
            save_ir_atomic(model, xml)
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
        }
        if streams > 1:
            config["NUM_STREAMS"] = streams
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = self.core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        # With several streams, the images of a batch run side by side, one per stream.
        self.streams = streams
        self.queue = ov.AsyncInferQueue(self.compiled, streams) if streams > 1 else None
        self.precision = precision
        self.load_seconds = time.perf_counter() - started
        # What the plugin really runs: a bf16 hint on a CPU without bf16 units gives f32.
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        runs = "int8 weights and activations" if precision == "int8" else actual
        streams_text = f", {streams} streams" if streams > 1 else ""
        self.description = f"openvino cpu {precision} (runs {runs}{streams_text})"

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one uint8 batch (N, 3, H, W); returns uint8 (N, H, W, 3)."""
        x = to_model_input(batch, torch.float32).numpy()
        if self.queue is not None and len(x) > 1:
            return to_pixels(torch.from_numpy(self._run_streams(x)))
        # infer() releases the GIL, so the writer thread encodes while the model runs.
        result = self.request.infer([x])
        y = next(iter(result.values()))
        return to_pixels(torch.from_numpy(np.asarray(y)))

    def _run_streams(self, x: np.ndarray) -> np.ndarray:
        assert self.queue is not None
        out: list[np.ndarray | None] = [None] * len(x)

        def done(request, index: int) -> None:
            out[index] = np.array(request.get_output_tensor(0).data)

        self.queue.set_callback(done)
        for i in range(len(x)):
            self.queue.start_async({0: x[i : i + 1]}, userdata=i)
        self.queue.wait_all()
        return np.concatenate(out)  # type: ignore[arg-type]


def convert_generator(generator: Generator):  # -> openvino.Model
    """Trace the generator into an OpenVINO model with dynamic batch, height and width."""
    import openvino as ov

    example = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode(), warnings_silenced():
        return ov.convert_model(generator.eval(), example_input=example, input=[-1, 3, -1, -1])


def quantize(model, images: Sequence[torch.Tensor]):  # -> openvino.Model
    """Post-training INT8 quantization (NNCF) calibrated on the given uint8 (3, H, W) images."""
    try:
        import nncf
    except ImportError as exc:
        raise UsageError(
            "--precision int8 needs NNCF: pip install 'animegan[int8]' (or pip install nncf)"
        ) from exc
    samples = [to_model_input(img[None], torch.float32).numpy() for img in images]
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
                atomic_write(target, lambda out, source=source: shutil.copyfileobj(source, out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def warnings_silenced():
    """Tracing warns about Python control flow on shapes; it is expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
