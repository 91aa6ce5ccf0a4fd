"""--colour: how close each mode's results are to the photo's brightness and chroma (by hand).

    PYTHONPATH=. python benchmarks/colour_fidelity.py PHOTOS (--weights FILE | --style NAME)
        [--size 512] [--name colour_fidelity_2026-12-07_xeon_amx] [--label 'random weights']

Each photo is styled once (torch fp32) and finished with each --colour mode, as convert
does. Per photo and mode: the mean luma's gap from the photo's (BT.601, as AnimeGANv2's
adjust_brightness.py; %), the chroma gap (the larger of the mean |Cb - Cb'| and |Cr - Cr'|
against the photo at the model's size, Pillow's YCbCr, 8-bit levels), and the colour step's
cost (ms, best of 3; a timing: quote it from a quiet machine only). Writes
benchmarks/results/NAME.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animegan_cli.media import colour
from animegan_cli.stylizer import Stylizer

RESULTS = Path(__file__).resolve().parent / "results"


def chroma_gap(result: np.ndarray, photo: np.ndarray) -> float:
    """The larger of the mean absolute Cb and Cr differences, in 8-bit levels."""
    def ycbcr(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).convert("YCbCr"), dtype=np.float64)
    return float(np.abs(ycbcr(result)[..., 1:] - ycbcr(photo)[..., 1:]).mean(axis=(0, 1)).max())


def measure(stylizer: Stylizer, path: Path) -> list[str]:
    """One table row: each mode's luma gap, chroma gap and cost for one photo."""
    item = stylizer.prepare(path)
    assert item.pixels is not None
    styled = stylizer.run([item])[0]
    photo = item.pixels.permute(1, 2, 0).contiguous()
    target = colour.mean_luma(photo)
    cells = [path.name]
    for mode in colour.COLOURS:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            kept = colour.keep(mode, item.pixels, styled)
            times.append(time.perf_counter() - start)
        gap = 100 * (colour.mean_luma(kept) - target) / target
        cells.append(f"{gap:+.2f}% / {chroma_gap(kept.numpy(), photo.numpy()):.2f} / "
                     f"{1000 * min(times):.1f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--style", default="face_paint_512_v2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--name", default="colour_fidelity")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    stylizer = Stylizer.load(args.style, weights=args.weights, size=args.size,
                             backend="torch", precision="fp32")
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    rows = [measure(stylizer, p) for p in photos]
    head = "| photo | " + " | ".join(colour.COLOURS) + " |"
    lines = [f"# --colour fidelity: {args.label}".rstrip(": "), "",
             f"{platform.node()}, torch {torch.__version__}, {stylizer.style} "
             f"({stylizer.checkpoint_id[:12]}), --size {args.size}, {len(photos)} photos.",
             "Each cell: mean luma gap from the photo / chroma gap (levels) / ms of the step.",
             "", head, "|---" * (len(colour.COLOURS) + 1) + "|",
             *("| " + " | ".join(r) + " |" for r in rows)]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
