"""The ONNX Runtime engine: the generator exported once to ONNX (cached), run on the CPU, fp32.

The exporter lives here and ``animegan export --onnx`` calls it: one way to write the model
as ONNX. onnxruntime is an extra (``pip install -e ".[export]"``), imported inside the
functions that use it, as torch is: this module is imported at start for its declaration.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import install_hint
from animegan_cli.engines.contract import (
    Backend,
    Engine,
    EngineContext,
    EngineSpec,
    to_model_input,
    to_pixels,
)
from animegan_cli.model.variants import DEFAULT_VARIANT, variant_tag

if TYPE_CHECKING:
    import torch

    from animegan_cli.model.generator import Generator

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "styled"
# Batch, height and width stay free in the exported graph: one file runs every shape.
DYNAMIC_AXES = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}


def write_onnx(generator: Generator, path: Path) -> None:
    """Trace ``generator`` into an ONNX file at ``path`` (dynamic N/H/W, opset ONNX_OPSET).

    Writes ``path`` directly: callers stage it in a temporary folder and place it whole.
    """
    import torch

    example = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing warns about Python control flow on shapes; it is expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            generator.eval(), (example,), str(path), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], opset_version=ONNX_OPSET, dynamo=False,
            dynamic_axes=DYNAMIC_AXES,
        )


def onnx_path(cache_dir: Path, checkpoint_id: str, align_corners: bool,
              variant: str = DEFAULT_VARIANT) -> Path:
    """The cached ONNX file of a checkpoint: what it was exported from, and how."""
    graph = f"align{int(align_corners)}{variant_tag(variant)}"
    return cache_dir / f"{checkpoint_id[:16]}-{graph}-opset{ONNX_OPSET}.onnx"


def cached_onnx(generator: Generator, cache_dir: Path, checkpoint_id: str) -> tuple[Path, bool]:
    """The checkpoint's ONNX file, exported on its first use; (path, whether it was cached)."""
    path = onnx_path(cache_dir, checkpoint_id, generator.align_corners, generator.variant)
    if path.exists():
        return path, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=cache_dir) as tmp:
        staged = Path(tmp) / "model.onnx"
        write_onnx(generator, staged)
        with open(staged, "rb") as source:  # a reader never sees a half-written file
            atomic_write(path, lambda out: shutil.copyfileobj(source, out))
    return path, False


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU provider on the exported model, all graph optimizations on."""

    def __init__(self, path: Path, threads: int | None, from_cache: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (all cores)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.from_cache = from_cache
        self.description = f"onnxruntime cpu fp32 (onnxruntime {ort.__version__})"

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Style one uint8 batch (N, 3, H, W); returns uint8 (N, H, W, 3)."""
        import torch

        x = to_model_input(batch, torch.float32).numpy()
        # run() releases the GIL, so the writer thread encodes while the model runs.
        y = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return to_pixels(torch.from_numpy(y))

    def threads_in_use(self) -> int:
        """The session's intra-op threads (0: ONNX Runtime's default)."""
        return int(self.session.get_session_options().intra_op_num_threads)


def _create(generator: Generator, spec: EngineSpec, context: EngineContext) -> Engine:
    path, cached = cached_onnx(generator, context.cache_dir, context.checkpoint_id)
    return OnnxRuntimeEngine(path, spec.threads, from_cache=cached)


# Never faster than OpenVINO where measured: ranked last, so `auto` picks it only where it
# is the one engine left (`animegan tune` measures it against the others).
BACKEND = Backend(
    name="onnxruntime",
    factory=_create,
    package="onnxruntime",
    install=install_hint("export"),
    devices=("cpu",),
    precisions=("fp32",),
    shape_modes=("dynamic",),
    rank=lambda: -1,
    default_threads=lambda: "ONNX Runtime's default (all cores)",
)
