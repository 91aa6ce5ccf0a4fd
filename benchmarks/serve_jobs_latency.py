"""Single-request latency while a big job runs, run by hand (never in CI): issue 28's bound.

    python benchmarks/serve_jobs_latency.py --photos ../shared/photos --size 512

One server (result cache off, its job store in a temp folder). One client sends single
photos to POST /animeify one after another, `--requests` times, with `--pause` seconds
between them:
1. on the idle server;
2. while a job of `--job-images` photos runs (submitted first; the phase is valid only if
   the job is still running when its last request is answered: the script says so).
Reported: p50/p95/p99/max latency of each phase, the loaded/idle p99 ratio (the issue asks
for at most 2), the job's progress during the phase and its own rate afterwards.
Results go to benchmarks/results/serve_jobs_latency_<date>_<machine>.md and .json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GOLDEN = ROOT.parent / "shared" / "spec" / "golden" / "golden_generator.pt"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: list[str], data_dir: Path, job_images: int) -> tuple[subprocess.Popen,
                                                                              str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "animegan_cli", "serve", *model, "--port", str(port),
         "--cache-mb", "0", "--data-dir", str(data_dir), "--max-job-files", str(job_images),
         "--max-inflight-mb", "2048", "--jobs-disk-mb", "16384"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("server did not become ready")


def load_photos(folder: Path | None, count: int, synthetic: str) -> list[tuple[str, bytes]]:
    """JPEG/PNG photos from ``folder``, or generated ones of ``synthetic`` (WxH) size."""
    if folder is not None and folder.is_dir():
        paths = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        if paths:
            return [(p.name, p.read_bytes()) for p in paths]
    from PIL import Image

    width, height = (int(v) for v in synthetic.split("x"))
    rng = np.random.default_rng(0)
    photos = []
    for i in range(count):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
        photos.append((f"synthetic{i}.jpg", buffer.getvalue()))
    return photos


def latencies(client: httpx.Client, photos: list[tuple[str, bytes]], requests: int,
              pause: float) -> list[float]:
    """Seconds per single /animeify request, one at a time (a 503 is retried, and counted)."""
    seconds = []
    for i in range(requests):
        name, data = photos[i % len(photos)]
        started = time.perf_counter()
        while True:
            reply = client.post("/animeify", files={"files": (name, data)})
            if reply.status_code != 503:
                break
            time.sleep(float(reply.headers.get("retry-after", 1)))
        reply.raise_for_status()
        seconds.append(time.perf_counter() - started)
        time.sleep(pause)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds)
    return {"n": len(seconds), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "p99": float(np.percentile(values, 99)),
            "max": float(values.max())}


def run_job_phase(client: httpx.Client, photos: list[tuple[str, bytes]], args: argparse.Namespace
                  ) -> dict[str, object]:
    """Submit the job, measure requests while it runs, then let it finish and time it."""
    files = [("files", (f"{i}-{photos[i % len(photos)][0]}", photos[i % len(photos)][1]))
             for i in range(args.job_images)]
    submitted = time.perf_counter()
    reply = client.post("/jobs", files=files)
    reply.raise_for_status()
    url = reply.json()["url"]
    while client.get(url).json()["state"] == "queued":
        time.sleep(0.1)
    loaded = latencies(client, photos, args.requests, args.pause)
    during = client.get(url).json()
    while (state := client.get(url).json())["state"] in ("queued", "running"):
        time.sleep(0.5)
    job_seconds = time.perf_counter() - submitted
    return {"loaded": summary(loaded), "job_running_at_end": during["state"] == "running",
            "job_done_at_end": during["counts"]["done"], "job_state": state["state"],
            "job_done": state["counts"]["done"], "job_seconds": job_seconds,
            "job_rate": state["counts"]["done"] / job_seconds}


def report(result: dict, args: argparse.Namespace) -> str:
    idle, loaded = result["idle"], result["loaded"]
    lines = [f"# serve: /animeify latency while a {args.job_images}-image job runs",
             "", f"`{' '.join(sys.argv)}`", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {os.cpu_count()} CPUs. "
             f"{args.note}", "",
             "| phase | requests | p50 s | p95 s | p99 s | max s |", "|---|---|---|---|---|---|"]
    for name, row in (("idle", idle), ("job running", loaded)):
        lines.append(f"| {name} | {row['n']} | {row['p50']:.3f} | {row['p95']:.3f} | "
                     f"{row['p99']:.3f} | {row['max']:.3f} |")
    ratio = loaded["p99"] / idle["p99"]
    valid = "yes" if result["job_running_at_end"] else "NO: raise --job-images"
    lines += ["", f"- p99 loaded / idle: **{ratio:.2f}x** (the issue's bound: 2x)",
              f"- job still running when the last request was answered: {valid} "
              f"({result['job_done_at_end']} of {args.job_images} done then)",
              f"- the job: {result['job_state']}, {result['job_done']} done in "
              f"{result['job_seconds']:.1f} s ({result['job_rate']:.2f} img/s, requests "
              "included)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--synthetic", default="640x480",
                        help="WxH of generated photos when --photos has none")
    parser.add_argument("--count", type=int, default=16, help="distinct photos used")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--weights", type=Path, default=GOLDEN)
    parser.add_argument("--engine", default="", help="extra serve flags, e.g. '--backend torch'")
    parser.add_argument("--job-images", type=int, default=200)
    parser.add_argument("--requests", type=int, default=100, help="single requests per phase")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between requests")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="a line about the machine (e.g. quiet)")
    args = parser.parse_args()
    photos = load_photos(args.photos, args.count, args.synthetic)
    model = ["--weights", str(args.weights), "--size", str(args.size), *args.engine.split()]
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = start_server(model, Path(data_dir), args.job_images)
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                idle = summary(latencies(client, photos, args.requests, args.pause))
                result = {"idle": idle, **run_job_phase(client, photos, args)}
        finally:
            process.terminate()
            process.wait(60)
    text = report(result, args)
    print(text)
    stem = f"serve_jobs_latency_{time.strftime('%Y-%m-%d')}_{platform.node() or 'machine'}"
    out = args.out or RESULTS / f"{stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args) | {
        "photos": str(args.photos), "weights": str(args.weights),
        "out": str(args.out)}, **result}, indent=2))


if __name__ == "__main__":
    main()
