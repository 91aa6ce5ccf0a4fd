"""The machine's matrix-multiply peak, measured in the same run as a model rate, and the
generator's cost in GFLOP: so a model-only rate reads as GFLOP/s and a share of the peak,
comparable across CPUs (issue 27, item 4).

    PYTHONPATH=. python benchmarks/peak.py            # the peak and the cost at two shapes

Peak: torch 2048x2048 matmuls, fp32 and bf16, on 2 threads (the model's), best of a few
seconds each. Cost: 2 * MACs of every convolution (what dominates the generator),
counted from the model itself with forward hooks.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MATRIX = 2048
THREADS = 2


def matmul_peak(seconds: float = 2.0, threads: int = THREADS) -> dict[str, float]:
    """GFLOP/s of torch MATRIX x MATRIX matmuls on ``threads`` threads, fp32 and bf16."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {name: _best_rate(dtype, seconds) for name, dtype in
                (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    finally:
        torch.set_num_threads(previous)


def _best_rate(dtype, seconds: float) -> float:
    import torch

    a = torch.randn(MATRIX, MATRIX).to(dtype)
    b = torch.randn(MATRIX, MATRIX).to(dtype)
    torch.mm(a, b)  # kernel selection, allocation
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * MATRIX**3 / (time.perf_counter() - start) / 1e9)
    return best


@functools.cache
def generator_gflop(height: int, width: int) -> float:
    """GFLOP of one (height x width) image through the generator's convolutions."""
    import torch

    from animegan_cli.model.generator import Generator

    total = 0.0

    def count(module, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        macs = (module.in_channels // module.groups) * kh * kw * output.numel()
        total += 2.0 * macs

    model = Generator().eval()
    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, height, width))
    for hook in hooks:
        hook.remove()
    return total / 1e9


def efficiency(images_per_second: float, height: int, width: int,
               peak: dict[str, float], precision: str) -> dict[str, float]:
    """A model rate as GFLOP/s and as a share of the same-run peak of its precision (int8
    against the bf16 peak: torch has no int8 matmul to measure; >100% is possible there)."""
    rate = images_per_second * generator_gflop(height, width)
    reference = peak["fp32" if precision == "fp32" else "bf16"]
    return {"gflop_per_s": rate, "share_of_peak": rate / reference if reference else 0.0}


def describe(peak: dict[str, float]) -> str:
    return (f"torch {MATRIX}x{MATRIX} matmul, {THREADS} threads: fp32 {peak['fp32']:.0f} "
            f"GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "unknown CPU")


def cpu_tag() -> str:
    """A short name for result files: xeon_amx, epyc, ..."""
    from animegan_cli.engines.contract import cpu_flags

    name = cpu_name().lower()
    kind = "xeon" if "xeon" in name else "epyc" if "epyc" in name else "cpu"
    return f"{kind}_amx" if "amx_bf16" in cpu_flags() else kind


if __name__ == "__main__":
    measured = matmul_peak()
    print(json.dumps({"cpu": cpu_name(), "peak_gflop_per_s": measured,
                      "generator_gflop": {"256x256": generator_gflop(256, 256),
                                          "384x512": generator_gflop(384, 512)}}, indent=2))
