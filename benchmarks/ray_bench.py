"""convert --ray against a plain convert on the same photos: throughput, overhead, a model.

    python benchmarks/ray_bench.py --photos ../shared/photos --count 64 --size 512

Runs, in this order and on copies of the first COUNT photos (repeated when there are
fewer): a plain ``convert``; then on one local Ray (``ray.init(num_cpus=CPUS)``)
``--ray`` with 1 actor x CPUS threads and with CPUS actors x 1 thread, and Ray's own cost
per row with a model-free actor; then the plain ``convert`` again. Each run writes a
fresh output folder. Steady throughput is measured between the first and the last
converted image (start-up apart: Ray, actor start and model load are reported
separately). The scaling model at the end is arithmetic on these figures, not a
measurement. Results go to benchmarks/results/ray_<date>_<label>.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegan_cli.pipeline.convert import ConvertOptions, convert  # noqa: E402
from animegan_cli.pipeline.results import ConvertEvents  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOLDEN = ROOT.parent / "shared" / "spec" / "golden" / "golden_generator.pt"
# Shared-storage bandwidths the model is evaluated at (bytes/s): 1 GbE NFS, 10 GbE, a fast
# parallel file system.
BANDWIDTHS = [("1 GbE NFS", 110e6), ("10 GbE NFS", 1.1e9), ("parallel FS", 5e9)]
NODES = [1, 4, 16, 64, 256, 1024, 4096]
OVERHEAD_ROWS = 200  # rows through a model-free actor: what Ray itself costs per image


def cpu_name() -> str:
    """The CPU model, and "Xeon AMX" when it has AMX/AVX512-BF16."""
    text = Path("/proc/cpuinfo").read_text()
    name = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("model name"))
    amx = "amx_bf16" in text or "avx512_bf16" in text
    return f"{name}{' (AMX/AVX512-BF16: Xeon AMX)' if amx else ''}, {os.cpu_count()} cores"


def copy_photos(source: Path, count: int, into: Path) -> Path:
    """COUNT photos in a fresh folder (repeated with distinct bytes' names when short)."""
    photos = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    into.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        data = photo.read_bytes()
        if i >= len(photos):  # a repeat must not be an identical input (styled once)
            data += i.to_bytes(4, "little")  # bytes after the image's end: ignored by decoders
        (into / f"{i:03d}_{photo.name}").write_bytes(data)
    return into


def timed_run(options: ConvertOptions) -> dict[str, float]:
    """One convert run: wall time, start-up, steady images/s, the engine it used."""
    stamps: list[float] = []

    def on_result(result) -> None:
        if result.status == "converted":
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    summary = convert(options, ConvertEvents(on_result=on_result))
    wall = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {"wall": wall, "first": stamps[0] - start if stamps else 0.0, "steady": steady,
            "converted": summary.converted, "failed": summary.failed, "engine": summary.engine}


def measure(args: argparse.Namespace, work: Path) -> tuple[list[tuple[str, dict]], Path, float]:
    photos = copy_photos(args.photos, args.count, work / "in")
    base = dict(inputs=[str(photos)], weights=GOLDEN, size=args.size)
    runs = [("plain convert", timed_run(ConvertOptions(output=work / "plain", **base)))]
    print(runs[-1], flush=True)
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=128 << 20,
             log_to_driver=False, configure_logging=False)
    try:
        for actors, threads in [(1, args.cpus), (args.cpus, 1)]:
            label = f"--ray: {actors} actor(s) x {threads} thread(s)"
            options = ConvertOptions(output=work / f"ray{actors}", ray="local", threads=threads,
                                     **base)
            runs.append((label, timed_run(options)))
            print(runs[-1], flush=True)
        overhead = ray_overhead(ray, OVERHEAD_ROWS)
    finally:
        ray.shutdown()
    # Again at the end: on a shared machine the load moves; the two plain runs bracket it.
    runs.append(("plain convert, again", timed_run(ConvertOptions(output=work / "plain2",
                                                                   **base))))
    print(runs[-1], overhead, flush=True)
    return runs, photos, overhead


class _Echo:
    """An actor that does no work: the pipeline's own cost per row (a work item's size)."""

    def __call__(self, batch):
        return {"status": [b"x" * 200 for _ in batch["work"]]}


def ray_overhead(ray, rows: int) -> float:
    """Seconds per row that from_items -> map_batches(actor pool) -> iter_rows costs."""
    items = [{"work": b"w" * 600} for _ in range(rows)]  # a pickled work item's size
    dataset = ray.data.from_items(items, override_num_blocks=rows).map_batches(
        _Echo, batch_size=1, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1))
    first = None
    for _ in dataset.iter_rows():
        first = first or time.perf_counter()
    assert first is not None
    return (time.perf_counter() - first) / (rows - 1)


def scaling_model(per_node: float, bytes_per_image: float) -> list[str]:
    """images/s for N nodes: N x the one-node rate, capped by what shared storage moves."""
    lines = ["| nodes | compute bound (img/s) | " + " | ".join(
        f"{name} cap ({bw / bytes_per_image:.0f} img/s)" for name, bw in BANDWIDTHS) + " |",
        "|---|---|" + "---|" * len(BANDWIDTHS)]
    for n in NODES:
        compute = n * per_node
        capped = [f"{min(compute, bw / bytes_per_image):.1f}" for _, bw in BANDWIDTHS]
        lines.append(f"| {n} | {compute:.1f} | " + " | ".join(capped) + " |")
    return lines


def report(args: argparse.Namespace, runs: list[tuple[str, dict]], photos: Path,
           work: Path, overhead: float) -> str:
    plain = runs[0][1]
    inputs = sum(p.stat().st_size for p in photos.iterdir()) / args.count
    outputs = sum(p.stat().st_size for p in (work / "plain").glob("*.*")) / args.count
    lines = [
        f"# convert --ray vs plain convert ({datetime.date.today()})", "",
        f"CPU: {cpu_name()}. {args.label}", "",
        f"Command: `python benchmarks/ray_bench.py --count {args.count} --size {args.size} "
        f"--cpus {args.cpus}` on the first {args.count} photos of {args.photos.name}/ "
        f"(golden random-weight checkpoint: speed does not depend on the weights).", "",
        "| run | wall (s) | first output (s) | steady img/s | s/img | overhead per image vs "
        "plain | engine |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in runs:
        per = 1 / r["steady"] if r["steady"] else float("nan")
        over = (per * plain["steady"] - 1) * 100 if plain["steady"] else float("nan")
        lines.append(f"| {label} | {r['wall']:.1f} | {r['first']:.1f} | {r['steady']:.3f} | "
                     f"{per:.3f} | {over:+.1f}% | {r['engine']} |")
    best = max(r["steady"] for label, r in runs if label.startswith("--ray"))
    model_s = 1 / best
    moved = inputs * 2 + outputs  # the driver hashes each input, an actor reads it, then writes
    lines += [
        "", f"Ray's own cost per image, measured apart from the model (a model-free actor, "
        f"{OVERHEAD_ROWS} rows of a work item's size, 1 actor, batch 1): {overhead * 1e3:.1f} ms, "
        f"{overhead / model_s:.1%} of the {model_s:.2f} s per image of the best --ray run above.",
        "", f"Per image through shared storage: input {inputs / 1e3:.0f} kB read twice (the "
        f"driver hashes it when planning, the actor decodes it) + output {outputs / 1e3:.0f} kB "
        f"written = {moved / 1e3:.0f} kB.", "",
        "## Scaling model (a model, not a measurement)", "",
        f"images/s(N) = min(N x {best:.3f} (the best one-node --ray rate above), storage "
        f"bandwidth / {moved / 1e3:.0f} kB), assuming every node is this machine and nothing "
        "else shares the storage. The driver's planning (stat + BLAKE2b of every input, "
        "on one machine) comes first: input bytes / the driver's read bandwidth; "
        "`--trust-mtime` reruns skip the hashing.", "",
        *scaling_model(best, moved),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--label", default="", help="e.g. 'The machine was shared.'")
    parser.add_argument("--name", default=f"ray_{datetime.date.today()}")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        runs, photos, overhead = measure(args, work)
        text = report(args, runs, photos, work, overhead)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
