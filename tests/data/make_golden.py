"""Write the small golden fixture beside this file: python -m tests.data.make_golden.

What it holds, and how it was produced:
- the weights are not stored (a Generator state dict is ~8.6 MB in float32): `seeded_state_dict`
  computes them from a seed with a seeded `torch.Generator` and `torch.rand`, filled tensor by
  tensor, without going through `nn.init` (whose scheme may change between torch releases);
  `golden_meta.json` keeps the sha256 of those weights, so a drift of torch's random stream
  shows up as such and not as a wrong output;
- `golden_input.png`: a 45x31 generated photo (odd sides, so both resizes of the generator are
  uneven), from `tests.conftest.photo_like`;
- `golden_output_align{False,True}.npy`: float32 (H, W, 3) outputs in [-1, 1] of the reference
  path, the torch fp32 Generator of `animegan_cli.model.generator` (built by
  `weights.load_generator`, on CPU, inference mode) for both `align_corners` settings, on the
  input mapped to [-1, 1].

This fixture is a regression check of that path: tests/test_model.py checks the generator still
reproduces it within 1e-4, the tolerance of the spec's golden test. The spec's golden files
(../shared/spec/golden: real-size inputs and outputs made independently of this package) are
checked too by the same test module when they are present; when the fixture was written the
generator reproduced them, so the two agree. Rerun this script only on purpose (a deliberate
change to the model), and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from animegan_cli.model.generator import Generator
from animegan_cli.model.weights import load_generator

DATA = Path(__file__).resolve().parent
SEED = 10
INPUT = DATA / "golden_input.png"
META = DATA / "golden_meta.json"
WIDTH, HEIGHT = 45, 31


def output_path(align_corners: bool) -> Path:
    """Where the reference output for one align_corners setting is stored."""
    return DATA / f"golden_output_align{align_corners}.npy"


def seeded_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """Deterministic random float32 weights for a Generator, computed from ``seed``."""
    rng = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, bound: float) -> torch.Tensor:
        return (torch.rand(like.shape, generator=rng) * 2 - 1) * bound

    model = Generator()
    with torch.no_grad():
        for module in model.modules():  # a fixed order: the order the modules were built in
            if isinstance(module, nn.Conv2d):
                bound = 1 / (module.weight[0].numel() ** 0.5)  # 1 / sqrt(fan_in), as torch's
                module.weight.copy_(uniform(module.weight, bound))
                if module.bias is not None:
                    module.bias.copy_(uniform(module.bias, bound))
            elif isinstance(module, nn.GroupNorm):  # near identity, so that activations stay sane
                module.weight.copy_(1 + uniform(module.weight, 0.2))
                module.bias.copy_(uniform(module.bias, 0.2))
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of the weights' names and float32 bytes, in state-dict order."""
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.to(torch.float32).numpy().tobytes())
    return digest.hexdigest()


def reference_output(state: dict[str, torch.Tensor], rgb: np.ndarray,
                     align_corners: bool) -> np.ndarray:
    """The torch fp32 Generator's (H, W, 3) output for an (H, W, 3) uint8 image."""
    generator = load_generator(state, align_corners=align_corners)
    x = torch.from_numpy(rgb.astype(np.float32) / 255 * 2 - 1).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return generator(x)[0].permute(1, 2, 0).numpy()


def main() -> None:
    """Write the input, both reference outputs and the weights' hash."""
    from tests.conftest import photo_like

    Image.fromarray(photo_like(WIDTH, HEIGHT, seed=SEED), "RGB").save(INPUT)
    rgb = np.asarray(Image.open(INPUT).convert("RGB"))
    state = seeded_state_dict()
    for align_corners in (False, True):
        np.save(output_path(align_corners), reference_output(state, rgb, align_corners))
    meta = {"seed": SEED, "weights_sha256": weights_sha256(state), "torch": torch.__version__}
    META.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
