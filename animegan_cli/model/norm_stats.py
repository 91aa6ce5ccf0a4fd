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
can do this at in ``Backend.norm_stats``, ``engines.base.stats_engine`` gives the
engine or a UsageError). With ``engine`` a Stylizer's ``stylizer.engine`` and ``batch``
uint8 ``(N, 3, H, W)``::

    pixels, stats = engine.run_stats(batch)               # (a) own statistics, returned
    pixels, used = engine.run_stats(batch, stats)         # (b) statistics supplied
    pixels, used = engine.run_stats(batch, prev, mix)     # (c) a mix, per image

(a) is today's result (the torch engine's pixels are identical to ``engine.run``) plus
each image's statistics. (b) normalises every layer with the supplied ``stats``
(``(N, LAYERS, 2)``: one row per image of the batch; tiles of one image repeat its row).
(c) ``mix`` (float32 ``(N,)`` in [0, 1]) blends at every layer:
``used = mix * supplied + (1 - mix) * own``, where ``own`` is computed on the activations
the earlier (blended) layers produced; ``used`` comes back. ``mix`` 1 is (b), 0 is (a).

A clip frame's statistics: ``_, stats = engine.run_stats(frames)`` (one row per frame).
A frame styled with given statistics: ``pixels, _ = engine.run_stats(frame[None], s[None])``.
Smoothing a clip in one pass per frame: ``pixels, s = engine.run_stats(frame[None], s,
np.array([0.8], np.float32))`` with ``s`` the previous frame's returned ``used`` (an
exponential average of the statistics, layer by layer); at a scene cut pass ``mix`` 0.

In torch (the generator itself), ``StatsGenerator(generator)(x, stats, mix)`` is the
same on tensors (x in [-1, 1]); it is also what the OpenVINO engine converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

STATS_FIELDS = 2  # mean, variance
# A result pixel depends on input pixels at most this far away (per axis) once the
# statistics are fixed: measured by benchmarks/receptive_field.py (one input pixel changed,
# the farthest output pixel that moved: 48 to 51 px by
# the pixel's position on the 4-pixel grid of the two stride-2 layers), rounded up to 4.
RECEPTIVE_RADIUS = 52


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
        weight = self.weight.reshape(1, -1, 1, 1)
        bias = self.bias.reshape(1, -1, 1, 1)
        return (x - mean) * scale * weight + bias


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
        self.generator = generator
        self.norms = norm_layers(generator)

    @property
    def layers(self) -> int:
        """LAYERS: the number of normalisations (the stats array's second axis)."""
        return len(self.norms)

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None,
                mix: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        try:
            y = self.generator(x)
        finally:
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
