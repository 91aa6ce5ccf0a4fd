"""Two source trees of animegan, end to end, interleaved: wall time and identical outputs.

    python benchmarks/ab_trees.py --a ../base-main --b . --photos ../shared/photos \
        --weights random.pt --rounds 3 --name ab_2026-12-07_xeon_amx

Each round runs `convert PHOTOS -o TMP` once from tree A and once from tree B (in
alternating order, each in a fresh process with PYTHONPATH set to its tree, into an empty
output folder), so that a slow minute of a shared VM hits both. It reports each run's wall
time, the medians and the ratio B/A, and whether B's outputs are byte-identical to A's
(file by file). Run it on a quiet machine (nothing else running); never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU the numbers were measured on, as /proc/cpuinfo names it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run_tree(tree: Path, photos: Path, weights: Path, out: Path, extra: list[str]) -> float:
    """Wall seconds of one whole `convert` process from ``tree`` into an empty ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    command = [sys.executable, "-m", "animegan_cli", "convert", str(photos.resolve()),
               "-o", str(out),
               "--weights", str(weights.resolve()), "--quiet", *extra]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def same_outputs(a: Path, b: Path) -> tuple[int, int]:
    """(files byte-identical, files in A); a file missing from B counts as different."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()
                   and not p.name.startswith("."))
    same = sum((b / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes() for f in files)
    return same, len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="baseline source tree")
    parser.add_argument("--b", type=Path, required=True, help="candidate source tree")
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default=None, help="write results/<name>.json and .md")
    parser.add_argument("extra", nargs="*", help="more convert options, after --")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-trees-"))
    times: dict[str, list[float]] = {"a": [], "b": []}
    identical = (0, 0)
    for round_ in range(args.rounds):
        order = ("a", "b") if round_ % 2 == 0 else ("b", "a")
        for side in order:
            tree = args.a if side == "a" else args.b
            times[side].append(run_tree(tree, args.photos, args.weights, work / side, args.extra))
        identical = same_outputs(work / "a", work / "b")
        print(f"round {round_}: A {times['a'][-1]:.2f} s, B {times['b'][-1]:.2f} s, "
              f"identical {identical[0]}/{identical[1]}", flush=True)
    med_a, med_b = statistics.median(times["a"]), statistics.median(times["b"])
    result = {"cpu": cpu_name(), "a": str(args.a), "b": str(args.b), "photos": str(args.photos),
              "extra": args.extra, "seconds": times, "median_a": med_a, "median_b": med_b,
              "ratio_b_over_a": med_b / med_a, "identical": identical}
    lines = [f"# A/B of two trees, end to end ({result['cpu']})", "",
             f"`convert {args.photos} {' '.join(args.extra)}`, {args.rounds} interleaved rounds.",
             "", "| tree | runs (s) | median (s) |", "|---|---|---|",
             f"| A `{args.a}` | {', '.join(f'{t:.2f}' for t in times['a'])} | {med_a:.2f} |",
             f"| B `{args.b}` | {', '.join(f'{t:.2f}' for t in times['b'])} | {med_b:.2f} |", "",
             f"B/A = {med_b / med_a:.3f}; outputs byte-identical: {identical[0]} of "
             f"{identical[1]}"]
    print("\n".join(lines))
    if args.name:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
