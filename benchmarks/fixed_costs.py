"""The fixed costs of a run (issue 27): start-up of small runs, where decoder processes pay,
and compile time. Every contender is a whole `animegan convert` process; the style's
OpenVINO IR is cached first (one untimed run), as on every run after a checkpoint's first.

    PYTHONPATH=. python benchmarks/fixed_costs.py small --photos ../shared/photos --trials 5
    PYTHONPATH=. python benchmarks/fixed_costs.py crossover --photos ../shared/photos \\
        --counts 8,16,32,48,64 --trials 3
    PYTHONPATH=. python benchmarks/fixed_costs.py compiles --photos ../shared/photos --trials 3

``small``: 3 photos of 3 shapes, `convert` defaults, against the model-only time of those
images (their engine, each shape compiled before timing; done when wall <= model + 0.7 s).
``crossover``: N photos of three shapes decoded on a thread of the run's own process
(decoding.IN_PROCESS_MAX_IMAGES large) against decoder processes (it set to 0), alternating;
the smallest N where the processes win is the crossover. ``compiles``: the photos folder as
it is (25 photos, 17 model inputs at --size 512) with -v: compile count and seconds (the
last "(N compiles, X s in all)" line) and wall, for today's static shapes without the model
cache, with it cold and warm, and --shapes hybrid. Results: benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peak  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TOTALS = re.compile(r"\((\d+) compiles, ([\d.]+) s in all\)")

# argv[1]: decoding.IN_PROCESS_MAX_IMAGES, argv[2]: "0" turns OpenVINO's model cache off;
# the rest is the command line. Prints the heavy modules the run imported.
HARNESS = """
import json, sys
from animegan_cli.pipeline import decoding
from animegan_cli.engines import openvino_engine
decoding.IN_PROCESS_MAX_IMAGES = int(sys.argv[1])
if sys.argv[2] == "0":
    openvino_engine.MODEL_CACHE_BYTES = 0
from animegan_cli.cli.app import main
try:
    main(sys.argv[3:], prog_name="animegan", standalone_mode=False)
except SystemExit:
    pass
print("HEAVY " + json.dumps([m for m in ("torch", "openvino") if m in sys.modules]))
"""

MODEL_ONLY = """
import json, sys, time
from pathlib import Path
from animegan_cli import Stylizer
s = Stylizer.load(weights=sys.argv[1], size=int(sys.argv[2]))
items = [s.prepare(p) for p in sorted(Path(sys.argv[3]).iterdir())]
for item in items:
    s.run([item])  # each shape compiled (and warm) before timing
started = time.perf_counter()
for item in items:
    s.run([item])
print(json.dumps({"seconds": time.perf_counter() - started, "images": len(items)}))
"""


def convert(photos: Path, out: Path, weights: Path, size: int, in_process_max: int = 32,
            cache: bool = True, extra: tuple[str, ...] = ()) -> dict[str, object]:
    """One timed `animegan convert` process: wall seconds, compile totals, heavy imports."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", HARNESS, str(in_process_max), "1" if cache else "0",
           "convert", str(photos), "-o", str(out), "--weights", str(weights),
           "--size", str(size), "-v", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    totals = [TOTALS.search(line) for line in done.stderr.splitlines()]
    last = [m for m in totals if m][-1:] or None
    heavy = next(line for line in done.stdout.splitlines() if line.startswith("HEAVY "))
    return {"wall": wall,
            "compiles": int(last[0].group(1)) if last else 0,
            "compile_seconds": float(last[0].group(2)) if last else 0.0,
            "imported": json.loads(heavy[6:])}


def model_only(photos: Path, weights: Path, size: int) -> float:
    done = subprocess.run([sys.executable, "-c", MODEL_ONLY, str(weights), str(size),
                           str(photos)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def three_shapes(source: Path, folder: Path, count: int) -> Path:
    import bench

    return bench.mixed_photos(source, folder, count)


def small(args: argparse.Namespace, work: Path) -> dict[str, object]:
    photos = three_shapes(args.photos, work / "three", 3)
    convert(photos, work / "warm", args.weights, args.size)  # the IR cached, caches warm
    trials = []
    for _ in range(args.trials):
        run = convert(photos, work / "out", args.weights, args.size)
        trials.append({**run, "model_only": model_only(photos, args.weights, args.size)})
    return {"small": trials}


def crossover(args: argparse.Namespace, work: Path) -> dict[str, object]:
    rows = []
    for count in [int(c) for c in args.counts.split(",")]:
        photos = three_shapes(args.photos, work / f"n{count}", count)
        convert(photos, work / "warm", args.weights, args.size)
        for trial in range(args.trials):
            for label, limit in (("thread", 10**9), ("processes", 0)):
                run = convert(photos, work / "out", args.weights, args.size, limit)
                rows.append({"images": count, "decoding": label, "trial": trial, **run})
    return {"crossover": rows}


def compiles(args: argparse.Namespace, work: Path) -> dict[str, object]:
    compiled = Path(os.environ["XDG_CACHE_HOME"]) / "animegan" / "openvino" / "compiled"
    convert(args.photos, work / "warm", args.weights, args.size)  # the IR cached
    rows = []
    contenders = (("static, no model cache (before)", False, (), False),
                  ("static, model cache cold", True, (), True),
                  ("static, model cache warm", True, (), False),
                  ("hybrid, model cache cold", True, ("--shapes", "hybrid"), True),
                  ("hybrid, model cache warm", True, ("--shapes", "hybrid"), False))
    for trial in range(args.trials):
        for label, cache, extra, cold in contenders:
            if cold:
                shutil.rmtree(compiled, ignore_errors=True)
            run = convert(args.photos, work / "out", args.weights, args.size, cache=cache,
                          extra=extra)
            rows.append({"contender": label, "trial": trial, **run})
    return {"compiles": rows}


def markdown(result: dict[str, object], args: argparse.Namespace) -> str:
    lines = [f"# fixed costs: {args.what} ({peak.cpu_name()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"`python benchmarks/fixed_costs.py {' '.join(sys.argv[1:])}`", ""]
    if "small" in result:
        lines += ["| trial | convert wall s | model-only s | wall - model s | torch imported |",
                  "|---|---|---|---|---|"]
        for i, r in enumerate(result["small"]):  # type: ignore[attr-defined]
            lines.append(f"| {i} | {r['wall']:.2f} | {r['model_only']:.2f} "
                         f"| {r['wall'] - r['model_only']:+.2f} | {'torch' in r['imported']} |")
    for key, group in (("crossover", ("images", "decoding")), ("compiles", ("contender",))):
        if key not in result:
            continue
        lines += [f"| {' | '.join(group)} | trial | wall s | compiles | compile s |",
                  "|" + "---|" * (len(group) + 4)]
        for r in result[key]:  # type: ignore[attr-defined]
            cells = " | ".join(str(r[g]) for g in group)
            lines.append(f"| {cells} | {r['trial']} | {r['wall']:.2f} | {r['compiles']} "
                         f"| {r['compile_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["small", "crossover", "compiles"])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=ROOT.parent / "random.pt")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--counts", default="8,16,32,48,64")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Its own cache folder: the IR and the model cache start empty, nothing else shared.
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        result = {"small": small, "crossover": crossover, "compiles": compiles}[args.what](
            args, work)
    text = markdown(result, args)
    print(text)
    name = args.name or f"fixed_costs_{args.what}_{time.strftime('%Y-%m-%d')}_{peak.cpu_tag()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
