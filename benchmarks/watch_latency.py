"""Latency of `animegan watch`: from a file's last write to its styled output (run by hand).

    PYTHONPATH=. python benchmarks/watch_latency.py [--drops 50] [--size 512] [--settle 1.0]

1. Writes a random-weight checkpoint and times one model run of one photo-sized image
   (--width x --height, --size) in this process: the median of 5 after a warm-up.
2. Starts `python -m animegan_cli watch IN -o OUT --json` on temp folders and waits for it
   to watch; then drops --drops distinct JPEGs into IN one at a time (each written with
   open/write/close; the next only once the last one's output is reported), timing each from
   the end of its write to its JSON line on the watch's stdout.
3. Prints the median and worst latency and the bound issue 26 sets: settle + one model run
   + 0.5 s. Writes benchmarks/results/watch_latency.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animegan_cli.model.generator import Generator

RESULTS = Path(__file__).resolve().parent / "results" / "watch_latency.json"


def _photo(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, "JPEG", quality=90)
    return encoded.getvalue()


def _model_run_seconds(checkpoint: Path, size: int, image: bytes) -> float:
    from animegan_cli import Stylizer

    stylizer = Stylizer.load(weights=checkpoint, size=size)
    stylizer.stylize([image])  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        stylizer.stylize([image])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _start_watch(folder: Path, args: argparse.Namespace, checkpoint: Path
                 ) -> tuple[subprocess.Popen[str], queue.Queue[tuple[float, dict]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "animegan_cli", "watch", str(folder / "in"), "-o",
         str(folder / "out"), "--weights", str(checkpoint), "--size", str(args.size),
         "--settle", str(args.settle), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[tuple[float, dict]] = queue.Queue()
    ready = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.time(), json.loads(line)))

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "watching" in line:
                ready.set()
            sys.stderr.write(line)

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise SystemExit("watch did not start")
    return proc, lines


def _drop(folder: Path, index: int, image: bytes, lines: queue.Queue[tuple[float, dict]]
          ) -> float:
    name = f"drop{index:03d}.jpg"
    with open(folder / "in" / name, "wb") as f:
        f.write(image)
    written = time.time()  # the end of its last write (the close included)
    while True:
        received, record = lines.get(timeout=120)
        if Path(record["input"]).name == name:
            if record["status"] != "converted":
                raise SystemExit(f"{name}: {record}")
            return received - written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").mkdir()
        checkpoint = folder / "random.pt"
        torch.manual_seed(0)
        torch.save(Generator().state_dict(), checkpoint)
        images = [_photo(args.width, args.height, seed) for seed in range(args.drops)]
        model_run = _model_run_seconds(checkpoint, args.size, images[0])
        proc, lines = _start_watch(folder, args, checkpoint)
        try:
            latencies = [_drop(folder, i, image, lines) for i, image in enumerate(images)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    bound = args.settle + model_run + 0.5
    result = {"drops": args.drops, "size": args.size, "settle": args.settle,
              "image": f"{args.width}x{args.height}", "model_run_s": round(model_run, 3),
              "median_s": round(statistics.median(latencies), 3),
              "worst_s": round(max(latencies), 3), "bound_s": round(bound, 3),
              "within_bound": max(latencies) <= bound, "cpus": os.cpu_count()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"latency over {args.drops} drops: median {result['median_s']} s, worst "
          f"{result['worst_s']} s; bound (settle {args.settle} + one model run "
          f"{result['model_run_s']} + 0.5) {result['bound_s']} s: "
          f"{'within' if result['within_bound'] else 'OVER'}")


if __name__ == "__main__":
    main()
