"""Cost of an up-to-date re-run, and the saving from identical inputs (run by hand).

    PYTHONPATH=. python benchmarks/noop_rerun.py [--files 10000] [--repeat 3]

1. Writes N distinct 16x16 PNGs in 100 folders and converts them once at --size 8 with a
   random checkpoint (the pixels do not matter; every output gets a real record).
2. Times, best and median of --repeat runs, with a warm page cache:
   listing (discover_inputs, and `find | wc -l`), a no-op re-run in hash mode and with
   --trust-mtime, each in-process (convert()) and as a fresh `python -m animegan_cli`
   process (which adds interpreter start-up, but no torch import: nothing is styled), and
   `python -c pass`, so that the table says each process's start-up beyond Python's own
   (issue 11's target: under 0.5 s for `--version` and a no-op re-run of 1,000 photos).
3. Times 20 images at --size 256: 20 distinct, then 10 distinct + 10 identical copies.

Writes benchmarks/results/noop_rerun.{json,md} and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animegan_cli.media.inputs import discover_inputs
from animegan_cli.media.outputs import plan_outputs
from animegan_cli.model.generator import Generator
from animegan_cli.pipeline.convert import ConvertOptions, convert

RESULTS = Path(__file__).resolve().parent / "results"
PYTHON_ALONE = "Python doing nothing (python -c pass)"
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(rows: dict[str, Callable[[], object]], repeat: int) -> dict[str, dict[str, float]]:
    """Best and median wall time, and best CPU time, of each row; rows take turns, so that
    load from other processes on a shared machine falls on all of them alike. CPU time
    hardly depends on that load: on a busy machine it is the figure to compare."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, fn in rows.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
    return {
        name: {"best_s": min(t), "median_s": statistics.median(t), "best_cpu_s": min(cpu[name])}
        for name, t in times.items()
    }


def make_inputs(folder: Path, count: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"album{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"IMG_{i:05d}.png")


def make_photos(folder: Path, count: int, distinct: int) -> None:
    """``count`` 320x240 photos of which only ``distinct`` have different bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    for i in range(count):
        if i < distinct:
            base = np.stack([xx / 319, yy / 239, (xx + yy) / 558], axis=-1)
            noise = rng.normal(0, 0.08, base.shape)
            array = (np.clip(base * (0.5 + i / (2 * distinct)) + noise, 0, 1) * 255)
            Image.fromarray(array.astype(np.uint8)).save(folder / f"{i:02d}.jpg", quality=92)
        else:
            shutil.copyfile(folder / f"{i % distinct:02d}.jpg", folder / f"{i:02d}.jpg")


def dup_options(work: Path, name: str, checkpoint: Path, count: int, distinct: int,
                threads: int) -> ConvertOptions:
    folder = work / f"dup-{name}"
    make_photos(folder, count, distinct)
    return ConvertOptions(inputs=[str(folder)], output=work / f"dup-{name}-out",
                          weights=checkpoint, size=256, num_workers=1, threads=threads)


def cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "animegan_cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dup-turns", type=int, default=3)
    parser.add_argument("--name", default="noop_rerun",
                        help="results file stem, e.g. noop_rerun_2026-12-01_xeon_amx_loaded")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="animegan-bench-"))
    try:
        results = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (RESULTS / f"{args.name}.md").write_text(table)
    print(table)


def run(work: Path, args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    checkpoint = work / "random.pt"
    torch.save(Generator().state_dict(), checkpoint)
    photos, out = work / "photos", work / "out"
    start = time.perf_counter()
    make_inputs(photos, args.files, 16)
    made = time.perf_counter() - start

    base = ConvertOptions(inputs=[str(photos)], output=out, weights=checkpoint, size=8,
                          batch_size=64, num_workers=1, threads=args.threads)
    start = time.perf_counter()
    first = convert(base)
    seed_s = time.perf_counter() - start
    assert first.converted == args.files, first

    def noop(**kw: object) -> Callable[[], None]:
        def go() -> None:
            summary = convert(ConvertOptions(**{**base.__dict__, **kw}))
            assert (summary.converted, summary.skipped) == (0, args.files), summary
        return go

    flags = ["convert", str(photos), "-o", str(out), "--weights", str(checkpoint),
             "--size", "8", "--quiet"]
    rows = timed({
        "listing: discover_inputs()": lambda: discover_inputs([str(photos)], exclude=out),
        "listing + output names: plan_outputs(discover_inputs())":
            lambda: plan_outputs(discover_inputs([str(photos)], exclude=out), out),
        "listing: find | wc -l": lambda: subprocess.run(
            f"find {photos} -type f | wc -l", shell=True, check=True, capture_output=True),
        "no-op re-run, hash mode: convert()": noop(),
        "no-op re-run, --trust-mtime: convert()": noop(trust_mtime=True),
        "no-op re-run, hash mode: CLI process": lambda: cli(*flags),
        "no-op re-run, --trust-mtime: CLI process": lambda: cli(*flags, "--trust-mtime"),
        "CLI process doing nothing (animegan --version)": lambda: cli("--version"),
        PYTHON_ALONE: lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
    }, args.repeat)

    # 20 photos at --size 256: all distinct, or 10 distinct plus an identical copy of each.
    # A warm-up run first (kernel selection, worker start-up), then the two cases take turns.
    if args.dup_turns:
        convert(dup_options(work, "warm", checkpoint, 4, 4, args.threads))
    seconds: dict[int, list[float]] = {20: [], 10: []}
    counts: dict[int, tuple[int, int]] = {}
    for turn in range(args.dup_turns):
        for distinct in (20, 10):
            opts = dup_options(work, f"{distinct}-{turn}", checkpoint, 20, distinct, args.threads)
            start = time.perf_counter()
            summary = convert(opts)
            seconds[distinct].append(time.perf_counter() - start)
            counts[distinct] = (summary.converted, summary.reused)
    duplicates = {} if not args.dup_turns else {
        f"20 images, {d} distinct": {"best_s": min(seconds[d]),
                                     "median_s": statistics.median(seconds[d]),
                                     "all_s": seconds[d], "converted": counts[d][0],
                                     "reused": counts[d][1]}
        for d in (20, 10)
    }
    return {
        "files": args.files,
        "make_inputs_s": made,
        "initial_convert_s": seed_s,
        "rows": rows,
        "duplicates": duplicates,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, threads {args.threads}",
    }


def markdown(results: dict[str, object]) -> str:
    lines = [
        f"No-op re-run over {results['files']} inputs (16x16 PNG, 100 folders), warm cache, "
        f"best/median of runs; {results['machine']}. Initial conversion at --size 8, "
        f"batch 64: {results['initial_convert_s']:.1f} s.",
        "",
        "| what | best | median | CPU (best) | process start-up beyond Python's: wall, CPU |",
        "|---|---|---|---|---|",
    ]
    rows = results["rows"]
    python = rows[PYTHON_ALONE]  # type: ignore[index]
    for name, row in rows.items():  # type: ignore[union-attr]
        beyond = (f"{row['best_s'] - python['best_s']:.3f} s, "
                  f"{row['best_cpu_s'] - python['best_cpu_s']:.3f} s" if "process" in name else "")
        lines.append(f"| {name} | {row['best_s']:.3f} s | {row['median_s']:.3f} s "
                     f"| {row['best_cpu_s']:.3f} s | {beyond} |")
    dup = results["duplicates"]
    if not dup:  # --dup-turns 0
        return "\n".join(lines) + "\n"
    lines += ["", "| duplicates (--size 256) | best | median | written | styled by the model |",
              "|---|---|---|---|---|"]
    for name, row in dup.items():  # type: ignore[union-attr]
        styled = row["converted"] - row["reused"]
        lines.append(f"| {name} | {row['best_s']:.2f} s | {row['median_s']:.2f} s | "
                     f"{row['converted']} | {styled} |")
    full, half = (row["best_s"] for row in dup.values())  # type: ignore[union-attr]
    lines += ["", f"Duplicate saving (best times): {full - half:.2f} s of {full:.2f} s "
              f"({(full - half) / full:.0%}) with 10 identical copies among 20 images."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
