"""Face detector accuracy and cost for --faces (run by hand).

    PYTHONPATH=. python benchmarks/faces_detect.py [--photos /work/shared/photos]
        [--inspect /tmp/faces_inspect] [--repeat 3]

Sets (every one from a package, or a local folder that is never committed):
- lfw: scikit-image's bundled ``lfw_subset()``: 100 face and 100 non-face 25x25 grey crops
  (Labeled Faces in the Wild), each upscaled 4x (bicubic) into the middle of a 200x200 grey
  canvas: recall on faces, false detections on non-faces. Small, low-quality faces: hard.
- astronaut: scikit-image's bundled ``astronaut()`` (512x512, one face).
- portraits (with --photos): the ``face_*.jpg`` and ``liushishi.jpg`` photos, one face each:
  found = at least one box; the largest box is taken as the face, any other is counted as
  a false detection (check the --inspect sheet).
- scenes (with --photos): ``bry_*`` and ``landscape_*``: people far away. Their detections
  are counted and written to the --inspect sheet, to be judged by eye (the result file says
  what was seen); recall is not measured there (no labels).

Each detector (``--face-detector`` choices) at the default --min-face and neighbours 3, 5, 8.
Cost: the detector's median wall time per image over --repeat runs (grey conversion, the
resize to at most DETECT_LONG_SIDE and the cascade), one thread as convert runs it.
Writes benchmarks/results/faces_detect_<date>_<cpu>.md (give --out) and prints it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from animegan_cli.faces.detect import DEFAULT_MIN_FACE, DETECTORS, FaceSettings, find_faces

NEIGHBOURS = (3, 5, 8)


def lfw_images() -> tuple[list[Image.Image], list[Image.Image]]:
    """(faces, non-faces) from scikit-image's bundled LFW subset, upscaled onto a canvas."""
    from skimage.data import lfw_subset

    crops = lfw_subset()

    def staged(crop: np.ndarray) -> Image.Image:
        face = Image.fromarray((crop * 255).astype(np.uint8), "L").resize((100, 100),
                                                                           Image.BICUBIC)
        canvas = Image.new("L", (200, 200), 128)
        canvas.paste(face, (50, 50))
        return canvas.convert("RGB")

    return [staged(c) for c in crops[:100]], [staged(c) for c in crops[100:]]


def photo_sets(folder: Path | None) -> dict[str, list[tuple[str, Image.Image]]]:
    from skimage.data import astronaut

    sets = {"astronaut": [("astronaut", Image.fromarray(astronaut()))]}
    if folder is None or not folder.is_dir():
        return sets
    from animegan_cli.media.data import decode_image

    portraits = sorted(folder.glob("face_*.jpg")) + sorted(folder.glob("liushishi.jpg"))
    scenes = sorted(folder.glob("bry_*.jpg")) + sorted(folder.glob("landscape_*.jpg"))
    sets["portraits"] = [(p.name, decode_image(p)) for p in portraits]
    sets["scenes"] = [(p.name, decode_image(p)) for p in scenes]
    return sets


def timed(detector, image: Image.Image, repeat: int) -> tuple[list, float]:
    times, boxes = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        boxes = find_faces(detector, image)
        times.append(time.perf_counter() - start)
    return boxes, statistics.median(times)


def evaluate(name: str, neighbours: int, lfw, sets, repeat: int, inspect: Path | None) -> dict:
    import cv2

    cv2.setNumThreads(1)
    detector = FaceSettings("crop", detector=name, neighbours=neighbours).build_detector()
    faces, others = lfw
    row: dict[str, object] = {"detector": name, "neighbours": neighbours}
    hit = sum(bool(find_faces(detector, im)) for im in faces)
    false = sum(bool(find_faces(detector, im)) for im in others)
    row["lfw"] = f"recall {hit}/100, non-faces with a box {false}/100"
    for set_name, photos in sets.items():
        found = extra = 0
        costs, sizes = [], []
        for photo_name, image in photos:
            boxes, cost = timed(detector, image, repeat)
            costs.append(cost)
            sizes.append(max(image.size))
            if set_name == "scenes":
                extra += len(boxes)
                if inspect is not None:
                    save_sheet(inspect / f"{name}_n{neighbours}_{photo_name}.png", image, boxes)
            else:
                found += bool(boxes)
                extra += max(0, len(boxes) - 1)
        ms = statistics.median(costs) * 1000
        if set_name == "scenes":
            row[set_name] = f"{extra} boxes in {len(photos)} photos; {ms:.0f} ms/img"
        else:
            row[set_name] = (f"found {found}/{len(photos)}, extra boxes {extra}; "
                             f"{ms:.0f} ms/img (long side {statistics.median(sizes):.0f} px)")
    return row


def save_sheet(path: Path, image: Image.Image, boxes) -> None:
    """The detections of one scene, outlined, for judging by eye (never committed)."""
    if not boxes:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = image.copy()
    draw = ImageDraw.Draw(shown)
    for b in boxes:
        draw.rectangle([b.x, b.y, b.x + b.w, b.y + b.h], outline=(255, 0, 0), width=4)
    crops = [image.crop((b.x, b.y, b.x + b.w, b.y + b.h)).resize((96, 96)) for b in boxes]
    sheet = Image.new("RGB", (96 * len(crops), 96))
    for i, crop in enumerate(crops):
        sheet.paste(crop, (96 * i, 0))
    shown.thumbnail((800, 800))
    shown.save(path)
    sheet.save(path.with_suffix(".crops.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--inspect", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lfw, sets = lfw_images(), photo_sets(args.photos)
    rows = [evaluate(name, n, lfw, sets, args.repeat, args.inspect)
            for name in DETECTORS for n in NEIGHBOURS]
    columns = ["detector", "neighbours", "lfw", *sets]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    lines = [
        f"# Face detector accuracy and cost ({time.strftime('%Y-%m-%d')})", "",
        f"CPU: {cpu}; one OpenCV thread; --min-face {DEFAULT_MIN_FACE}. "
        f"Command: `PYTHONPATH=. python benchmarks/faces_detect.py "
        f"{'--photos ' + str(args.photos) if args.photos else ''}`", "",
        "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
