"""--tile inside convert: which images are tiled (decided when planning), and the loop stage.

``TilePlanner`` decides per input, from its header and the run's memory budget (read once),
whether it is styled in tiles and how (engines/tiling.py's ``plan_tiles``). Planning asks it
for what an output records (records/staleness.py: ``tiles``, the tile side, recorded;
``tile_stats``, the statistics' size, compared), so an output goes stale only where its
pixels would change; the styling loop asks it for the same plan, never a second decision.

``TileStage`` is a stage of the styling loop (pipeline/loop.py): it takes a planned image,
measures its statistics in one pass at the plan's size, and sends its tiles through the
run's batches (tiles of one shape share batches, with other images' tiles too); the styled
tiles are blended back, and the whole result goes to the Writer like any image's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.engines import tiling
from animegan_cli.engines.base import NON_FINITE_REASON, NonFiniteOutput
from animegan_cli.media import data, kinds, video
from animegan_cli.media.inputs import InputFile
from animegan_cli.pipeline.writer import Target
from animegan_cli.records.staleness import TILE_STATS_KEY, TILES_KEY

if TYPE_CHECKING:
    import contextlib

    import torch

    from animegan_cli.pipeline.writer import Writer
    from animegan_cli.stylizer import Stylizer



@dataclass
class TilePlanner:
    """Each input's tile plan (or none), decided once from its header and the budget."""

    tile: str | int
    size: int  # --size (0: native)
    budget: int
    precision: str
    align_corners: bool
    plans: dict[Path, tiling.TilePlan | None] = field(default_factory=dict)

    def plan(self, path: Path) -> tiling.TilePlan | None:
        """The plan for the image at ``path`` (None: styled whole)."""
        if path not in self.plans:
            self.plans[path] = self._decide(path)
        return self.plans[path]

    def _decide(self, path: Path) -> tiling.TilePlan | None:
        upright = data.header_upright_size(path)
        if upright is None:
            return None  # decoding will say what is wrong with it
        width, height = data.target_size(*upright, self.size)
        return tiling.plan_tiles(width, height, self.tile, self.budget, self.precision,
                                 self.align_corners)

    def clip_plan(self, path: Path) -> tiling.TilePlan | None:
        """The plan for every frame of the clip at ``path``, from its header (None: styled
        whole, or not a clip PyAV reads: styling it will say why). runners/video_run.py
        styles the frames as the clip's record says, so this is its one decision."""
        if path not in self.plans:
            try:
                found = video.probe(path)
            except video.VideoError:
                self.plans[path] = None
            else:
                width, height = data.target_size(found.width, found.height, self.size)
                self.plans[path] = self._frame_plan(width, height)
        return self.plans[path]

    def _frame_plan(self, width: int, height: int) -> tiling.TilePlan | None:
        """Tiles for a clip's frames where a frame does not fit whole (as an image, so a
        clip styled whole before stays so), sized for what the codecs leave: they hold
        frames of their own (media/video.py), and a tiled clip is encoded lean."""
        whole = tiling.plan_tiles(width, height, self.tile, self.budget, self.precision,
                                  self.align_corners)
        if whole is None:
            return None
        room = self.budget - video.codec_bytes(width, height, lean=True)
        return tiling.plan_tiles(width, height, self.tile, room, self.precision,
                                 self.align_corners)

    def recorded(self, item: InputFile) -> dict[str, object]:
        """What the output of ``item`` records of its tiling ({}: styled whole)."""
        if item.kind not in (kinds.IMAGE, kinds.VIDEO):
            return {}
        plan = self.clip_plan(item.path) if item.kind == kinds.VIDEO else self.plan(item.path)
        if plan is None:
            return {}
        height, width = plan.stats_size
        return {TILES_KEY: f"{plan.tile}px", TILE_STATS_KEY: f"{width}x{height}"}


def planner_for(tile: str | int, size: int, budget: int, precision: str, align_corners: bool,
                stats_capable: bool) -> TilePlanner | None:
    """The run's planner, or None where no image can be tiled: --tile off, an engine without
    normalisation statistics under ``auto``, or every model input fitting the budget."""
    parsed = tiling.parse_tile(tile)
    if parsed == tiling.OFF or (parsed == tiling.AUTO and not stats_capable):
        return None
    if size and tiling.plan_tiles(size, size, parsed, budget, precision, align_corners) is None:
        return None  # the largest model input --size allows is not tiled: none is
    return TilePlanner(parsed, size, budget, precision, align_corners)


@dataclass
class _Tiled:
    """One image on its way through the loop in tiles."""

    item: data.PreparedImage
    image: tiling.TiledImage
    started: float
    failed: bool = False


class StylingLoop(Protocol):
    """What the stage uses of the loop that runs it (pipeline/loop.py imports this module)."""

    stylizer: Stylizer
    targets: list[Target]
    writer: Writer
    stages: list[Any]
    model_lock: contextlib.AbstractContextManager


@dataclass
class TileStage:
    """The loop stage: a planned image becomes its tiles; their results, the image's."""

    planner: TilePlanner
    loop: StylingLoop | None = None  # set by the loop that runs it

    def admit(self, item: data.PreparedImage, target: Target) -> list[data.PreparedImage] | None:
        plan = self.planner.plan(target.lead.item.path)
        if plan is None or item.pixels is None or plan.full != item.shape:
            return None
        assert self.loop is not None
        started = time.perf_counter()
        try:
            with self.loop.model_lock:  # a Ray actor's other call decodes meanwhile
                stats = tiling.measure_stats(self.loop.stylizer.stats_engine, item.pixels, plan)
        except NonFiniteOutput:
            self._fail(item, NON_FINITE_REASON, started)
            return []
        except PER_ITEM_ERRORS as exc:
            self._fail(item, f"the model failed on it: {item_failure_reason(exc)}", started)
            return []
        image = tiling.TiledImage(item.pixels, plan, stats)
        state = _Tiled(item, image, started)
        return [
            data.PreparedImage(
                item.index, image.crop(tile), None, item.original_size, blake2b=item.blake2b,
                tile=data.TilePart(stats, plan.full, tile.origin, (state, tile)),
            )
            for tile in image.tiles
        ]

    def take(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> bool:
        if item.tile is None or not isinstance(item.tile.image, tuple):
            return False
        state, tile = item.tile.image
        if state.failed:
            return True
        if pixels is None:
            state.failed = True
            self._fail(state.item, reason, state.started)
        elif state.image.add(tile, pixels):
            assert self.loop is not None
            result = state.image.result()
            target = self.loop.targets[state.item.index]
            self.loop.writer.submit(target, state.item, result, _spent(state.item, state.started))
            self._settled(state.item, result, reason)
        return True

    def settled(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> None:
        pass  # its own images' results it announces itself (_settled)

    def _fail(self, item: data.PreparedImage, reason: str, started: float) -> None:
        assert self.loop is not None
        self.loop.writer.fail(self.loop.targets[item.index], reason, _spent(item, started))
        self._settled(item, None, reason)

    def _settled(self, item: data.PreparedImage, pixels: torch.Tensor | None,
                 reason: str) -> None:
        assert self.loop is not None
        for stage in self.loop.stages:
            if stage is not self:
                stage.settled(item, pixels, reason)


def _spent(item: data.PreparedImage, started: float) -> float:
    return item.seconds + time.perf_counter() - started
