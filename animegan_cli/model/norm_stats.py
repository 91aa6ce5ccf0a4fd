"""Normalisation statistics: every GroupNorm(1) of the generator, computed or supplied.

Every normalisation of the AnimeGANv2 generator is a ``GroupNorm(1)``: the mean and the
variance of a whole image's activations at that layer. They are what makes an image's
result depend on all of it: with them fixed, the generator is local (a pixel's result
depends only on the pixels around it, see ``RECEPTIVE_RADIUS``), so tiles of one image
styled with the image's statistics are exactly the image styled whole, and a clip's
frames styled with smoothed statistics do not pulse.

**The statistics array.** ``stats``: ``numpy.float32`` of shape ``(N, LAYERS, 2)``: for
image n of a batch and normalisation layer l (in the fixed order ``norm_layers`` gives,
the order the forward pass meets them), ``stats[n, l, 0]`` is the mean and
``stats[n, l, 1]`` the biased variance of that layer's input over channels, height and
width. Computed in float32 whatever the engine's precision.

**Engines** (engines/contract.py, ``StatsEngine``; a backend declares the precisions it
can do this at in ``Backend.norm_stats``: torch and OpenVINO at fp32/bf16, not ONNX
Runtime nor int8). ``stylizer.stats_engine`` is a Stylizer's engine as one (a UsageError
naming the engines that can, where it cannot). With ``batch`` uint8 ``(N, 3, H, W)``
(``data.stack_pixels`` of prepared items), ``pixels`` comes back uint8 ``(N, H, W, 3)``
(NonFiniteOutput as from ``run``)::

    pixels, stats = engine.run_stats(batch)               # (a) own statistics, returned
    pixels, used = engine.run_stats(batch, stats)         # (b) statistics supplied
    pixels, used = engine.run_stats(batch, prev, mix)     # (c) a blend, per image

(a) is today's result (the torch engine's pixels are identical to ``engine.run``) plus
each image's statistics. (b) normalises every layer with the supplied ``stats``
(``(N, LAYERS, 2)``: one row per image of the batch; tiles of one image repeat its row;
the statistics may come from the image at another size: they are per image, not per
pixel). (c) ``mix`` (float32 ``(N,)`` in [0, 1]) blends at every layer:
``used = mix * supplied + (1 - mix) * own``, where ``own`` is computed on the activations
the earlier (blended) layers produced; ``used`` comes back. ``mix`` 1 is (b), 0 is (a).

A clip frame's statistics: ``_, stats = engine.run_stats(frames)`` (one row per frame).
A frame styled with given statistics: ``pixels, _ = engine.run_stats(frame[None], s[None])``.
Smoothing a clip in one pass per frame: ``pixels, s = engine.run_stats(frame[None], s,
np.array([0.8], np.float32))`` with ``s`` the previous frame's returned ``used`` (an
exponential average of the statistics, layer by layer, 0.8 on the past); for the first
frame and at a scene cut pass ``mix`` 0 (``s`` may then be zeros). A frame too large for
the budget, in tiles with given statistics: ``tiling.run_tiled(engine, frame, plan,
batch_size, stats=s[0])`` (``frame`` uint8 ``(3, H, W)``, ``plan`` from
``tiling.plan_tiles``; ``tiling.measure_stats(engine, frame, plan)`` gives its own from
the plan's smaller pass).

**Tiles** of one model input (engines/tiling.py cuts them): each tile styled with the
whole image's statistics (repeat its row). Where the image's sides are multiples of 4
(and the tiles sit on the 4-pixel grid) that is all; otherwise the generator's two
upsamplings of the whole image do not scale by exactly 2, and a tile must sample where the
whole image would: pass ``grids=tile_grids(full, origins, tile)`` too.

In torch (the generator itself), ``StatsGenerator(generator)(x, stats, mix, grids)`` is
the same on tensors (x in [-1, 1]); it is also what the OpenVINO engine converts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from animegan_cli.core.limits import RECEPTIVE_RADIUS as RECEPTIVE_RADIUS  # see there

STATS_FIELDS = 2  # mean, variance


@dataclass
class _Exchange:
    """One forward pass's statistics: what is supplied, what each layer used."""

    supplied: torch.Tensor | None  # (N, LAYERS, 2) float32
    mix: torch.Tensor | None  # (N,) float32; None with supplied: use them as they are
    used: list[torch.Tensor] = field(default_factory=list)  # (N, 2) per layer, in order


class StatsGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same state dict) that can exchange statistics.

    Outside a StatsGenerator pass it is nn.GroupNorm exactly (the same kernel: today's
    pixels, byte for byte).
    """

    exchange: _Exchange | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        exchange = self.exchange
        if exchange is None:
            return super().forward(x)
        index = len(exchange.used)
        if exchange.supplied is None or exchange.mix is not None:
            var, mean = torch.var_mean(x.float(), dim=(1, 2, 3), unbiased=False)
            own = torch.stack([mean, var], dim=1)
        if exchange.supplied is None:
            exchange.used.append(own)
            return super().forward(x)  # today's kernel: pixels as a plain run gives them
        used = exchange.supplied[:, index]
        if exchange.mix is not None:
            used = own + exchange.mix[:, None] * (used - own)
        exchange.used.append(used)
        mean = used[:, 0].to(x.dtype).reshape(-1, 1, 1, 1)
        scale = torch.rsqrt(used[:, 1] + self.eps).to(x.dtype).reshape(-1, 1, 1, 1)
        # One new tensor, changed in place: (x - mean) * scale * weight + bias written out
        # held three of x's size at once (+325 MiB for a 984 px tile in fp32).
        out = x - mean
        out.mul_(scale * self.weight.reshape(1, -1, 1, 1))
        return out.add_(self.bias.reshape(1, -1, 1, 1))


def norm_layers(generator: nn.Module) -> list[StatsGroupNorm]:
    """The generator's normalisation layers in the fixed order of the stats array."""
    return [m for m in generator.modules() if isinstance(m, StatsGroupNorm)]


class StatsGenerator(nn.Module):
    """The generator with statistics in and out: ``(x, stats, mix) -> (y, used)``.

    ``stats`` None: each image's own (``used`` returns them); ``mix`` None with stats:
    the supplied ones as they are. See the module docstring for the shapes.
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator: Any = generator  # a Generator (not imported: it imports this module)
        self.norms = norm_layers(generator)

    @property
    def layers(self) -> int:
        """LAYERS: the number of normalisations (the stats array's second axis)."""
        return len(self.norms)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None,
                mix: torch.Tensor | None = None,
                grids: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if stats is not None and tuple(stats.shape) != (x.shape[0], self.layers, STATS_FIELDS):
            raise ValueError(
                f"stats must be (N, {self.layers}, {STATS_FIELDS}) for a batch of "
                f"{x.shape[0]}, not {tuple(stats.shape)}"
            )
        exchange = _Exchange(
            None if stats is None else stats.float(), None if mix is None else mix.float()
        )
        for norm in self.norms:
            norm.exchange = exchange
        if grids is not None:
            self.generator.resample = _grid_resample(grids)
        try:
            y = self.generator(x)
        finally:
            self.generator.resample = None
            for norm in self.norms:
                norm.exchange = None
        return y, torch.stack(exchange.used, dim=1)


def as_stats(stats: object, images: int, layers: int) -> np.ndarray:
    """``stats`` as the float32 (images, layers, 2) array, or a ValueError naming the shape."""
    array = np.asarray(stats, dtype=np.float32)
    if array.shape != (images, layers, STATS_FIELDS):
        raise ValueError(
            f"stats must be ({images}, {layers}, {STATS_FIELDS}), not {array.shape}"
        )
    return array


def as_mix(mix: object, images: int) -> np.ndarray:
    """``mix`` (a number or one per image) as float32 (images,) within [0, 1]."""
    array = np.broadcast_to(np.asarray(mix, dtype=np.float32), (images,)).copy()
    if not np.all((array >= 0) & (array <= 1)):
        raise ValueError("mix must be within [0, 1]")
    return array


def _grid_resample(grids: tuple[torch.Tensor, torch.Tensor]):
    """The generator's upsampling step ``step`` as bilinear sampling at ``grids[step]``."""

    def resample(features: torch.Tensor, size: torch.Size, step: int) -> torch.Tensor:
        # In float32: bf16 coordinates are too coarse, and torch's bf16 kernel gave NaN.
        sampled = F.grid_sample(features.float(), grids[step].float(), mode="bilinear",
                                padding_mode="border", align_corners=False)
        return sampled.to(features.dtype)

    return resample


def needs_grids(full: tuple[int, int]) -> bool:
    """Whether tiles of a model input of ``full`` (H, W) need tile_grids to be exact."""
    return any(side % 4 for side in full)


def _axis_grid(full: int, origin: int, tile: int, step: int, half_pixel: bool) -> np.ndarray:
    """Normalised sampling coordinates along one axis of a tile, for upsampling ``step``
    (0: quarter to half resolution, 1: half to full), as the whole image samples: torch's
    bilinear (``half_pixel``: src = (dst + 0.5) * in / out - 0.5, >= 0) or TF1's
    (src = dst * in / out; model/variants.py)."""
    half, quarter = full // 2, full // 2 // 2
    size_in, size_out = (quarter, half) if step == 0 else (half, full)
    shrink = 4 if step == 0 else 2  # the input's resolution against the tile's origin
    tile_out = tile // 2 if step == 0 else tile
    tile_in = tile // 2 // 2 if step == 0 else tile // 2
    first = origin // (2 if step == 0 else 1)  # global index of the tile's first output
    dst = np.arange(first, first + tile_out, dtype=np.float64)
    if half_pixel:
        src = np.maximum((dst + 0.5) * size_in / size_out - 0.5, 0.0)
    else:
        src = dst * size_in / size_out
    local = src - origin // shrink
    return ((local + 0.5) * 2.0 / tile_in - 1.0).astype(np.float32)


def tile_grids(full: tuple[int, int], origins: Sequence[tuple[int, int]],
               tile: tuple[int, int], half_pixel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The sampling grids of tiles of ``tile`` (h, w) at ``origins`` [(y, x), ...] (multiples
    of 4) of a model input of ``full`` (H, W): float32 (N, h // 2, w // 2, 2) and
    (N, h, w, 2), (x, y) last, for StatsGenerator's / run_stats' ``grids``. ``half_pixel``:
    the checkpoint's variant's resize (model/variants.py; TF1's has none)."""
    steps = []
    for step in (0, 1):
        per_tile = []
        for y, x in origins:
            gy = _axis_grid(full[0], y, tile[0], step, half_pixel)
            gx = _axis_grid(full[1], x, tile[1], step, half_pixel)
            grid = np.empty((len(gy), len(gx), 2), np.float32)
            grid[..., 0] = gx[None, :]
            grid[..., 1] = gy[:, None]
            per_tile.append(grid)
        steps.append(np.stack(per_tile))
    return steps[0], steps[1]
