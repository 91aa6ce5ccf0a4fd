"""Load test for `animegan serve`, run by hand (never in CI): clients, latency, 503s, RSS.

    python benchmarks/serve_load.py --photos ../shared/photos --size 256

1. K concurrent clients (1, 4, 16, 64), each sending single photos (at most --requests
   each, at most --seconds per level) to one server on 127.0.0.1: throughput, p50/p95/p99
   latency, errors and 503s, the server's peak RSS (VmHWM); then `animegan convert` on the
   same photos in the same run, for comparison.
2. Backpressure: 64 clients against --queue-size 8: every status, the server-side time of
   the 503s (Server-Timing), peak RSS, and one request after the storm.
3. The article's question: batch window (0, 50, 200 ms) x max batch (1, 4, 8), 16 clients.

The result cache is off (--cache-mb 0) so that repeated photos are computed. Results go to
benchmarks/results/serve_load_<date>_<machine>.md (and are printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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


class Server:
    """`animegan serve` in a subprocess, ready when /readyz says so."""

    def __init__(self, model: list[str], *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "animegan_cli", "serve", *model, "--port", port,
             "--cache-mb", "0", *args],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not become ready")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


def load(url: str, photos: list[tuple[str, bytes]], clients: int, requests: int,
         seconds: float) -> dict[str, object]:
    """K clients, each sending single photos until ``requests`` or ``seconds`` run out."""
    latencies: list[float] = []
    statuses: list[int] = []
    busy_ms: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as session:
            for i in range(requests):
                if time.monotonic() >= stop_at:
                    return
                name, data = photos[(k * requests + i) % len(photos)]
                start = time.perf_counter()
                try:
                    reply = session.post(url + "/animeify", files={"files": (name, data)})
                    status = reply.status_code
                except httpx.HTTPError:
                    status = 0
                    reply = None
                with lock:
                    statuses.append(status)
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
                    elif status == 503 and reply is not None:
                        busy_ms.append(float(reply.headers["server-timing"].split("dur=")[1]))
                if status == 503:
                    time.sleep(float(reply.headers.get("retry-after", 1)))  # as told

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ok = statuses.count(200)

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies else float("nan")

    return {"clients": clients, "ok": ok, "busy": statuses.count(503),
            "errors": len(statuses) - ok - statuses.count(503), "wall": wall,
            "throughput": ok / wall, "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "busy_ms": busy_ms, "other_5xx": sum(500 <= s < 600 and s != 503 for s in statuses)}


def convert_throughput(model: list[str], photos_dir: Path) -> tuple[float, str]:
    """`animegan convert` on the same photos: images per second, start-up excluded."""
    out = Path(tempfile.mkdtemp(prefix="serve-load-convert-"))
    try:
        run = subprocess.run(
            [sys.executable, "-m", "animegan_cli", "convert", str(photos_dir), "-o", str(out),
             *model, "-v", "--format", "png"], env=ENV, capture_output=True, text=True,
            check=True)
        summary = re.search(r"converted (\d+).* in ([\d.]+) s", run.stderr)
        startup = re.search(r"start-up ([\d.]+) s", run.stderr)
        count, seconds = int(summary.group(1)), float(summary.group(2))
        return count / (seconds - float(startup.group(1))), run.stderr.strip().splitlines()[-2]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def row(result: dict[str, object], *first: object) -> str:
    cells = [*first, f"{result['throughput']:.2f}", f"{result['p50']:.2f}",
             f"{result['p95']:.2f}", f"{result['p99']:.2f}", result["ok"], result["busy"],
             result["errors"]]
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEAD = "| img/s | p50 s | p95 s | p99 s | 200s | 503s | errors |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--count", type=int, default=16, help="photos used")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--weights", type=Path, default=GOLDEN)
    parser.add_argument("--clients", default="1,4,16,64")
    parser.add_argument("--requests", type=int, default=8, help="most requests per client")
    parser.add_argument("--seconds", type=float, default=20, help="most seconds per level")
    parser.add_argument("--windows", default="0,50,200")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--table-seconds", type=float, default=15)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="a line about the machine (e.g. shared)")
    args = parser.parse_args()

    chosen = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    chosen = chosen[: args.count]
    photos = [(p.name, p.read_bytes()) for p in chosen]
    photos_dir = Path(tempfile.mkdtemp(prefix="serve-load-photos-"))
    for p in chosen:
        shutil.copy(p, photos_dir / p.name)
    model = ["--weights", str(args.weights), "--size", str(args.size)]
    lines = [f"# serve load, {time.strftime('%Y-%m-%d')}", "",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores. {args.note}".strip(), "",
             f"{len(photos)} photos from {args.photos.name}/, --size {args.size}, "
             f"checkpoint {args.weights.name} (speed does not depend on the weights), "
             "--cache-mb 0. Command: `python benchmarks/serve_load.py "
             + " ".join(sys.argv[1:]) + "`", ""]

    lines += ["## Concurrent clients (defaults: --max-batch-size 1, --batch-wait-ms 0)", "",
              "| clients " + HEAD, "|---|---|---|---|---|---|---|---|"]
    server = Server(model)
    try:
        results = [load(server.url, photos, int(k), args.requests, args.seconds)
                   for k in args.clients.split(",")]
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    lines += [row(r, r["clients"]) for r in results]
    convert_rate, convert_line = convert_throughput(model, photos_dir)
    at16 = next((r for r in results if r["clients"] == 16), results[-1])
    lines += ["", f"Server peak RSS: {rss:.0f} MB. `animegan convert` on the same photos: "
              f"{convert_rate:.2f} img/s (start-up excluded; `{convert_line}`). "
              f"Serve at {at16['clients']} clients: {at16['throughput']:.2f} img/s = "
              f"{at16['throughput'] / convert_rate:.0%} of convert's, "
              f"{at16['errors']} failed requests.", ""]

    server = Server(model, "--queue-size", "8")
    try:
        storm = load(server.url, photos, 64, args.requests, args.seconds)
        after = httpx.post(server.url + "/animeify", files={"files": photos[0]}, timeout=120)
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    busy = storm["busy_ms"] or [float("nan")]
    lines += ["## 64 clients, --queue-size 8", "", "| clients " + HEAD,
              "|---|---|---|---|---|---|---|---|", row(storm, 64), "",
              f"Other 5xx: {storm['other_5xx']}; transport errors/hangs: "
              f"{storm['errors'] - storm['other_5xx']}. 503s answered in (server side) "
              f"p50 {np.percentile(busy, 50):.1f} ms, p99 {np.percentile(busy, 99):.1f} ms, "
              f"max {max(busy):.1f} ms. Peak RSS {rss:.0f} MB. A request afterwards: "
              f"{after.status_code}.", ""]

    lines += [f"## Batch window x max batch ({16} clients, {args.table_seconds:g} s each)", "",
              "| window ms | max batch " + HEAD, "|---|---|---|---|---|---|---|---|---|"]
    for window in args.windows.split(","):
        for batch in args.batches.split(","):
            server = Server(model, "--batch-wait-ms", window, "--max-batch-size", batch)
            try:
                result = load(server.url, photos, 16, 1000, args.table_seconds)
            finally:
                server.stop()
            lines.append(row(result, window, batch))
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or RESULTS / f"serve_load_{time.strftime('%Y-%m-%d')}.md"
    out.write_text(text)
    shutil.rmtree(photos_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
