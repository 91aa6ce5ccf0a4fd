"""``Stylizer``: the one in-memory way to style images; convert, and every later front end, call it.

A Stylizer holds one loaded checkpoint on one resolved engine, plus the settings that
decide an output's pixels. Its steps are public so that a pipeline can spread them over
processes and threads: ``prepare`` (decode, orient, mode, resize: in a DataLoader worker
for convert), ``run`` (one batch of one shape, on the engine), ``finish`` (alpha back,
``keep_size``). ``stylize`` chains the three for a list of images.
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from animegan_cli.core.errors import InputImageError, UsageError, WeightsError
from animegan_cli.core.failures import PER_ITEM_ERRORS
from animegan_cli.engines import contract as engines_contract
from animegan_cli.engines import tiling
from animegan_cli.engines.base import (
    Engine,
    EngineContext,
    EngineSpec,
    WarmupHandle,
    cached_engine,
    create_engine,
    resolve_spec,
    stats_engine,
    supports_norm_stats,
)
from animegan_cli.engines.memory import default_budget
from animegan_cli.media import colour, data
from animegan_cli.model.variants import VARIANTS
from animegan_cli.model.weights import (
    ResolvedWeights,
    WeightsStore,
    engine_cache_dir,
    load_generator,
)
from animegan_cli.records.staleness import recorded_settings
from animegan_cli.settings import fields

if TYPE_CHECKING:
    import torch

    from animegan_cli.model.generator import Generator

# What stylize() and prepare() take: a PIL image (opened or decoded), a file, or its bytes.
ImageSource = Image.Image | str | Path | bytes


def _ignore(message: str) -> None:
    pass


# The declared settings (settings/fields.py) that decide a result's pixels besides the engine.
PIXEL_FIELDS = (fields.SIZE, fields.KEEP_SIZE, fields.ALIGN_CORNERS, fields.MAX_PIXELS,
                fields.COLOUR)


@dataclass(frozen=True)
class PixelSettings:
    """The settings besides the engine that decide the pixels of a result (the model's size
    and the "pixels" group of settings/fields.py). ``preprocess`` is what of them the
    decoder needs; ``recorded`` what an output records (with the engine's)."""

    size: int = fields.SIZE.default  # long side of the model input; 0 = native size
    keep_size: bool = fields.KEEP_SIZE.default
    align_corners: bool = fields.ALIGN_CORNERS.default
    max_pixels: int = fields.MAX_PIXELS.default  # 0 = no limit
    colour: str = fields.COLOUR.default  # what the result keeps of the photo's (media/colour.py)

    def validate(self) -> None:
        """UsageError for values that cannot work (the declared checks)."""
        values = {s.name: getattr(self, s.name) for s in PIXEL_FIELDS}
        for problem in fields.problems(PIXEL_FIELDS, values):
            raise UsageError(problem)
        colour_problem = colour.colour_problem(self.colour)
        if colour_problem is not None:
            raise UsageError(colour_problem)

    @property
    def preprocess(self) -> data.PreprocessSettings:
        """How inputs are decoded and sized for the model."""
        return data.PreprocessSettings(size=self.size, max_pixels=self.max_pixels)


class Stylizer:
    """A checkpoint loaded on a resolved engine: images in, styled images out.

    Example::

        s = Stylizer.load("face_paint_512_v2", size=512)
        [result] = s.stylize([Image.open("photo.jpg")])
    """

    def __init__(
        self,
        engine: Engine,
        spec: EngineSpec,
        checkpoint: ResolvedWeights,
        pixels: PixelSettings,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.checkpoint = checkpoint
        self.pixels = pixels

    @classmethod
    def load(
        cls,
        style: str = fields.STYLE.default,
        *,
        weights: Path | str | None = None,
        size: int = fields.SIZE.default,
        keep_size: bool = fields.KEEP_SIZE.default,
        align_corners: bool = fields.ALIGN_CORNERS.default,
        max_pixels: int = fields.MAX_PIXELS.default,
        colour: str = fields.COLOUR.default,
        device: str = fields.DEVICE.default,
        backend: str = fields.BACKEND.default,
        precision: str = fields.PRECISION.default,
        threads: int | None = None,
        streams: int = fields.STREAMS.default,
        compile: bool = fields.COMPILE.default,
        shapes: str = fields.SHAPES.default,
        spec: EngineSpec | None = None,
        download: bool = True,
        progress: bool = False,
        on_message: Callable[[str], None] = _ignore,
        calibration: Callable[[], Sequence[torch.Tensor]] | None = None,
        expected_checkpoint: str | None = None,
        warmup: WarmupHandle | None = None,
    ) -> Stylizer:
        """Find (or download) a style or checkpoint file and set up its engine.

        ``spec`` (an already resolved EngineSpec) replaces device/backend/precision/
        threads/streams/compile/shapes. ``calibration`` supplies images for an INT8 model.
        ``expected_checkpoint`` is an id the caller already recorded: a checkpoint file
        replaced since is refused rather than run under the wrong id. ``warmup`` holds
        what the engine's warm-up made ahead (OpenVINO's compiled models) for it to adopt.
        """
        pixels = PixelSettings(size, keep_size, align_corners, max_pixels, colour)
        pixels.validate()
        if spec is None:
            spec = resolve_spec(device, backend, precision, threads,
                                streams=streams, compile=compile, shapes=shapes)
        # Verified by its bytes' id, parsed (torch) only if the engine needs the generator.
        resolved = WeightsStore.from_env().resolve(
            style,
            weights=Path(weights) if weights is not None else None,
            download=download,
            on_download=on_message,
            progress=progress,
            parse=False,
        )
        if expected_checkpoint is not None and resolved.checkpoint_id != expected_checkpoint:
            raise WeightsError(f"checkpoint {resolved.path} changed during the run; run it again")
        context = EngineContext(resolved.checkpoint_id, engine_cache_dir(spec.backend),
                                calibration, warmup,
                                generator=functools.partial(_generator, resolved, align_corners))
        engine = cached_engine(spec, context, align_corners)
        if engine is None:
            resolved = resolved.parsed()
            if spec.precision == "int8":
                on_message("quantizing the model to INT8 on the first images (cached afterwards)")
            engine = create_engine(_generator(resolved, align_corners), spec, context)
        return cls(engine, spec, resolved, pixels)

    @property
    def description(self) -> str:
        """What runs the model, e.g. "openvino cpu bf16 (runs bf16)"."""
        return self.engine.description

    @property
    def style(self) -> str:
        """The style name outputs record (a --weights file's own name unless published)."""
        return self.checkpoint.name

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint's git blob id, as provenance records it."""
        return self.checkpoint.checkpoint_id

    @property
    def settings(self) -> dict[str, object]:
        """The pixel settings provenance records for this Stylizer's outputs."""
        return recorded_settings(
            self.pixels.size,
            self.spec.precision,
            self.pixels.align_corners,
            self.pixels.keep_size,
            self.spec.backend,
            colour=self.pixels.colour,
        )

    def prepare(self, image: ImageSource, index: int = 0) -> data.PreparedImage:
        """Orient, convert and resize one image exactly as convert does.

        Raises InputImageError (with convert's one-line reason) for an image that cannot
        be styled. A file or bytes are decoded as convert decodes a file (JPEG draft mode
        included); so is a PIL image that was opened and not yet loaded.
        """
        try:
            with data.own_pixel_limit(), _opened(image) as img:
                decoded, original_size = data.decode_opened(
                    img, self.pixels.size, self.pixels.max_pixels
                )
                return data.prepare_decoded(index, decoded, original_size, self.pixels.preprocess)
        except InputImageError:
            raise
        except PER_ITEM_ERRORS as exc:  # whatever a damaged image makes a decoder raise
            raise InputImageError(data.describe_error(exc)) from exc

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The model's input size (w, h) for an upright image of ``width`` x ``height``."""
        preprocess = self.pixels.preprocess
        return data.target_size(width, height, preprocess.size, preprocess.multiple)

    def prepare_sized(
        self, image: Image.Image, original_size: tuple[int, int], index: int = 0
    ) -> data.PreparedImage:
        """Like prepare, for an upright RGB image already scaled to input_size(*original_size).

        Video frames come this way: FFmpeg scales and converts a frame in one pass, several
        times faster than decoding it to full size and resizing it with Pillow.
        """
        data.check_pixels(*original_size, self.pixels.max_pixels)
        return data.prepare_decoded(index, image, original_size, self.pixels.preprocess)

    def run(self, batch: Sequence[data.PreparedImage]) -> list[torch.Tensor]:
        """Style prepared images of one shape together: uint8 (H, W, 3) results, in order.

        numpy pixels (a torch-free run's, media.data) go to an engine that takes them as
        they are, and come back as numpy arrays; other engines get them as tensors. Tiles
        (items whose ``tile`` is set, all of the batch then) run with their image's
        normalisation statistics (engines/tiling.py).
        """
        # torch's pool matters only where torch runs: a run that never imported it has none.
        torch = sys.modules.get("torch")
        if torch is not None and self.spec.threads and torch.get_num_threads() != self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        stacked = data.stack_pixels(batch)
        parts = [item.tile for item in batch]
        if data.is_numpy(stacked) and (parts[0] is not None
                                       or not getattr(self.engine, "takes_numpy", False)):
            import torch as torch_module

            stacked = torch_module.from_numpy(stacked)
        if parts[0] is None:
            return list(self.engine.run(stacked))
        assert all(part is not None for part in parts), "tiles and whole images never share"
        return list(tiling.run_batch(
            self.stats_engine, stacked, [p.stats for p in parts],  # type: ignore[union-attr]
            [p.full for p in parts], [p.origin for p in parts],  # type: ignore[union-attr]
            self._half_pixel))

    @property
    def stats_engine(self) -> engines_contract.StatsEngine:
        """The engine as one that takes normalisation statistics (UsageError if it cannot)."""
        return stats_engine(self.engine, self.spec, "styling in tiles")

    def tile_plan(self, item: data.PreparedImage, tile: str | int = fields.TILE.default,
                  max_memory: int | None = None) -> tiling.TilePlan | None:
        """How ``item`` is tiled with ``tile`` (auto, off, a side) within ``max_memory``
        bytes (None: the default budget); None: styled whole. Never tiles on an engine
        without normalisation statistics (``auto``: the image runs whole as before)."""
        tile = tiling.parse_tile(tile)
        if tile == tiling.OFF:
            return None
        if not supports_norm_stats(self.spec):
            if tile == tiling.AUTO:
                return None  # styled whole, or refused where it does not fit, as before
            self.stats_engine  # noqa: B018  # raises: a tile side asked of an engine that cannot
        height, width = item.shape
        return tiling.plan_tiles(width, height, tile, max_memory or default_budget(),
                                 self.spec.precision, self.pixels.align_corners)

    def run_tiled(self, item: data.PreparedImage, plan: tiling.TilePlan,
                  batch_size: int = fields.BATCH_SIZE.default) -> torch.Tensor:
        """One prepared image styled in tiles: uint8 (H, W, 3), as run would give it."""
        assert item.pixels is not None
        return tiling.run_tiled(self.stats_engine, item.pixels, plan, batch_size,
                                half_pixel=self._half_pixel)

    @property
    def _half_pixel(self) -> bool:
        # How the checkpoint's graph resizes (tiles sample as the whole image would).
        return VARIANTS[self.checkpoint.variant].half_pixel

    def finish(self, item: data.PreparedImage, pixels: torch.Tensor) -> Image.Image:
        """The image convert would encode: the photo's colours kept as ``colour`` says (at the
        model's size), alpha put back, scaled back with ``keep_size``."""
        kept = self.keep_colour(item, pixels)
        return data.to_output_image(kept, item.alpha, item.original_size, self.pixels.keep_size)

    def keep_colour(self, item: data.PreparedImage, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` (a styled (H, W, 3) uint8 result) with ``colour``'s keeping against the
        image the model saw (``item.pixels``); as they are with ``style``.

        ``finish`` calls it; a result that is not finished, such as a face crop pasted into
        its styled image (faces/), gets it here.
        """
        assert item.pixels is not None  # prepared
        return colour.keep(self.pixels.colour, item.pixels, pixels)

    def stylize(self, images: Sequence[ImageSource],
                batch_size: int = fields.BATCH_SIZE.default,
                tile: str | int = fields.TILE.default,
                max_memory: int | None = None) -> list[Image.Image]:
        """Style images (list in, list out, same order); images of one shape share batches.

        ``tile``: "auto" styles in tiles an image that does not fit ``max_memory`` bytes
        (None: convert's default budget), "off" never, a number: tiles of that side
        wherever the image is larger (docs/tiles.md).
        """
        if batch_size < 1:
            raise UsageError("batch size must be at least 1")
        prepared = [self.prepare(image, i) for i, image in enumerate(images)]
        results: list[Image.Image | None] = [None] * len(prepared)
        whole = []
        for item in prepared:
            plan = self.tile_plan(item, tile, max_memory)
            if plan is None:
                whole.append(item)
            else:
                results[item.index] = self.finish(item, self.run_tiled(item, plan, batch_size))
        for batch in data.batch_images(whole, batch_size):
            for item, pixels in zip(batch, self.run(batch)):
                results[item.index] = self.finish(item, pixels)
        return results  # type: ignore[return-value]


def _generator(resolved: ResolvedWeights, align_corners: bool) -> Generator:
    """The checkpoint's generator, parsed now (an engine built from its cache asks late)."""
    parsed = resolved.parsed()
    assert parsed.state_dict is not None
    return load_generator(parsed.state_dict, align_corners=align_corners, variant=parsed.variant)


@contextlib.contextmanager
def _opened(source: ImageSource) -> Iterator[Image.Image]:
    """An image source as an opened PIL image; closed afterwards when opened here."""
    if isinstance(source, Image.Image):
        yield source
        return
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        yield img
