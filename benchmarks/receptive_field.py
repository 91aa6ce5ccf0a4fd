"""The generator's receptive field with fixed normalisation statistics (issue 24).

One input pixel is changed; with every GroupNorm's statistics supplied (the unchanged
image's own), only output pixels within the receptive field can move. Prints the farthest
one that moved (per axis, in float32: any change above 1e-7), for a few positions and
weights (random /work/random.pt by default, or --weights). model/norm_stats.py's
RECEPTIVE_RADIUS is this, rounded up to a multiple of 4.

    python benchmarks/receptive_field.py [--weights /work/random.pt] [--size 256]
"""

from __future__ import annotations

import argparse

import torch

from animegan_cli.model.norm_stats import StatsGenerator
from animegan_cli.model.weights import load_generator, load_state_dict


def farthest_change(model: StatsGenerator, size: int, y: int, x: int) -> tuple[int, int]:
    """Largest |dy|, |dx| of an output pixel that changed when input (y, x) did."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, size, size) * 2 - 1
    with torch.inference_mode():
        _, stats = model(image)
        base, _ = model(image, stats, None)  # the same arithmetic as the changed pass
        changed = image.clone()
        changed[0, :, y, x] = -changed[0, :, y, x]
        moved, _ = model(changed, stats, None)
    diff = (moved - base).abs().amax(dim=1)[0] > 0
    ys, xs = torch.nonzero(diff, as_tuple=True)
    return int((ys - y).abs().max()), int((xs - x).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="/work/random.pt")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    model = StatsGenerator(load_generator(load_state_dict(args.weights)).eval())
    worst = 0
    for offset in (0, 1, 2, 3):
        centre = args.size // 2 + offset
        dy, dx = farthest_change(model, args.size, centre, centre)
        worst = max(worst, dy, dx)
        print(f"pixel ({centre}, {centre}): outputs moved up to {dy} rows, {dx} columns away")
    print(f"receptive radius: {worst} px")


if __name__ == "__main__":
    main()
