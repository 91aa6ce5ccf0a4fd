"""Decoding and preparing images for the model, in DataLoader workers; PIL <-> tensor.

numpy and torch are imported inside the functions that make or read tensors: planning
(headers, limits, settings) must not pay for them in a run with nothing to convert.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from PIL import Image, ImageOps

from animegan_cli.core.errors import InputImageError
from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.core.files import hash_bytes, open_regular
from animegan_cli.core.limits import MIN_SIDE
from animegan_cli.core.orphans import end_with_parent
from animegan_cli.core.priority import lower_this_thread
from animegan_cli.core.units import format_bytes
from animegan_cli.settings import fields

try:  # HEIC/HEIF (phones) through the optional pillow-heif extra.
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - depends on the extra
    pass
else:
    register_heif_opener()

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

_EXIF_ORIENTATION = 0x0112

# Errors a decoder raises on a bad file that read as they are ("cannot decode: <message>").
# Anything else a decoder raises (pillow-heif's RuntimeError, DDS's NotImplementedError,
# SPIDER's AttributeError) still fails only its file, through failures.PER_ITEM_ERRORS, and
# its reason names the exception's type.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    IndexError,
    Image.DecompressionBombError,
)

# Largest image (width x height) decoded by default (--max-pixels; why 200 MP: see its
# declaration in settings/fields.py).
DEFAULT_MAX_PIXELS: int = fields.MAX_PIXELS.default

# The most bytes a file of W x H pixels can honestly take: every pixel stored raw at four
# 32-bit channels (more than any format Pillow reads stores), plus room for what is not
# pixels (metadata, thumbnails, a phone's depth map, an animation's further frames). A
# bigger file is not read: a 6 GB "photo.jpg" with a 40x28 header is not a photo.
MAX_FILE_BYTES_PER_PIXEL = 16
FILE_BYTES_BESIDE_PIXELS = 256 << 20


@dataclass(frozen=True)
class PreprocessSettings:
    """How inputs are sized: long side in pixels (0 = native), sides rounded to a multiple."""

    size: int = fields.SIZE.default
    multiple: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS  # 0 = no limit
    max_file_bytes: int = 0  # the largest file one decoder may read (the memory budget's); 0 = any
    # Pixels as numpy arrays rather than torch tensors: a run that decodes in its own
    # process for an engine that takes numpy (OpenVINO) never imports torch. Same values.
    numpy: bool = False


@dataclass(frozen=True)
class TilePart:
    """What makes a prepared item a tile of a larger model input (engines/tiling.py): the
    whole image's normalisation statistics (L, 2) and where the tile sits in it."""

    stats: Any  # numpy float32 (L, 2), model/norm_stats.py
    full: tuple[int, int]  # (H, W) of the whole model input
    origin: tuple[int, int]  # (y, x) of the tile's first pixel, multiples of 4
    image: Any = None  # the tiled image it belongs to (the stage's bookkeeping)


@dataclass
class PreparedImage:
    """One decoded input, ready for the model, or the reason it could not be prepared."""

    index: int
    # torch tensors, or numpy arrays (PreprocessSettings.numpy): the same values.
    pixels: torch.Tensor | None = None  # (3, H, W) uint8, model-sized
    alpha: torch.Tensor | None = None  # (H, W) uint8 at the oriented original size
    original_size: tuple[int, int] = (0, 0)  # (width, height) after EXIF orientation
    error: str | None = None
    seconds: float = 0.0
    blake2b: str | None = None  # BLAKE2b-256 of the bytes decoded (what the record must name)
    tile: TilePart | None = None  # a tile of a larger image, run with its statistics

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the model input; images of equal shape can share a batch."""
        assert self.pixels is not None
        return (int(self.pixels.shape[1]), int(self.pixels.shape[2]))

    @property
    def batch_key(self) -> tuple[int, int, bool]:
        """Items of one key share batches: one shape, all tiles (statistics given) or none."""
        return (*self.shape, self.tile is not None)


def target_size(width: int, height: int, size: int, multiple: int = 4) -> tuple[int, int]:
    """Model input size (w, h): long side ``size`` (0 = native), aspect kept, sides rounded."""
    if size == 0:
        return width, height
    scale = size / max(width, height)
    tw = max(multiple, round(width * scale / multiple) * multiple)
    th = max(multiple, round(height * scale / multiple) * multiple)
    return tw, th


def decode_image(path: Path, size: int = 0, max_pixels: int = 0) -> Image.Image:
    """Open, decode and orient an image; returns RGB or RGBA at its upright size.

    ``size`` lets JPEG decode at a reduced scale in the DCT domain (Pillow's draft mode)
    when the model input is much smaller than the photo: far cheaper than a full decode.
    An image over ``max_pixels`` (0 = no limit) is refused from its header alone.
    """
    return decode_with_size(path, size, max_pixels)[0]


def decode_with_size(
    path: Path | BinaryIO, size: int = 0, max_pixels: int = 0
) -> tuple[Image.Image, tuple[int, int]]:
    """Like decode_image (of a path or an open file), plus the upright (width, height) of
    the full-size image.

    With draft mode the decoded image is smaller than the file's; --keep-size must
    restore the file's size, so it is read from the header before the draft.
    """
    with Image.open(path) as img:
        return decode_opened(img, size, max_pixels)


def header_upright_size(path: Path) -> tuple[int, int] | None:
    """An image's (width, height) once upright, from its header alone; None if unreadable."""
    try:
        with own_pixel_limit(), Image.open(path) as img:
            width, height = img.size
            turned = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except PER_ITEM_ERRORS:  # whatever a damaged header raises, decoding will say why
        return None
    return (height, width) if turned else (width, height)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """InputImageError for an image over the --max-pixels limit (0 = no limit)."""
    if max_pixels and width * height > max_pixels:
        raise InputImageError(
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
            f"--max-pixels limit of {max_pixels / 1e6:g} MP; not decoded"
        )


def decode_opened(
    img: Image.Image, size: int = 0, max_pixels: int = 0
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an opened (or already decoded) image as decode_with_size does a file."""
    width, height = img.size
    check_pixels(width, height, max_pixels)
    if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
        width, height = height, width
    if size and img.format == "JPEG" and max(img.size) >= 2 * size:
        scale = size / max(img.size)
        img.draft("RGB", (int(img.size[0] * scale) + 1, int(img.size[1] * scale) + 1))
    img.load()
    img = ImageOps.exif_transpose(img)
    return to_rgb_or_rgba(img), (width, height)


def to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB, or RGBA when the image carries transparency."""
    if img.mode in ("RGB", "RGBA"):
        return img
    import numpy as np

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # convert("L") clips 16-bit values at 255; scale them down instead.
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if img.mode == "F":
        array = np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    has_alpha = "A" in img.getbands() or "transparency" in img.info or img.mode in ("RGBa", "La")
    return img.convert("RGBA" if has_alpha else "RGB")


def prepare_image(index: int, path: Path, settings: PreprocessSettings) -> PreparedImage:
    """Decode and resize one file for the model; a bad file yields an error, never an exception.

    Whatever decoding raises (failures.PER_ITEM_ERRORS) fails this file alone; Ctrl-C and
    SIGTERM (not Exceptions) still end the run.
    """
    start = time.perf_counter()
    digest = None
    try:
        # Read once, hash what is decoded: a file replaced after planning cannot give its
        # new pixels an output whose record names the old bytes' hash.
        data = read_within_limits(path, settings)
        digest = hash_bytes(data)
        img, original_size = decode_with_size(
            io.BytesIO(data), settings.size, settings.max_pixels
        )
        del data
        item = prepare_decoded(index, img, original_size, settings)
    except MemoryError:
        reason = "not enough memory to decode it; try --max-pixels or fewer --num-workers"
        return PreparedImage(index, error=reason, seconds=time.perf_counter() - start)
    except PER_ITEM_ERRORS as exc:
        return PreparedImage(index, error=describe_error(exc), seconds=time.perf_counter() - start)
    item.seconds, item.blake2b = time.perf_counter() - start, digest
    return item


def read_within_limits(path: Path, settings: PreprocessSettings) -> bytes:
    """A file's bytes, read whole only once its header and its size fit the limits.

    The header (a few kB) is read first: an image over --max-pixels, or a file bigger than
    its header's pixels can take or than one decoder may hold, fails before the rest is
    read into memory (InputImageError).
    """
    with open_regular(path) as handle:
        on_disk = os.fstat(handle.fileno()).st_size
        with Image.open(handle) as img:
            width, height = img.size
        check_pixels(width, height, settings.max_pixels)
        check_file_bytes(on_disk, width, height, settings.max_file_bytes)
        handle.seek(0)
        return handle.read()


def check_file_bytes(on_disk: int, width: int, height: int, max_file_bytes: int = 0) -> None:
    """InputImageError for a file too big to read: for its header's pixels, or for the budget."""
    could_take = width * height * MAX_FILE_BYTES_PER_PIXEL + FILE_BYTES_BESIDE_PIXELS
    if on_disk > could_take:
        raise InputImageError(
            f"file is {format_bytes(on_disk)}, more than a {width}x{height} image can take "
            f"(at most {format_bytes(could_take)}); not read"
        )
    if max_file_bytes and on_disk > max_file_bytes:
        raise InputImageError(
            f"file is {format_bytes(on_disk)}, more than one decoder may read within the "
            f"memory budget ({format_bytes(max_file_bytes)}, see --max-memory); not read"
        )


def prepare_decoded(
    index: int, img: Image.Image, original_size: tuple[int, int], settings: PreprocessSettings
) -> PreparedImage:
    """Split off the alpha and resize a decoded RGB(A) image for the model.

    ``original_size`` is the upright full size (--keep-size restores it); raises
    InputImageError when the image is too small for the model.
    """
    import numpy as np

    width, height = original_size
    alpha = None
    if img.mode == "RGBA":
        alpha = _as_pixels(np.array(img.getchannel("A")), settings)
        img = img.convert("RGB")
    tw, th = target_size(width, height, settings.size, settings.multiple)
    if min(tw, th) < MIN_SIDE:
        raise InputImageError(
            f"image is {width}x{height}, too small: the model needs at least "
            f"{MIN_SIDE} px on each side after resizing"
        )
    if (tw, th) != img.size:
        img = img.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=3.0)
    pixels = _as_pixels(np.array(img).transpose(2, 0, 1), settings)
    return PreparedImage(index, pixels, alpha, original_size)


def _as_pixels(array: np.ndarray, settings: PreprocessSettings) -> Any:
    """A decoded array as the run's pixels: itself (settings.numpy) or a tensor on its memory."""
    if settings.numpy:
        return array
    import torch

    return torch.from_numpy(array)


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed image, without Python noise."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image, or a format that cannot be read"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, FileNotFoundError):
        return "file not found (or a broken link)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if not isinstance(exc, (*DECODE_ERRORS, InputImageError)):
        return f"cannot decode: {item_failure_reason(exc)}"  # the type says what went wrong
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    if isinstance(exc, (InputImageError, Image.DecompressionBombError)):
        return text
    return f"cannot decode: {text}"


class ImageDataset:
    """Map-style dataset: item i is input file i, decoded and sized for the model.

    Not a torch Dataset subclass, so that this module imports without torch: a DataLoader
    takes any object with __len__ and __getitem__.
    """

    def __init__(self, paths: Sequence[Path], settings: PreprocessSettings) -> None:
        self.paths = list(paths)
        self.settings = settings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> PreparedImage:
        return prepare_image(index, self.paths[index], self.settings)


def _keep_as_is(item: Any) -> Any:  # batch_size=None: one item in, the same out
    return item


@contextlib.contextmanager
def own_pixel_limit() -> Iterator[None]:
    """Switch Pillow's process-wide decompression-bomb limit off while ours applies.

    Pillow refuses images over 2 x Image.MAX_IMAGE_PIXELS inside Image.open with a message
    of its own; --max-pixels replaces that check (decode_image), so it must not fire first.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _init_worker(_: int) -> None:
    import torch

    lower_this_thread()  # decoding ahead must not take the model's cores from it
    # Each worker decodes one image at a time; extra intra-op threads would only fight
    # the engine for the same cores.
    torch.set_num_threads(1)
    # A worker is our own process: --max-pixels (checked in decode_image) is the limit.
    Image.MAX_IMAGE_PIXELS = None
    end_with_parent()


def make_loader(
    dataset: Dataset | ImageDataset, num_workers: int, prefetch: int = 4
) -> DataLoader:
    """A DataLoader that yields single PreparedImages, decoded ahead by worker processes."""
    from torch.utils.data import DataLoader

    extra: dict[str, Any] = (
        {"prefetch_factor": prefetch, "worker_init_fn": _init_worker} if num_workers else {}
    )
    return DataLoader(
        cast("Dataset", dataset),  # ImageDataset is one by duck typing
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep_as_is,
        **extra,
    )


@dataclass
class ShapeBatcher:
    """Groups prepared images into batches of one shape; never pads one image to another.

    Padding would change the result (GroupNorm normalises over the whole image), so images
    only share a batch when their model input shapes are equal. To bound memory on folders
    of many different shapes, the fullest bucket is flushed once ``max_pending`` images wait.
    """

    batch_size: int
    max_pending: int = 0
    _buckets: dict[tuple[int, int, bool], list[PreparedImage]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _pending: int = 0

    def add(self, item: PreparedImage) -> Iterator[list[PreparedImage]]:
        """Add one image; yields the batches that became ready."""
        bucket = self._buckets[item.batch_key]
        bucket.append(item)
        self._pending += 1
        if len(bucket) >= self.batch_size:
            yield self._take(item.batch_key)
        elif self._pending > max(self.max_pending, self.batch_size * 4):
            yield self._take(max(self._buckets, key=lambda k: len(self._buckets[k])))

    def flush(self) -> Iterator[list[PreparedImage]]:
        """Yield every partial batch still waiting."""
        for key in list(self._buckets):
            yield self._take(key)

    def _take(self, key: tuple[int, int, bool]) -> list[PreparedImage]:
        batch = self._buckets.pop(key)
        self._pending -= len(batch)
        return batch


def batch_images(items: Iterable[PreparedImage], batch_size: int) -> Iterator[list[PreparedImage]]:
    """Batch a stream of prepared images by shape (failed items are not batched)."""
    batcher = ShapeBatcher(batch_size)
    for item in items:
        if item.pixels is not None:
            yield from batcher.add(item)
    yield from batcher.flush()


def stack_pixels(batch: Sequence[PreparedImage]) -> torch.Tensor:
    """(N, 3, H, W) uint8 tensor from a batch of equally shaped images (a numpy array from
    numpy pixels)."""
    import numpy as np

    if is_numpy(batch[0].pixels):
        return np.stack([item.pixels for item in batch])  # type: ignore[misc,return-value]
    import torch

    return torch.stack([item.pixels for item in batch])  # type: ignore[misc]


def is_numpy(array: object) -> bool:
    """Whether ``array`` is a numpy array rather than a torch tensor (importing neither)."""
    return type(array).__module__ == "numpy"


def to_output_image(
    pixels: torch.Tensor,
    alpha: torch.Tensor | None,
    original_size: tuple[int, int],
    keep_size: bool,
) -> Image.Image:
    """Styled uint8 (H, W, 3) -> PIL image, scaled back if asked, original alpha restored."""
    import numpy as np

    img = Image.fromarray(np.asarray(pixels), "RGB")
    if keep_size and img.size != original_size:
        img = img.resize(original_size, Image.Resampling.LANCZOS)
    if alpha is not None:
        mask = Image.fromarray(np.asarray(alpha), "L")
        if mask.size != img.size:
            mask = mask.resize(img.size, Image.Resampling.LANCZOS)
        img.putalpha(mask)
    return img
