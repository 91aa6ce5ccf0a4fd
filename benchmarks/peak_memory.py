"""Peak RSS of one `convert --size 0` run on a generated W x H image (resources.py's table).

Run each size in a fresh process, e.g.:
    for s in "512 512" "1024 1024" "1448 1448"; do
        python benchmarks/peak_memory.py $s --weights face_paint_512_v2.pt; done
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from animegan_cli.pipeline.convert import ConvertOptions, convert


def main() -> None:
    """Convert one random W x H image at native size and print the process's peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("width", type=int)
    parser.add_argument("height", type=int)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="images of that size, one batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.batch):
            pixels = rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / f"{i}.png")
        start = time.perf_counter()
        summary = convert(ConvertOptions(
            inputs=[str(src)], output=Path(tmp) / "out", weights=args.weights, size=0,
            num_workers=0, threads=args.threads, precision=args.precision,
            batch_size=args.batch, max_memory=1 << 50,
        ))
        assert summary.converted == args.batch, summary.failures
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.width}x{args.height} {args.width * args.height / 1e6:.3f} MP "
          f"{args.precision} batch {args.batch} threads {args.threads}: "
          f"peak RSS {peak_mib:.0f} MiB in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
