"""``animegan export``: a checkpoint as an ONNX file or an OpenVINO IR, verified by running it.

torch, onnx, onnxruntime and openvino are imported inside the functions: ``export --help``
must not pay for them, and ONNX is an extra (``errors.install_hint("export")``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.errors import AnimeganError, UsageError, install_hint
from animegan_cli.engines import signal_stack
from animegan_cli.engines.onnxruntime_engine import INPUT_NAME, write_onnx
from animegan_cli.settings import fields

# The exported model must reproduce torch fp32 this closely on the test image, or it is
# refused (float reordering gives ~1 level of 255 at most; a broken export gives far less).
MIN_PSNR_DB = 40.0
ONNX_EXTRA = install_hint("export")


class ExportError(AnimeganError):
    """The exported model could not be written or did not reproduce the torch model."""


@dataclass(frozen=True)
class Verification:
    """How the exported model's output compared with torch fp32's on the test image."""

    height: int
    width: int
    max_abs_difference: int  # in uint8 levels
    psnr_db: float

    def line(self) -> str:
        """One line for the user."""
        return (f"verified at {self.width}x{self.height} against torch fp32: max abs "
                f"difference {self.max_abs_difference}/255, PSNR {self.psnr_db:.1f} dB")


@dataclass(frozen=True)
class ExportRequest:
    """What ``animegan export`` writes: a style or checkpoint file, as ONNX and/or an IR."""

    style: str
    weights: Path | None = None
    onnx: Path | None = None
    openvino: Path | None = None  # a folder; the IR pair is named after the style
    size: int = fields.SIZE.default  # long side of the verification image
    align_corners: bool = False


def export_checkpoint(
    request: ExportRequest, on_message: Callable[[str], None] = lambda m: None
) -> list[tuple[Path, Verification]]:
    """Load the checkpoint, write each asked-for format, verify it; what was written."""
    if request.onnx is None and request.openvino is None:
        raise UsageError("give --onnx FILE and/or --openvino DIR")
    if request.onnx is not None:
        _onnx_modules()  # the missing extra is named before the checkpoint loads
    from animegan_cli.model.weights import WeightsStore, load_generator

    resolved = WeightsStore.from_env().resolve(
        request.style, weights=request.weights, on_download=on_message, progress=False
    )
    assert resolved.state_dict is not None
    generator = load_generator(resolved.state_dict, align_corners=request.align_corners,
                               variant=resolved.variant)
    written = []
    if request.onnx is not None:
        written.append((request.onnx, export_onnx(generator, request.onnx, request.size)))
    if request.openvino is not None:
        name = Path(resolved.name).stem
        verification = export_openvino(generator, request.openvino, name, request.size)
        written.append((request.openvino / f"{name}.xml", verification))
    return written


def export_onnx(generator, path: Path, size: int = fields.SIZE.default) -> Verification:
    """Write ``generator`` as ONNX (dynamic batch, height, width), verified by onnxruntime.

    The same exporter as the onnxruntime engine's (onnxruntime_engine.write_onnx)."""
    onnx, onnxruntime = _onnx_modules()
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=_parent(path)) as tmp:
        staged = Path(tmp) / "model.onnx"
        write_onnx(generator, staged)
        onnx.checker.check_model(str(staged))
        session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        verification = verify(generator, lambda x: session.run(None, {INPUT_NAME: x})[0], size)
        _place(staged, path)
    return verification


def export_openvino(generator, folder: Path, name: str,
                    size: int = fields.SIZE.default) -> Verification:
    """Write ``generator`` as an OpenVINO IR pair in ``folder``, verified by OpenVINO fp32."""
    import openvino as ov

    from animegan_cli.engines.openvino_engine import convert_generator, shared_core

    model = convert_generator(generator)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ir-", dir=folder) as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(model, staged, compress_to_fp16=False)
        with signal_stack.kept():  # the plugin's stack must not outlive the model here
            compiled = shared_core().compile_model(
                str(staged), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            )
        verification = verify(generator, lambda x: next(iter(compiled([x]).values())), size)
        # .bin first: the .xml's presence is what marks the pair complete.
        _place(staged.with_suffix(".bin"), folder / f"{name}.bin")
        _place(staged, folder / f"{name}.xml")
    return verification


def verify(generator, run: Callable[[np.ndarray], np.ndarray], size: int) -> Verification:
    """Run the exported model and torch fp32 on one photo-like test image; refuse a mismatch."""
    import torch

    from animegan_cli.engines.base import to_pixels

    height, width = max(size * 3 // 4 // 4 * 4, 32), max(size // 4 * 4, 32)
    x = sample_image(height, width)
    with torch.inference_mode():
        expected = to_pixels(generator.eval()(torch.from_numpy(x))).numpy()
    got = to_pixels(torch.from_numpy(np.asarray(run(x), dtype=np.float32))).numpy()
    if got.shape != expected.shape:
        raise ExportError(f"the exported model returned shape {got.shape}, torch {expected.shape}")
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    mse = float(np.mean(difference.astype(np.float64) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
    result = Verification(height, width, int(difference.max()), psnr)
    if psnr < MIN_PSNR_DB:
        raise ExportError(f"the exported model does not reproduce the torch model "
                          f"(PSNR {psnr:.1f} dB < {MIN_PSNR_DB:.0f} dB); nothing written")
    return result


def sample_image(height: int, width: int) -> np.ndarray:
    """A smooth, photo-like (1, 3, H, W) float input in [-1, 1] with some texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)]) * 2 - 1
    noisy = base + rng.normal(0, 0.1, base.shape).astype(np.float32)
    return np.clip(noisy, -1, 1)[None].astype(np.float32)


def _place(staged: Path, target: Path) -> None:
    with open(staged, "rb") as source:
        atomic_write(target, lambda out: shutil.copyfileobj(source, out))


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UsageError(f"--onnx needs onnx and onnxruntime: {ONNX_EXTRA}") from exc
    return onnx, onnxruntime

