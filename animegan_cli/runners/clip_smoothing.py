"""--video-smoothing stats: a clip's normalisation statistics smoothed from frame to frame.

Every normalisation of the generator is a GroupNorm(1) over the whole frame
(model/norm_stats.py), so a frame's global colour and brightness follow its own statistics:
sensor noise, a flickering light or compression jitter move them a little from frame to
frame and the styled clip pulses. Here each frame is normalised, layer by layer, with an
exponential average of its own statistics and the previous frame's (``engine.run_stats``
with ``mix`` = ``CARRY``, the previous frame's ``used`` supplied): one model pass per frame.

At a scene cut the average starts again: the frame after a cut gets its own statistics
(its unsmoothed result). A cut is found from pixels, before the frame's pass (``mix`` is an
input of that pass, so the pass's own statistics come too late to decide it): the frame's
8x8 thumbnail (block means) against the previous frame's, and the *median* over the 64
blocks of their difference. A cut changes most of the frame; noise averages out in a block,
a slow fade moves every block by a little, and a light or a moving object changes a few
blocks, which the median ignores. (A histogram was tried first: two shots of similar
colours, or one shot mirrored, have the same histogram.) Under a millisecond a frame.

Frames too large for the memory budget (a 4K clip at ``--size 0``) are styled in tiles
(engines/tiling.py, as the clip's record says: runners/video_run.py): each frame's own
statistics come from the plan's smaller pass, the average is taken over those, and the
tiles run with it (``carry`` 0: each frame's own, no smoothing).

The cost: frames run through the model one at a time (the average of frame n needs frame
n-1's result, layer by layer), instead of ``--frames-per-batch`` at a time. On a CPU,
where batching buys nothing measurable (docs/video.md, "Batching"), the cost is noise; on
a GPU the batch's parallelism is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from animegan_cli.engines.contract import StatsEngine
    from animegan_cli.engines.tiling import TilePlan

# The weight of the previous frame's statistics: a time constant of 1 / (1 - 0.8) = 5
# frames (a sixth of a second at 30 fps): the noise of the statistics shrinks by
# sqrt((1 - c) / (1 + c)) = 1/3, while a real change (a fade) is followed within ~10 frames.
CARRY = 0.8
# The median block difference (in full-scale units, 0 to 1) above which a frame starts a
# new scene: sensor noise moves the median by < 0.005, a 5% fade by ~0.025; two shots of
# different content differ by 0.1 or more in most of their blocks.
CUT_DISTANCE = 0.08
_GRID = 8  # thumbnail blocks per side
_THUMBNAIL_SAMPLES = 65536


def thumbnail(frame: torch.Tensor) -> np.ndarray:
    """The block means (_GRID * _GRID, 3) of a uint8 (3, H, W) frame, in 0..1."""
    import torch

    # A sample of at most ~65k pixels: a 4K frame in float would take 100 MB.
    stride = max(1, math.isqrt(frame.shape[1] * frame.shape[2] // _THUMBNAIL_SAMPLES))
    sample = frame[:, ::stride, ::stride].float()
    blocks = torch.nn.functional.adaptive_avg_pool2d(sample[None], _GRID)[0]
    return (blocks.reshape(3, -1).T / 255).numpy()


def cut_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The median over the blocks of two thumbnails' difference (mean over channels)."""
    return float(np.median(np.abs(a - b).mean(axis=1)))


@dataclass
class StatsSmoother:
    """One clip's frames, in order, each styled with the running average of the statistics
    (``carry`` 0: each with its own), whole or in tiles (``plan``)."""

    engine: StatsEngine
    carry: float = CARRY
    plan: TilePlan | None = None  # the clip's frames in tiles (None: whole)
    tile_batch: int = 1  # tiles that run together
    half_pixel: bool = True  # how the checkpoint's graph resizes (model/variants.py)
    cuts: int = 0  # scene cuts found (the average started again)
    _stats: np.ndarray | None = None  # the last frame's statistics as used, (1, L, 2)
    _thumbnail: np.ndarray | None = None  # the last frame's

    def run(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Style uint8 frames (N, 3, H, W), in clip order: uint8 (H, W, 3) results."""
        return [self._frame(frame) for frame in batch]

    def _frame(self, frame: torch.Tensor) -> torch.Tensor:
        if self.carry:
            last, self._thumbnail = self._thumbnail, thumbnail(frame)
            if last is not None and cut_distance(last, self._thumbnail) > CUT_DISTANCE:
                self.cuts += 1
                self._stats = None
        if self.plan is not None:
            return self._tiled(frame, self.plan)
        if self._stats is None:  # the clip's first frame, or a scene's: its own statistics
            pixels, self._stats = self.engine.run_stats(frame[None])
        else:
            mix = np.array([self.carry], np.float32)
            pixels, self._stats = self.engine.run_stats(frame[None], self._stats, mix)
        return pixels[0]

    def _tiled(self, frame: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """A frame in tiles: its own statistics from the plan's smaller pass, averaged."""
        from animegan_cli.engines.tiling import measure_stats, run_tiled

        own = measure_stats(self.engine, frame, plan)[None]
        if self._stats is None:
            self._stats = own
        else:
            self._stats = self.carry * self._stats + (1 - self.carry) * own
        return run_tiled(self.engine, frame, plan, self.tile_batch, stats=self._stats[0],
                         half_pixel=self.half_pixel)
