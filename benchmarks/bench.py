"""Benchmarks, run by hand (never in CI): the article's batch table, end to end, quality.

    python benchmarks/bench.py all --photos ../shared/photos
    python benchmarks/bench.py table --sizes 256x256,352x512 --batches 1,2,4,8,16
    python benchmarks/bench.py e2e --photos ../shared/photos --count 64 --trials 2 \
        --name end_to_end_2026-12-01_xeon_amx
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
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegan_cli.engines.base import cpu_has_fast_bf16, to_model_input, to_pixels  # noqa: E402
from animegan_cli.media import data  # noqa: E402
from animegan_cli.model.weights import load_generator, load_state_dict  # noqa: E402
from animegan_cli.stylizer import Stylizer  # noqa: E402
from animegan_cli.tools.measure import measure_engine, peak_rss_mb, psnr  # noqa: E402

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


# --- 2. end to end: one run, the same photos, whole processes (issue 11) -------------------

RATIOS = ((4, 3), (3, 4), (1, 1))  # landscape, portrait, square: three model input shapes


def mixed_photos(source: Path, folder: Path, count: int) -> Path:
    """``count`` JPEGs of three aspect ratios, centre crops of ``source``'s photos (a temp dir)."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with Image.open(files[i % len(files)]) as opened:
            img = ImageOps.exif_transpose(opened).convert("RGB")
        rw, rh = RATIOS[i % len(RATIOS)]
        w, h = img.size
        cw, ch = (h * rw // rh, h) if w * rh > h * rw else (w, w * rh // rw)
        x, y = (w - cw) // 2, (h - ch) // 2
        img.crop((x, y, x + cw, y + ch)).save(folder / f"{i:03d}.jpg", quality=92)
    return folder


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))


def sized_input(path: Path, size: int) -> torch.Tensor:
    """Decode and resize as convert does (long side ``size``, sides a multiple of 4)."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    img = img.resize(data.target_size(*img.size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]


def naive_loop(args: argparse.Namespace) -> None:
    """Sequential: decode, resize to long side 512, eager fp32 NCHW, save (a subprocess)."""
    torch.set_num_threads(args.threads)
    generator = load_generator(load_state_dict(args.weights))
    out = Path(args.out)
    started = time.perf_counter()
    files = photo_files(args.photos)
    for path in files:
        x = sized_input(path, args.size)
        with torch.inference_mode():
            y = to_pixels(generator(to_model_input(x, torch.float32)))[0]
        Image.fromarray(y.numpy()).save(out / f"{path.stem}.{args.ext}")
    print(json.dumps({"seconds": time.perf_counter() - started, "images": len(files)}))


def openvino_loop(args: argparse.Namespace) -> None:
    """Sequential OpenVINO bf16: one model with dynamic N/H/W, or (--static) one compiled
    model per input shape (reshape + compile on first sight, kept); decode, run, save."""
    import openvino as ov

    from animegan_cli.engines.openvino_engine import convert_generator

    generator = load_generator(load_state_dict(args.weights))
    core = ov.Core()
    model = convert_generator(generator)
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    compiled: dict[tuple[int, ...], ov.CompiledModel] = {}
    dynamic = None if args.static else core.compile_model(model, "CPU", config)
    out = Path(args.out)
    started = time.perf_counter()
    files = photo_files(args.photos)
    for path in files:
        x = to_model_input(sized_input(path, args.size), torch.float32).numpy()
        if dynamic is None:
            if x.shape not in compiled:
                shaped = model.clone()
                shaped.reshape(list(x.shape))
                compiled[x.shape] = core.compile_model(shaped, "CPU", config)
            runner = compiled[x.shape]
        else:
            runner = dynamic
        y = torch.from_numpy(np.asarray(next(iter(runner([x]).values()))))
        Image.fromarray(to_pixels(y)[0].numpy()).save(out / f"{path.stem}.{args.ext}")
    print(json.dumps({"seconds": time.perf_counter() - started, "images": len(files)}))


def model_only(args: argparse.Namespace) -> None:
    """The limit: the engine `convert` loads (defaults), alone, on the run's own inputs,
    already decoded and sized, one image per call in the run's order; no decode, no save."""
    stylizer = Stylizer.load(weights=args.weights, size=args.size)
    items = [stylizer.prepare(path) for path in photo_files(args.photos)]
    stylizer.run([items[0]])  # warm-up, as convert's first image pays it too
    started = time.perf_counter()
    for item in items:
        stylizer.run([item])
    seconds = time.perf_counter() - started
    shapes = sorted({tuple(item.pixels.shape[1:]) for item in items})
    print(json.dumps({"seconds": seconds, "images": len(items), "engine": stylizer.description,
                      "shapes": shapes}))


def timed(cmd: list[str], watch: Path | None = None) -> dict[str, object]:
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
    """Every contender once per trial, in turn, on the same mixed-shape photos."""
    work = Path(tempfile.mkdtemp(prefix="animegan-e2e-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    try:
        photos = mixed_photos(args.photos, work / "photos", args.count)
        return _e2e_trials(args, work, photos)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _e2e_trials(args: argparse.Namespace, work: Path, photos: Path) -> dict[str, object]:
    me = [sys.executable, __file__, "--photos", str(photos), "--weights", str(args.weights),
          "--size", str(args.size), "--threads", str(args.threads)]
    convert = [sys.executable, "-m", "animegan_cli", "convert", str(photos), "--weights",
               str(args.weights), "--size", str(args.size), "--quiet", "-v"]
    loops = {
        "naive loop (eager fp32), PNG": [*me, "naive", "--ext", "png"],
        "OpenVINO bf16 loop, dynamic shapes, PNG": [*me, "ovloop", "--ext", "png"],
        "OpenVINO bf16 loop, one compiled model per shape, PNG":
            [*me, "ovloop", "--static", "--ext", "png"],
        "OpenVINO bf16 loop, one compiled model per shape, JPEG":
            [*me, "ovloop", "--static", "--ext", "jpg"],
    }
    runs = {**loops, "animegan convert (defaults), PNG": [*convert, "--format", "png"],
            "animegan convert (defaults), JPEG": [*convert, "--format", "jpg"]}
    # A first convert warms the OpenVINO IR cache, as any second run of a user finds it.
    cold = timed([*convert, "-o", str(work / "cold")], work / "cold")
    trials: list[dict[str, object]] = []
    for trial in range(args.trials):
        row: dict[str, object] = {}
        outs: dict[str, Path] = {}
        for name, cmd in runs.items():
            out = work / f"t{trial}-{len(row)}"
            out.mkdir()
            is_loop = name in loops
            result = timed([*cmd, "--out", str(out)] if is_loop else [*cmd, "-o", str(out)],
                           out)
            row[name] = {k: v for k, v in result.items() if k != "stdout"}
            outs[name] = out
        # Every contender wrote the same number of pixels, or the comparison is unfair.
        reference = outs["naive loop (eager fp32), PNG"]
        for out in outs.values():
            check_same_sizes(reference, out)
        limit = timed([*me, "model"])
        row["model alone (convert's engine, same inputs)"] = json.loads(limit["stdout"])
        trials.append(row)
        print(f"  trial {trial} done", file=sys.stderr, flush=True)
    return {"images": args.count, "size": args.size, "machine": machine(), "trials": trials,
            "cold_first_output_seconds": cold["first_output_seconds"],
            "cold_seconds": cold["wall_seconds"]}


def e2e_markdown(result: dict[str, object]) -> str:
    """One table per run: seconds, img/s, ratios, % of the model-only rate."""
    m = result["machine"]
    lines = [f"End to end, {result['images']} photos of 3 shapes (centre crops 4:3, 3:4, 1:1 "
             f"of the shared photos), --size {result['size']}, whole processes; {m['cpu']}, "
             f"{m['cores']} CPUs, fast bf16: {m['fast_bf16']}, {m['date']}. Compare within "
             "a trial: its runs saw the same machine, one after another.", "",
             f"Cold start (fresh cache): first output after "
             f"{result['cold_first_output_seconds']:.1f} s, whole run "
             f"{result['cold_seconds']:.1f} s."]
    for i, row in enumerate(dict(r) for r in result["trials"]):
        limit = row.pop("model alone (convert's engine, same inputs)")
        model_rate = limit["images"] / limit["seconds"]
        ours = row["animegan convert (defaults), PNG"]["wall_seconds"]
        lines += ["", f"Trial {i}: model alone ({limit['engine']}, shapes "
                  f"{', '.join('x'.join(map(str, s)) for s in limit['shapes'])}): "
                  f"{model_rate:.2f} img/s.", "",
                  "| run | seconds | img/s | convert PNG vs it | % of model-only rate "
                  "| first output (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
        for name, r in row.items():
            rate = result["images"] / r["wall_seconds"]
            lines.append(f"| {name} | {r['wall_seconds']:.1f} | {rate:.2f} "
                         f"| {r['wall_seconds'] / ours:.2f}x | {rate / model_rate:.0%} "
                         f"| {r['first_output_seconds']:.1f} | {r['peak_rss_mb']} |")
        timing = row["animegan convert (defaults), PNG"]["stderr"]
        lines += ["", "convert's own timing line (PNG):", "", *[f"    {t}" for t in timing]]
    return "\n".join(lines) + "\n"


def check_same_sizes(a: Path, b: Path) -> None:
    """Both sides must produce the same pixel counts, or the comparison is unfair."""
    sizes_a = {p.stem: Image.open(p).size for p in a.iterdir()}
    sizes_b = {p.stem: Image.open(p).size for p in b.iterdir() if not p.name.startswith(".")}
    if sizes_a != sizes_b:
        differ = sorted(k for k in sizes_a if sizes_a[k] != sizes_b.get(k))
        raise RuntimeError(f"output sizes differ: {differ}")


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
    parser.add_argument("what", choices=["all", "table", "e2e", "quality", "cell", "naive",
                                         "ovloop", "model"])
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
    parser.add_argument("--count", type=int, default=25,
                        help="photos for quality; e2e makes this many mixed-shape ones (64)")
    parser.add_argument("--static", action="store_true", help="ovloop: a model per shape")
    parser.add_argument("--ext", default="png", help="naive/ovloop: output format")
    parser.add_argument("--shape", type=parse_shape)
    parser.add_argument("--backend")
    parser.add_argument("--precision")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--name", help="e2e results file stem (default end_to_end)")
    args = parser.parse_args()
    if args.what == "cell":
        table_cell(args)
    elif args.what == "naive":
        naive_loop(args)
    elif args.what == "ovloop":
        openvino_loop(args)
    elif args.what == "model":
        model_only(args)
    if args.what in ("all", "table"):
        result = run_table(args)
        save("batch_table", result, table_markdown(result))
    if args.what in ("all", "e2e"):
        result = run_e2e(args)
        save(args.name or "end_to_end", result, e2e_markdown(result))
    if args.what in ("all", "quality"):
        result = run_quality(args)
        save("quality", result, quality_markdown(result))


if __name__ == "__main__":
    main()
