"""How much more of a face the model sees with --faces paste, and the docs' side-by-side PNG.

    PYTHONPATH=. python benchmarks/faces_detail.py [--weights FILE] [--png PATH]

Converts scikit-image's bundled astronaut (one face, 512x512) and a generated "group" of
three astronauts 40 px apart (1020x300, faces of about 57 px) with ``convert`` at the
default --size 512, plain and with ``--faces paste`` (the group with --keep-size), and
reports per face: the face's side in pixels of the model input (what the model "saw"), and
the high-frequency energy (variance of the Laplacian) of the face region in the input, the
plain result and the pasted one. Without --weights the checkpoint has random weights (seed
0): the numbers then say how much resolution the model got, not whether a trained model
draws a better face. Writes the side-by-side PNG of the astronaut (plain | paste, the face
enlarged below) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animegan_cli.faces.blend import square_crop
from animegan_cli.faces.detect import FACE_SIZE, Box, FaceSettings
from animegan_cli.model.generator import Generator
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, convert


def laplacian_variance(image: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image: fine detail's energy."""
    g = np.asarray(image.convert("L"), np.float64)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def run(src: Path, out: Path, weights: Path, faces: FaceSettings, keep_size: bool) -> list:
    results = []
    events = ConvertEvents(on_result=results.append)
    convert(ConvertOptions(inputs=[str(src)], output=out, weights=weights, faces=faces,
                           keep_size=keep_size, backend="torch", num_workers=0), events)
    return results


def measure(name: str, src: Path, weights: Path, work: Path, keep_size: bool) -> list[str]:
    plain_out, paste_out = work / f"{name}_plain", work / f"{name}_paste"
    run(src, plain_out, weights, FaceSettings(), keep_size)
    [result] = run(src, paste_out, weights, FaceSettings("paste"), keep_size)
    original = Image.open(src).convert("RGB")
    plain, pasted = (Image.open(d / src.name).convert("RGB") for d in (plain_out, paste_out))
    rows = []
    for k, box in enumerate((Box(*b) for b in result.faces["boxes"]), 1):
        model_scale = 512 / max(original.size)
        crop = square_crop(box, 1.3, *original.size)
        seen_plain, seen_paste = box.w * model_scale, box.w * FACE_SIZE / crop.w
        f = plain.width / original.width
        region = [round(v * f) for v in (box.x, box.y, box.x + box.w, box.y + box.h)]
        energies = [laplacian_variance(im.crop(region)) for im in
                    (original.resize(plain.size), plain, pasted)]
        rows.append(f"| {name} face {k} | {box.w} px | {seen_plain:.0f} px | {seen_paste:.0f} px "
                    f"| {energies[0]:.0f} | {energies[1]:.0f} | {energies[2]:.0f} |")
    return rows


def side_by_side(src: Path, work: Path, png: Path, box: Box) -> None:
    """plain | paste on top (256 px each), the face enlarged below each."""
    plain = Image.open(work / "astronaut_plain" / src.name).convert("RGB")
    pasted = Image.open(work / "astronaut_paste" / src.name).convert("RGB")
    square = square_crop(box, 1.3, *plain.size)
    face = (square.x, square.y, square.x + square.w, square.y + square.h)
    sheet = Image.new("RGB", (512, 512), "white")
    for i, image in enumerate((plain, pasted)):
        sheet.paste(image.resize((256, 256), Image.LANCZOS), (256 * i, 0))
        sheet.paste(image.crop(face).resize((256, 256), Image.NEAREST), (256 * i, 256))
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(128).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=Path("docs/faces_side_by_side.png"))
    args = parser.parse_args()
    from skimage.data import astronaut

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = work / "random_seed0.pt"
            torch.save(Generator().state_dict(), weights)
        one = Image.fromarray(astronaut())
        one.save(work / "astronaut.png")
        canvas = Image.new("RGB", (1020, 300), (128, 128, 128))
        for i in range(3):
            canvas.paste(one.resize((300, 300)), (360 * i, 0))
        canvas.save(work / "group.png")
        rows = measure("astronaut", work / "astronaut.png", weights, work, False)
        rows += measure("group", work / "group.png", weights, work, True)
        [result] = run(work / "astronaut.png", work / "probe", weights, FaceSettings("crop"),
                       False)
        side_by_side(work / "astronaut.png", work, args.png, Box(*result.faces["boxes"][0]))
    print("| face | box | model saw (plain) | model saw (paste) | HF energy: input | plain "
          "| paste |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
