"""Benchmarks, run by hand (never in CI): the article's batch table, end to end, quality.

    python benchmarks/bench.py all --photos ../shared/photos
    python benchmarks/bench.py table --sizes 256x256,352x512 --batches 1,2,4,8,16
    python benchmarks/bench.py e2e --photos ../shared/photos
    python benchmarks/bench.py quality --photos ../shared/photos

Results go to benchmarks/results/<name>.json and .md (and the Markdown is printed).
Each table cell runs in its own process so that its peak RSS is its own. Without real
checkpoints (no internet here) the golden random-weight checkpoint from the spec is used:
speed does not depend on the weights; quality numbers are for that checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegan_cli import data  # noqa: E402
from animegan_cli.engine import cpu_has_fast_bf16, to_model_input, to_pixels  # noqa: E402
from animegan_cli.measure import measure_engine, peak_rss_mb, psnr  # noqa: E402
from animegan_cli.stylizer import Stylizer  # noqa: E402
from animegan_cli.weights import load_generator, load_state_dict  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOLDEN = ROOT.parent / "shared" / "spec" / "golden" / "golden_generator.pt"
# (backend, precision, streams)
ENGINES = [
    ("torch", "fp32", 1),
    ("torch", "bf16", 1),
    ("openvino", "fp32", 1),
    ("openvino", "fp32", 2),
    ("openvino", "bf16", 1),
    ("openvino", "int8", 1),
    ("openvino", "int8", 2),
]


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "fast_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def photo_pixels(photos: Path | None, size: int, count: int) -> list[torch.Tensor]:
    """Model inputs from the photo folder (or generated photo-like images)."""
    if photos and photos.is_dir():
        files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        items = [data.prepare_image(i, p, data.PreprocessSettings(size)) for i, p in
                 enumerate(files[:count])]
        return [it.pixels for it in items if it.pixels is not None]
    rng = np.random.default_rng(0)
    return [torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
            for _ in range(count)]


def make_engine(weights: Path, backend: str, precision: str, threads: int,
                photos: Path | None, size: int, streams: int = 1):
    stylizer = Stylizer.load(weights=weights, backend=backend, precision=precision,
                             threads=threads, streams=streams,
                             calibration=lambda: photo_pixels(photos, size, 8))
    return stylizer.engine


# --- 1. the article's table: batch size x engine x precision -----------------------------

def table_cell(args: argparse.Namespace) -> None:
    """One cell, in its own process: prints a JSON line."""
    torch.set_num_threads(args.threads)
    height, width = args.shape
    engine = make_engine(args.weights, args.backend, args.precision, args.threads,
                         args.photos, max(height, width), args.streams)
    m = measure_engine(engine, height, width, args.batch, min_seconds=args.min_seconds)
    print(json.dumps({**m.as_dict(), "backend": args.backend, "precision": args.precision,
                      "streams": args.streams,
                      "engine": engine.description, "peak_rss_mb": round(peak_rss_mb())}))


def run_table(args: argparse.Namespace) -> dict[str, object]:
    rows = []
    for shape in args.sizes:
        for backend, precision, streams in ENGINES:
            for batch in args.batches:
                if batch < streams:
                    continue
                cmd = [sys.executable, __file__, "cell", "--shape", f"{shape[0]}x{shape[1]}",
                       "--backend", backend, "--precision", precision, "--batch", str(batch),
                       "--streams", str(streams),
                       "--threads", str(args.threads), "--weights", str(args.weights),
                       "--min-seconds", str(args.min_seconds)]
                if args.photos:
                    cmd += ["--photos", str(args.photos)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"cell failed: {' '.join(cmd)}\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {shape} {backend} {precision} x{streams} bs{batch}: "
                      f"{row['images_per_second']:.2f} img/s", file=sys.stderr, flush=True)
                # A batch this slow says bigger ones will only be slower: skip them.
                if row["latency_ms"] > args.max_batch_seconds * 1000:
                    break
    return {"rows": rows}


def table_markdown(result: dict[str, object]) -> str:
    lines = ["| input | engine | precision (runs) | streams | batch | img/s "
             "| latency/batch (ms) | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['width']}x{r['height']} | {r['backend']} | {precision_cell(r['engine'])} "
            f"| {r['streams']} | {r['batch_size']} | {r['images_per_second']:.2f} "
            f"| {r['latency_ms']:.0f} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


# --- 2. end to end: the naive loop against `animegan convert` ----------------------------

def naive_loop(args: argparse.Namespace) -> None:
    """Sequential: decode, resize to long side 512, eager fp32 NCHW, save PNG (a subprocess)."""
    torch.set_num_threads(args.threads)
    generator = load_generator(load_state_dict(args.weights))
    out = Path(args.out)
    started = time.perf_counter()
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for path in files:
        img = Image.open(path).convert("RGB")
        img = img.resize(data.target_size(*img.size, args.size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = to_pixels(generator(to_model_input(x, torch.float32)))[0]
        Image.fromarray(y.numpy()).save(out / (path.stem + ".png"))
    print(json.dumps({"seconds": time.perf_counter() - started, "images": len(files)}))


def timed(cmd: list[str], watch: Path | None = None) -> dict[str, float]:
    """Wall time of a command, time to its first file in ``watch``, and its peak RSS."""
    first: list[float] = []
    stop = threading.Event()
    started = time.perf_counter()

    def poll() -> None:
        while not stop.is_set():
            if watch and any(p for p in watch.rglob("*") if p.is_file()
                             and not p.name.startswith(".")):
                first.append(time.perf_counter() - started)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    # GNU time reports the command's own peak RSS (the main process, where the model is).
    with tempfile.NamedTemporaryFile("r") as rss:
        timed_cmd = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd]
        proc = subprocess.run(timed_cmd if Path("/usr/bin/time").exists() else cmd,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        stop.set()
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd} failed:\n{proc.stderr[-3000:]}")
        text = rss.read().strip()
    peak = round(int(text.splitlines()[-1]) / 1024) if text else float("nan")
    return {"wall_seconds": wall, "first_output_seconds": first[0] if first else float("nan"),
            "peak_rss_mb": peak, "stderr": proc.stderr.strip().splitlines()[-2:],
            "stdout": proc.stdout}


def run_e2e(args: argparse.Namespace) -> dict[str, object]:
    if not (args.photos and args.photos.is_dir()):
        args.photos = generated_photos(Path(tempfile.mkdtemp()))
    count = len([p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png")])
    work = Path(tempfile.mkdtemp(prefix="animegan-e2e-"))
    env_cache = work / "cache"
    os.environ["XDG_CACHE_HOME"] = str(env_cache)
    convert = [sys.executable, "-m", "animegan_cli", "convert", str(args.photos),
               "--weights", str(args.weights), "--size", str(args.size), "--quiet", "-v"]
    results: dict[str, object] = {"images": count, "photos": str(args.photos)}
    # Cold start: nothing cached yet (an OpenVINO IR, an INT8 model); later runs are warm.
    cold = timed(convert + ["-o", str(work / "cold")], work / "cold")
    results["animegan_cold_first_output_seconds"] = cold["first_output_seconds"]
    if args.fast_args:
        timed(convert + args.fast_args.split() + ["-o", str(work / "cold_fast")])
    for trial in range(args.trials):
        naive_out = work / f"naive{trial}"
        naive_out.mkdir()
        naive = timed([sys.executable, __file__, "naive", "--photos", str(args.photos),
                       "--out", str(naive_out), "--weights", str(args.weights),
                       "--size", str(args.size), "--threads", str(args.threads)])
        ours = timed(convert + ["-o", str(work / f"ours{trial}")], work / f"ours{trial}")
        check_same_sizes(naive_out, work / f"ours{trial}")
        fast = None
        if args.fast_args:
            fast_out = work / f"fast{trial}"
            fast = timed(convert + args.fast_args.split() + ["-o", str(fast_out)], fast_out)
            check_same_sizes(naive_out, fast_out)
        results[f"trial{trial}"] = {
            "naive_seconds": naive["wall_seconds"],
            "animegan_seconds": ours["wall_seconds"],
            "ratio": naive["wall_seconds"] / ours["wall_seconds"],
            "animegan_first_output_seconds": ours["first_output_seconds"],
            "animegan_peak_rss_mb": ours["peak_rss_mb"],
            "animegan_timing": ours["stderr"],
        }
        if fast is not None:
            results[f"trial{trial}"].update({
                "fast_args": args.fast_args,
                "fast_seconds": fast["wall_seconds"],
                "fast_ratio": naive["wall_seconds"] / fast["wall_seconds"],
                "fast_peak_rss_mb": fast["peak_rss_mb"],
                "fast_timing": fast["stderr"],
            })
        print(f"  trial {trial}: naive {naive['wall_seconds']:.1f} s, animegan "
              f"{ours['wall_seconds']:.1f} s, ratio {results[f'trial{trial}']['ratio']:.2f}",
              file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def check_same_sizes(a: Path, b: Path) -> None:
    """Both sides must produce the same pixel counts, or the comparison is unfair."""
    sizes_a = {p.stem: Image.open(p).size for p in a.iterdir()}
    sizes_b = {p.stem: Image.open(p).size for p in b.iterdir() if not p.name.startswith(".")}
    if sizes_a != sizes_b:
        differ = sorted(k for k in sizes_a if sizes_a[k] != sizes_b.get(k))
        raise RuntimeError(f"output sizes differ: {differ}")


def generated_photos(folder: Path, count: int = 25) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = (704, 832) if i % 2 else (1536, 1088)
        base = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
        noise = rng.normal(0, 20, (h, w, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(
            folder / f"gen{i:02d}.jpg", quality=90)
    return folder


def e2e_markdown(result: dict[str, object]) -> str:
    lines = [f"{result['images']} photos from {result['photos']}; cold start (IR conversion) "
             f"first output after {result['animegan_cold_first_output_seconds']:.1f} s", "",
             "| trial | naive loop (s) | animegan convert, defaults (s) | ratio "
             "| first output, warm (s) | peak RSS (MB) | opt-in fast path (s) | ratio "
             "| peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in result.items():
        if key.startswith("trial"):
            fast = (f"{r['fast_seconds']:.1f} | {r['fast_ratio']:.2f}x | {r['fast_peak_rss_mb']}"
                    if "fast_seconds" in r else "- | - | -")
            lines.append(f"| {key[5:]} | {r['naive_seconds']:.1f} | {r['animegan_seconds']:.1f} "
                         f"| {r['ratio']:.2f}x | {r['animegan_first_output_seconds']:.2f} "
                         f"| {r['animegan_peak_rss_mb']} | {fast} |")
    lines += ["", "animegan's own timing line (last trial, defaults):", "",
              *[f"    {line}" for line in r["animegan_timing"]]]
    if "fast_args" in r:
        lines += ["", f"opt-in fast path: `{r['fast_args']}`", "",
                  *[f"    {line}" for line in r["fast_timing"]]]
    return "\n".join(lines)


# --- 3. quality: every engine/precision against torch fp32 on the photos -----------------

def run_quality(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads)
    images = photo_pixels(args.photos, args.size, args.count)
    reference = make_engine(args.weights, "torch", "fp32", args.threads, args.photos, args.size)
    expected = [reference.run(img[None])[0].numpy() for img in images]
    rows = []
    for backend, precision, streams in ENGINES[1:]:
        if streams > 1:
            continue  # streams change speed, not numbers
        engine = make_engine(args.weights, backend, precision, args.threads, args.photos,
                             args.size)
        scores = [psnr(engine.run(img[None])[0].numpy(), ref)
                  for img, ref in zip(images, expected)]
        rows.append({"backend": backend, "precision": precision, "engine": engine.description,
                     "psnr_mean_db": float(np.mean(scores)), "psnr_min_db": float(np.min(scores))})
        print(f"  {backend} {precision}: {rows[-1]['psnr_mean_db']:.1f} dB", file=sys.stderr)
    return {"images": len(images), "size": args.size, "rows": rows}


def quality_markdown(result: dict[str, object]) -> str:
    lines = [f"PSNR against torch fp32 on {result['images']} photos at --size {result['size']}",
             "", "| engine | precision (runs) | mean PSNR (dB) | worst (dB) |",
             "|---|---|---|---|"]
    for r in result["rows"]:  # type: ignore[union-attr]
        lines.append(f"| {r['backend']} | {precision_cell(r['engine'])} "
                     f"| {r['psnr_mean_db']:.1f} | {r['psnr_min_db']:.1f} |")
    return "\n".join(lines)


def precision_cell(description: str) -> str:
    """'openvino cpu fp32 (runs f32, 2 streams)' -> 'fp32 (runs f32)'."""
    text = description.split(" ", 2)[-1]
    text = text.replace(", 2 streams", "").replace(" compiled", "")
    return text.replace("int8 weights and activations", "int8")


def save(name: str, result: dict[str, object], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    header = "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items())
    (RESULTS / f"{name}.md").write_text(f"{header}\n\n{markdown}\n")
    print(f"{header}\n\n{markdown}\n")


def parse_shape(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["all", "table", "e2e", "quality", "cell", "naive"])
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--weights", type=Path, default=GOLDEN)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sizes", type=lambda s: [parse_shape(v) for v in s.split(",")],
                        default=[(256, 256), (352, 512)], help="HxW list")
    parser.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 2, 4, 8, 16])
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--max-batch-seconds", type=float, default=20.0,
                        help="stop growing the batch once one batch takes longer")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--fast-args", default="--precision int8 --batch-size 2 --streams 2",
                        help="extra convert flags for the e2e opt-in fast path ('' = none)")
    parser.add_argument("--count", type=int, default=25, help="photos for quality")
    parser.add_argument("--shape", type=parse_shape)
    parser.add_argument("--backend")
    parser.add_argument("--precision")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.what == "cell":
        table_cell(args)
    elif args.what == "naive":
        naive_loop(args)
    if args.what in ("all", "table"):
        result = run_table(args)
        save("batch_table", result, table_markdown(result))
    if args.what in ("all", "e2e"):
        result = run_e2e(args)
        save("end_to_end", result, e2e_markdown(result))
    if args.what in ("all", "quality"):
        result = run_quality(args)
        save("quality", result, quality_markdown(result))


if __name__ == "__main__":
    main()
