"""SIGKILL real `convert` runs at random moments, then rerun: nothing half-written, nothing lost.

Each trial starts a run into OUT, kills it after a random delay, and checks that every
output file decodes in full and which temp files were left. A last run must convert
exactly the images still missing and leave no temp file. For example:
    python benchmarks/kill_trials.py PHOTOS OUT --weights face_paint_512_v2.pt --trials 10
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from animegan_cli.media.outputs import TEMP_PREFIX


def complete_outputs(out: Path) -> set[str]:
    """Names of the output files, each decoded in full (raises on a partial file)."""
    names = set()
    for path in out.glob("*") if out.exists() else []:
        if not path.name.startswith("."):
            with Image.open(path) as img:
                img.load()
            names.add(path.name)
    return names


def temp_files(out: Path) -> list[str]:
    """Names of temp files left in the output folder."""
    return [p.name for p in out.glob(TEMP_PREFIX + "*")] if out.exists() else []


def main() -> None:
    """Run the trials and print one line per trial and one for the final rerun."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--size", default="512")
    parser.add_argument("--min-delay", type=float, default=2.5)
    parser.add_argument("--max-delay", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    command = [sys.executable, "-m", "animegan_cli", "convert", str(args.photos), "-o",
               str(args.out), "--weights", str(args.weights), "--size", args.size,
               "--format", "png", "--json"]
    everything = {p.stem + ".png" for p in args.photos.glob("*.jpg")}
    rng = random.Random(args.seed)
    for trial in range(1, args.trials + 1):
        before = complete_outputs(args.out)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        delay = rng.uniform(args.min_delay, args.max_delay)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        after = complete_outputs(args.out)
        print(f"trial {trial}: killed at {delay:.1f} s, exit {proc.returncode}, outputs "
              f"{len(before)} -> {len(after)}, all whole; temp files left "
              f"{len(temp_files(args.out))}; removed earlier ones: "
              f"{'left by an interrupted run' in stderr}", flush=True)
        if after == everything:
            break
    before, leftovers = complete_outputs(args.out), temp_files(args.out)
    rerun = subprocess.run(command, capture_output=True, text=True)
    records = [json.loads(line) for line in rerun.stdout.splitlines()]
    converted = {Path(r["output"]).name for r in records if r["status"] == "converted"}
    print(f"rerun: exit {rerun.returncode}; found {len(before)} outputs and {len(leftovers)} "
          f"temp files; converted {len(converted)}, exactly the missing ones: "
          f"{converted == everything - before}; complete: "
          f"{complete_outputs(args.out) == everything}; temp files left: "
          f"{len(temp_files(args.out))}")


if __name__ == "__main__":
    main()
