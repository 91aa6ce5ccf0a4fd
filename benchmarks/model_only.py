"""Model-only benchmark: each engine on ready batches at given shapes, and its PSNR (by hand).

    python benchmarks/model_only.py rates --shapes 256x256,384x512 --rounds 5
    python benchmarks/model_only.py cold --repeats 3

``rates``: img/s of OpenVINO bf16/fp32 with dynamic and static shapes, torch fp32/bf16
and ONNX Runtime fp32, measured in alternating rounds (every engine gets its share of
each round, so load from other processes falls on all alike), plus torch and OpenVINO
static with the shapes alternating batch by batch, and each engine's PSNR against torch
fp32 on a photo. ``cold``: the first compile in a fresh process, with and without
OpenVINO's model cache (CACHE_DIR). Shapes are HxW. Results: benchmarks/results/.
h11b's end-to-end benchmark calls animegan_cli.tools.measure.model_only_rate for its shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import peak  # noqa: E402  (benchmarks/peak.py: the same-run matmul peak, the model's GFLOP)

from animegan_cli.engines.base import cpu_has_fast_bf16  # noqa: E402
from animegan_cli.engines.onnxruntime_engine import OnnxRuntimeEngine, cached_onnx  # noqa: E402
from animegan_cli.engines.openvino_engine import OpenVINOEngine  # noqa: E402
from animegan_cli.engines.torch_engine import TorchEngine  # noqa: E402
from animegan_cli.model.weights import load_generator, load_state_dict  # noqa: E402
from animegan_cli.tools.export import sample_image  # noqa: E402
from animegan_cli.tools.measure import Measurement, interleaved_rates, psnr  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOLDEN = ROOT.parent / "shared" / "spec" / "golden" / "golden_generator.pt"


def generator():
    """The golden random-weight checkpoint (no real weights here); speed does not depend on it."""
    if GOLDEN.exists():
        return load_generator(load_state_dict(GOLDEN))
    torch.manual_seed(0)
    from animegan_cli.model.generator import Generator

    return Generator().eval()


def build_engines(threads: int, workdir: Path) -> dict[str, object]:
    """Every engine the table compares, each built once."""
    gen = generator()
    cache = workdir / "ir"
    engines: dict[str, object] = {}
    precisions = ["bf16", "fp32"] if cpu_has_fast_bf16() else ["fp32"]
    for precision in precisions:
        for shapes in ("dynamic", "static"):
            engines[f"openvino {precision} {shapes}"] = OpenVINOEngine(
                gen, "b" * 40, precision, threads, cache, shapes=shapes)
    for precision in precisions:
        engines[f"torch {precision}"] = TorchEngine(load_generator(gen.state_dict()),
                                                    torch.device("cpu"), precision)
    # The engine `--backend onnxruntime` runs: the exported model, cached by checkpoint.
    onnx_file, _ = cached_onnx(gen, workdir / "onnx", "b" * 40)
    engines["onnxruntime fp32"] = OnnxRuntimeEngine(onnx_file, threads)
    return engines


def merged(a: Measurement | None, b: Measurement) -> Measurement:
    """Two measurements of one setting as one (images over seconds, all batches)."""
    if a is None:
        return b
    seconds = a.batches * a.batch_size / a.images_per_second
    seconds += b.batches * b.batch_size / b.images_per_second
    batches = a.batches + b.batches
    return Measurement(a.batch_size, a.height, a.width, batches * a.batch_size / seconds,
                       (a.latency_ms * a.batches + b.latency_ms * b.batches) / batches, batches)


def photo_batch(photos: Path | None, height: int, width: int) -> torch.Tensor:
    """One photo cropped and resized to (H, W) as uint8 (1, 3, H, W); a sample without one."""
    files = sorted(photos.glob("*.jpg")) if photos else []
    if not files:
        x = sample_image(height, width)
        return torch.from_numpy(((x + 1) * 127.5).round().astype(np.uint8))
    with Image.open(files[0]) as img:
        img = img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]


def quality(engines: dict[str, object], shapes, photos: Path | None) -> dict[str, dict]:
    """PSNR of each engine's result against torch fp32, per shape."""
    out: dict[str, dict] = {name: {} for name in engines}
    for h, w in shapes:
        batch = photo_batch(photos, h, w)
        reference = engines["torch fp32"].run(batch).numpy()
        for name, engine in engines.items():
            out[name][f"{h}x{w}"] = psnr(engine.run(batch).numpy(), reference)
    return out


def rates(args: argparse.Namespace) -> dict[str, object]:
    """Alternating rounds over every engine, then the varying-shape check."""
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    batch_shapes = [(args.batch, h, w) for h, w in shapes]
    peaks = [peak.matmul_peak(threads=args.threads)]  # before and after the rounds: the best
    with tempfile.TemporaryDirectory() as tmp:
        engines = build_engines(args.threads, Path(tmp))
        varying = {f"{n} (shapes alternating)": engines[n]
                   for n in ("torch fp32", "openvino bf16 static", "openvino fp32 static")
                   if n in engines}
        table: dict[tuple[str, tuple], Measurement] = {}
        for r in range(args.rounds):
            for engines_now, vary in ((engines, False), (varying, True)):
                measured = interleaved_rates(engines_now, batch_shapes, 1, args.seconds, vary)
                for key, m in measured.items():
                    table[key] = merged(table.get(key), m)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        psnrs = quality(engines, shapes, args.photos)
        compile_seconds = {n: e.compile_seconds for n, e in engines.items()
                           if isinstance(e, OpenVINOEngine)}
        descriptions = {n: e.description for n, e in {**engines, **varying}.items()}
    peaks.append(peak.matmul_peak(threads=args.threads))
    best = {k: max(p[k] for p in peaks) for k in peaks[0]}
    rows = [{"engine": name, "description": descriptions[name], "batch": n, "height": h,
             "width": w, "images_per_second": m.images_per_second, "latency_ms": m.latency_ms,
             "batches": m.batches,
             "psnr_db": psnrs.get(name.split(" (")[0], {}).get(f"{h}x{w}"),
             **peak.efficiency(m.images_per_second, h, w, best, precision_of(name))}
            for (name, (n, h, w)), m in table.items()]
    return {"rows": rows, "compile_seconds": compile_seconds, "peak": best, "peaks": peaks,
            "gflop_per_image": {f"{h}x{w}": peak.generator_gflop(h, w) for h, w in shapes}}


def precision_of(engine: str) -> str:
    """The precision an engine's label names ("openvino bf16 static" -> "bf16")."""
    return next((p for p in ("int8", "bf16", "fp32") if p in engine.split()), "fp32")


COLD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import openvino as ov
core = ov.Core()
if sys.argv[2]:
    core.set_property({"CACHE_DIR": sys.argv[2]})
model = core.read_model(sys.argv[1])
model.reshape([1, 3, 384, 512])
t1 = time.perf_counter()
compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": sys.argv[3],
                                             "PERFORMANCE_HINT": "LATENCY"})
t2 = time.perf_counter()
print(json.dumps({"read": t1 - t0, "compile": t2 - t1}))
"""


def cold(args: argparse.Namespace) -> dict[str, object]:
    """First compile in fresh processes: no cache, cache being filled, cache filled."""
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = OpenVINOEngine(generator(), "c" * 40, "fp32", None, Path(tmp) / "ir")
        xml = next((Path(tmp) / "ir").glob("*.xml"))
        del engine
        for precision in ("bf16", "f32"):
            for r in range(args.repeats):
                cache = Path(tmp) / f"cache-{precision}-{r}"
                for label, cache_dir in (("no cache", ""), ("cache, first", str(cache)),
                                         ("cache, warm", str(cache))):
                    proc = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(xml),
                                           cache_dir, precision],
                                          capture_output=True, text=True, check=True)
                    results.setdefault(f"{precision} {label}", []).append(
                        json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"cold": results}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "?")
    kind = "Xeon AMX" if cpu_has_fast_bf16() else "no bf16 units"
    load = os.getloadavg()
    return (f"{cpu} ({kind}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def markdown(result: dict[str, object], args: argparse.Namespace) -> str:
    lines = [f"Machine: {machine()}. {args.label}".rstrip(), "",
             f"Command: `python benchmarks/model_only.py {' '.join(sys.argv[1:])}`", ""]
    if "rows" in result:
        lines += [f"Same-run peak (best of before and after the rounds): "
                  f"{peak.describe(result['peak'])}; the generator costs " + ", ".join(
                      f"{g:.1f} GFLOP at {s}" for s, g in result["gflop_per_image"].items())
                  + " per image. Share of peak: against the fp32 peak for fp32, the bf16 "
                  "peak otherwise.", "",
                  "| engine | H x W | batch | img/s | GFLOP/s | share of peak "
                  "| median ms/batch | PSNR vs torch fp32 (dB) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(result["rows"], key=lambda r: (r["height"] * r["width"], r["engine"])):
            shown = "-" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
            lines.append(f"| {r['engine']} | {r['height']}x{r['width']} | {r['batch']} "
                         f"| {r['images_per_second']:.2f} | {r['gflop_per_s']:.0f} "
                         f"| {r['share_of_peak']:.0%} | {r['latency_ms']:.0f} | {shown} |")
        lines += ["", "OpenVINO compile seconds (all shapes, per engine): " + ", ".join(
            f"{k} {v:.2f}" for k, v in result["compile_seconds"].items())]
    if "cold" in result:
        lines += ["| fresh process, 1x3x384x512 | read s (median) | compile s (median) |",
                  "|---|---|---|"]
        for label, runs in result["cold"].items():
            read = float(np.median([r["read"] for r in runs]))
            comp = float(np.median([r["compile"] for r in runs]))
            lines.append(f"| {label} | {read:.2f} | {comp:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["rates", "cold"])
    parser.add_argument("--shapes", default="256x256,384x512")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--name", default=None, help="results file stem")
    parser.add_argument("--label", default="",
                        help="what else ran, e.g. 'Nothing else running.'")
    args = parser.parse_args()
    result = rates(args) if args.what == "rates" else cold(args)
    text = markdown(result, args)
    print(text)
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (RESULTS / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
