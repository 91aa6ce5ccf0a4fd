"""PNG compression level: encode time vs file size per level (run by hand).

    PYTHONPATH=. python benchmarks/png_level.py PHOTOS [--size 512] [--repeat 3]
        [--name png_level_2026-12-01b_xeon_amx_quiet] [--label 'nothing else running']

Each photo is sized as `convert --size` sizes it (long side, bicubic) and saved to memory
as PNG at each zlib level 0-9 and with zlib's RLE strategy (`rle`) with Pillow, as the
writer thread does (with the same provenance text chunk). The photos stand in for styled
outputs: AnimeGAN's flat colours compress better than photos, so sizes are an upper bound;
a second table has the photos made flat-coloured. Writes benchmarks/results/NAME.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from pathlib import Path

from PIL import Image, ImageFilter

from animegan_cli.media import data
from animegan_cli.media.formats import FORMATS, PNG_RLE

RESULTS = Path(__file__).resolve().parent / "results"
RECORD = '{"animegan": "a provenance record of about this length", "pad": "' + "x" * 600 + '"}'


def sized(path: Path, size: int) -> Image.Image:
    """The image convert would style, at its model size (the output has the same size)."""
    img = data.decode_image(path, size)
    return img.convert("RGB")


def encode_ms_and_bytes(img: Image.Image, level: int | str, repeat: int) -> tuple[float, int]:
    """Best encode CPU time of ``repeat`` tries, in ms, and the encoded size.

    CPU time, not wall time: encoding is one thread, and on a shared machine the wall clock
    also counts the other jobs' turns on the core.
    """
    options = FORMATS["png"].save_kwargs(95, RECORD, level=level)
    times, size = [], 0
    for _ in range(repeat):
        buffer = io.BytesIO()
        start = time.process_time()
        img.save(buffer, format="PNG", **options)
        times.append(time.process_time() - start)
        size = buffer.tell()
    return min(times) * 1000, size


def flat(img: Image.Image) -> Image.Image:
    """A photo made flat-coloured (median, 48 colours, smoothed): closer to AnimeGAN's output."""
    return img.filter(ImageFilter.MedianFilter(5)).quantize(48).convert("RGB").filter(
        ImageFilter.SMOOTH)


def table(images: list[Image.Image], repeat: int) -> list[tuple[object, float, float]]:
    """(level, mean CPU ms, mean KB) for every --png-level value."""
    rows = []
    for level in [*range(10), PNG_RLE]:
        measured = [encode_ms_and_bytes(img, level, repeat) for img in images]
        ms = statistics.mean(m for m, _ in measured)
        kb = statistics.mean(b for _, b in measured) / 1024
        rows.append((level, ms, kb))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="png_level")
    parser.add_argument("--label", default="", help="e.g. 'nothing else running'")
    args = parser.parse_args()
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    images = [sized(p, args.size) for p in paths]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    lines = [
        f"PNG level vs encode time and size: {len(images)} photos sized to --size {args.size} "
        f"(long side), Pillow {Image.__version__}, best of {args.repeat} (CPU time); {cpu}, "
        f"{os.cpu_count()} CPUs. {args.label}",
    ]
    for title, batch in (("photos", images), ("the same photos made flat-coloured",
                                              [flat(i) for i in images])):
        rows = table(batch, args.repeat)
        six = rows[6]
        lines += ["", f"{title}:", "",
                  "| --png-level | encode CPU ms/img | KB/img | time vs level 6 "
                  "| size vs level 6 |",
                  "|---|---|---|---|---|"]
        lines += [f"| {level} | {ms:.1f} | {kb:.0f} | {ms / six[1]:.2f}x | {kb / six[2]:.2f}x |"
                  for level, ms, kb in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
