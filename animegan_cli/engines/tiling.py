"""Tiles: a model input too large for the memory budget styled in overlapping pieces.

Every GroupNorm of the generator normalises over the whole image, so tiles styled on their
own would each get statistics of their own, and seams. Here the statistics come first, from
one pass over the image scaled down (``TilePlan.stats_size``: half the model input's sides
where that fits the budget, else the largest size that does); then every tile runs with
those statistics (model/norm_stats.py), and with them fixed the generator is local: a tile
is exactly the whole image styled with the same statistics, except within
``RECEPTIVE_RADIUS`` of a cut edge. Adjacent tiles overlap by ``TILE_OVERLAP``: each one's
border band is discarded and a ``TILE_BLEND``-wide band in the middle fades one into the
other. Tiles sit on the 4-pixel grid of the two stride-2 convs (edge tiles grow by up to
3 pixels to reach the image's edge), so a tiled result equals the untiled one run with the
same statistics (>= 60 dB, tests/test_tiles.py).

Planning (``plan_tiles``, ``TileSetting``) is torch-free: convert decides from an image's
header whether it will be tiled, and records it. ``TiledImage`` and ``run_tiled`` do the
work (torch imported inside).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from animegan_cli.core.errors import UsageError
from animegan_cli.core.limits import MIN_TILE, RECEPTIVE_RADIUS, TILE_BLEND, TILE_OVERLAP
from animegan_cli.engines.memory import BASE_BYTES, bytes_per_pixel

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animegan_cli.engines.contract import StatsEngine

OFF, AUTO = "off", "auto"
# Bytes per pixel of the whole model input held while its tiles run, besides the model:
# its uint8 pixels, the float32 sum the tiles are blended into, the uint8 result, the
# decoded image (RGB) the input came from, the tiles' crops waiting for their batch, and
# the finished result and its encoding at the end (Pillow holds RGB as 4 bytes). Measured
# (benchmarks/tiles.py memory, VmHWM): 24 MP at --max-memory 2G peaks at 1815 MiB
# (OpenVINO bf16) and 1775 MiB (torch fp32), the finishing adding ~90 MiB to the tiles'.
TILED_IMAGE_BYTES_PER_PIXEL = 3 + 12 + 3 + 3 + 3 + 8


def parse_tile(text: str | int) -> str | int:
    """``--tile``'s value: "auto", "off" or a tile side in pixels (>= MIN_TILE)."""
    value = str(text).strip().lower()
    if value in (OFF, AUTO):
        return value
    try:
        side = int(value)
    except ValueError:
        raise UsageError(f"--tile must be auto, off or a number of pixels, not {text!r}") from None
    if side < MIN_TILE:
        raise UsageError(f"--tile must be at least {MIN_TILE} pixels (got {side})")
    return side


@dataclass(frozen=True)
class TilePlan:
    """How one model input of ``full`` (H, W) is tiled: tiles of ``tile`` px (sides), with
    statistics from a pass at ``stats_size`` (H, W)."""

    full: tuple[int, int]
    tile: int
    stats_size: tuple[int, int]

    def cost_pixels(self, precision: str = "fp32") -> int:
        """Model pixels one image costs at peak while its tiles run (one tile at a time):
        the largest tile's, plus the whole image's buffers as their model pixel worth."""
        held = TILED_IMAGE_BYTES_PER_PIXEL * self.full[0] * self.full[1]
        return (self.tile + 3) ** 2 + int(held / bytes_per_pixel(precision))


def plan_tiles(
    width: int, height: int, tile: str | int, budget: int, precision: str = "fp32",
    align_corners: bool = False,
) -> TilePlan | None:
    """Whether (and how) a model input of ``width`` x ``height`` is tiled within ``budget``.

    ``off``: never. ``auto``: only when the whole image does not fit the budget; tiles as
    large as fit. A number: tiles of that side wherever the image is larger. None also
    where tiles cannot help: --align-corners (the upsampling's grid then depends on the
    whole size), or a budget without room for one tile (the image is refused as today).
    """
    if tile == OFF or align_corners:
        return None
    pixels = width * height
    per_pixel = bytes_per_pixel(precision)
    room = budget - BASE_BYTES - TILED_IMAGE_BYTES_PER_PIXEL * pixels
    if tile == AUTO:
        if BASE_BYTES + per_pixel * pixels <= budget:
            return None
        side = math.isqrt(max(0, int(room / per_pixel))) // 4 * 4
        if side < MIN_TILE:
            return None
    else:
        side = int(tile) // 4 * 4
    if side >= max(width, height):
        return None
    return TilePlan((height, width), side, _stats_size(height, width, room / per_pixel))


def _stats_size(height: int, width: int, room_pixels: float) -> tuple[int, int]:
    """Half the sides where that fits ``room_pixels``, else the largest size that does."""
    scale = 0.5
    if height * width * scale * scale > room_pixels:
        scale = math.sqrt(max(room_pixels, 1.0) / (height * width))
    return (max(MIN_TILE // 4, round(height * scale)), max(MIN_TILE // 4, round(width * scale)))


def axis_spans(length: int, tile: int) -> list[tuple[int, int]]:
    """The tiles along an axis as (start, end): as few as tiles of at most ``tile`` need,
    each only as long as that count needs (balanced), so that overlap costs no more than
    it must: 2048 px in tiles of at most 1024 is three tiles of 760, not three of 1024.
    Starts are multiples of 4, adjacent tiles overlap by at least ``TILE_OVERLAP``, and the
    last one reaches the end (up to 3 px longer than the others). One tile, as long as the
    axis, when the axis fits in one."""
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - tile) / (tile - TILE_OVERLAP)) + 1
    # The shortest tile the count could do with: the origins' gaps add up to the last one's
    # (up to 3 px short of length - piece), so the widest gap is at least their mean, and a
    # tile must reach TILE_OVERLAP past it. From there up in steps of 4, to the first whose
    # gaps (floored to the grid) all hold.
    least = length - 3 + (count - 1) * TILE_OVERLAP
    piece = -(-least // (4 * count)) * 4  # rounded up to a multiple of 4
    while True:
        last = (length - piece) // 4 * 4
        origins = [i * last // (count - 1) // 4 * 4 for i in range(count)]
        if piece >= tile or all(origins[i] + piece - origins[i + 1] >= TILE_OVERLAP
                                for i in range(count - 1)):
            break
        piece += 4  # the grid's rounding left a gap a little short
    ends = [start + piece for start in origins[:-1]] + [length]
    return list(zip(origins, ends))


def _weights(start: int, end: int, rise: float, fall: float) -> np.ndarray:
    """A tile's blend weight per position along one axis (float32, 0..1)."""
    import numpy as np

    x = np.arange(start, end, dtype=np.float64) + 0.5
    up = np.clip((x - rise) / TILE_BLEND, 0.0, 1.0)
    down = 1.0 - np.clip((x - fall) / TILE_BLEND, 0.0, 1.0)
    return (up * down).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: where it sits (y, x) and its size (h, w) in the model input."""

    origin: tuple[int, int]
    size: tuple[int, int]


class TiledImage:
    """One model input being styled in tiles: cut, results blended back as they come."""

    def __init__(self, pixels: torch.Tensor, plan: TilePlan, stats: np.ndarray) -> None:
        import torch

        pixels = torch.as_tensor(pixels)  # a torch-free decode's numpy pixels too
        self.pixels: torch.Tensor | None = pixels  # uint8 (3, H, W); None once finished
        self.plan = plan
        self.stats = stats  # (L, 2): the statistics every tile runs with
        height, width = plan.full
        self.rows = _axis_tiles(height, plan.tile)
        self.cols = _axis_tiles(width, plan.tile)
        self.tiles = [Tile((r[0], c[0]), (r[1] - r[0], c[1] - c[0]))
                      for r in self.rows for c in self.cols]
        self._sum: torch.Tensor | None = torch.zeros(height, width, 3, dtype=torch.float32)
        self._left = len(self.tiles)

    def crop(self, tile: Tile) -> torch.Tensor:
        """The tile's uint8 (3, h, w) pixels."""
        (y, x), (h, w) = tile.origin, tile.size
        assert self.pixels is not None, "cut before the result"
        return self.pixels[:, y:y + h, x:x + w].contiguous()

    def add(self, tile: Tile, styled: torch.Tensor) -> bool:
        """Blend one styled tile (uint8 (h, w, 3)) in; True once every tile is in."""
        import torch

        i = self.tiles.index(tile)
        row, col = self.rows[i // len(self.cols)], self.cols[i % len(self.cols)]
        weight = torch.from_numpy(_weights(*row)[:, None] * _weights(*col)[None, :])
        (y, x), (h, w) = tile.origin, tile.size
        assert self._sum is not None, "added after the result"
        self._sum[y:y + h, x:x + w] += styled.float() * weight[:, :, None]
        self._left -= 1
        return self._left == 0

    def result(self) -> torch.Tensor:
        """The blended uint8 (H, W, 3) result (every tile added); the float32 sum and the
        input's pixels are let go (12 + 3 bytes a pixel) before the result is finished."""
        import torch

        assert self._sum is not None, "result() is asked once"
        pixels = self._sum.round_().clamp_(0, 255).to(torch.uint8)
        self._sum = None
        self.pixels = None
        return pixels


def _axis_tiles(length: int, tile: int) -> list[tuple[int, int, float, float]]:
    spans = axis_spans(length, tile)
    bands = []
    for i, (start, end) in enumerate(spans):
        rise = -math.inf if i == 0 else (start + spans[i - 1][1]) / 2 - TILE_BLEND / 2
        fall = math.inf if i == len(spans) - 1 else (spans[i + 1][0] + end) / 2 - TILE_BLEND / 2
        bands.append((start, end, rise, fall))
    return bands


def measure_stats(engine: StatsEngine, pixels: torch.Tensor, plan: TilePlan) -> np.ndarray:
    """The statistics (L, 2) of ``pixels`` (uint8 (3, H, W)) from a pass at plan.stats_size,
    scaled as convert scales an image for --size (bicubic, in uint8: no float copy of the
    whole image)."""
    import numpy as np
    import torch
    from PIL import Image

    height, width = plan.stats_size
    image = Image.fromarray(torch.as_tensor(pixels).permute(1, 2, 0).numpy())
    small = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=3.0)
    del image
    batch = torch.from_numpy(np.array(small)).permute(2, 0, 1)[None].contiguous()
    _, stats = engine.run_stats(batch)
    return stats[0]


def run_batch(engine: StatsEngine, crops: torch.Tensor, stats: Sequence[np.ndarray],
              fulls: Sequence[tuple[int, int]], origins: Sequence[tuple[int, int]],
              half_pixel: bool = True) -> torch.Tensor:
    """Style tiles of one shape (uint8 (N, 3, h, w)), each with its image's statistics:
    uint8 (N, h, w, 3). Tiles of images whose sides are not multiples of 4 sample their
    upsamplings where the whole image would (norm_stats.tile_grids; ``half_pixel``: the
    checkpoint variant's resize, model/variants.py)."""
    import numpy as np

    from animegan_cli.model.norm_stats import needs_grids, tile_grids

    grids = None
    if any(needs_grids(full) for full in fulls):
        size = (int(crops.shape[2]), int(crops.shape[3]))
        per_tile = [tile_grids(full, [origin], size, half_pixel)
                    for full, origin in zip(fulls, origins)]
        grids = (np.concatenate([g[0] for g in per_tile]),
                 np.concatenate([g[1] for g in per_tile]))
    pixels, _ = engine.run_stats(crops, np.stack(stats), None, grids)
    return pixels


def run_tiled(engine: StatsEngine, pixels: torch.Tensor, plan: TilePlan, batch_size: int,
              stats: np.ndarray | None = None, half_pixel: bool = True) -> torch.Tensor:
    """One model input (uint8 (3, H, W)) styled in tiles, ``batch_size`` of a shape at a
    time: uint8 (H, W, 3). ``stats`` (L, 2): the statistics to style it with (a clip's
    smoothed ones); None: measured by the plan's statistics pass."""
    import torch

    if stats is None:
        stats = measure_stats(engine, pixels, plan)
    image = TiledImage(pixels, plan, stats)
    for batch in _same_shape(image.tiles, batch_size):
        crops = torch.stack([image.crop(t) for t in batch])
        styled = run_batch(engine, crops, [image.stats] * len(batch),
                           [plan.full] * len(batch), [t.origin for t in batch], half_pixel)
        for tile, result in zip(batch, styled):
            image.add(tile, result)
    return image.result()


def _same_shape(tiles: Sequence[Tile], batch_size: int) -> Iterator[list[Tile]]:
    groups: dict[tuple[int, int], list[Tile]] = {}
    for tile in tiles:
        groups.setdefault(tile.size, []).append(tile)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


assert RECEPTIVE_RADIUS * 2 + TILE_BLEND == TILE_OVERLAP  # the blend band needs exact pixels
