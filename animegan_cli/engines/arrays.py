"""numpy twins of the contract's conversions (contract.to_model_input, contract.to_pixels).

An engine whose runtime takes numpy (OpenVINO) styles a numpy batch without torch: a small
run whose model is cached never pays torch's import (~1.5-2.4 s). The arithmetic is the
same float32 operations in the same order, so the pixels are the torch path's, bit for bit
(tests/test_fast_start.py checks every uint8 value in and rounding ties out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from animegan_cli.engines.contract import NonFiniteOutput

if TYPE_CHECKING:
    import numpy as np


def model_input(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 in [-1, 1]: contract.to_model_input's arithmetic."""
    import numpy as np

    return batch.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def pixels(output: np.ndarray) -> np.ndarray:
    """Generator output (N, 3, H, W) -> uint8 (N, H, W, 3), rounded half to even as torch
    rounds; NonFiniteOutput (with the whole batch) where an image holds NaN or inf."""
    import numpy as np

    values = np.asarray(output, dtype=np.float32)
    finite = np.isfinite(values.reshape(len(values), -1).sum(axis=1))
    with np.errstate(invalid="ignore"):  # a NaN's pixel is garbage either way: it fails
        scaled = (np.clip(values, -1, 1) + np.float32(1.0)) * np.float32(127.5)
        out = np.ascontiguousarray(np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1))
    if not finite.all():
        raise NonFiniteOutput(out, [int(i) for i in np.flatnonzero(~finite)])  # type: ignore[arg-type]
    return out
