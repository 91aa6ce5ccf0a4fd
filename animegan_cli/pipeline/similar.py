"""Perceptual hashes for --reuse-similar: near-identical images share one styled result."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from PIL import Image

if TYPE_CHECKING:  # numpy is imported where a hash is made: validate() reads HASH_BITS
    import numpy as np
    import torch

    from animegan_cli.media.data import PreparedImage

HASH_BITS = 64
# Styled results kept for later look-alikes; bounded so huge runs keep flat memory.
MAX_RESULT_BYTES = 256 << 20
MAX_CANDIDATES = 1024

Follower = TypeVar("Follower")


def dhash(pixels: torch.Tensor | np.ndarray) -> int:
    """64-bit difference hash of a (3, H, W) uint8 image.

    The image is shrunk to 9x8 gray cells; each bit says whether a cell is brighter than
    its left neighbour. Small edits, recompression and noise flip few bits; different
    pictures differ in about half of them.
    """
    import numpy as np

    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    gray = Image.fromarray(np.ascontiguousarray(array), "RGB").convert("L")
    cells = np.asarray(gray.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (cells[:, 1:] > cells[:, :-1]).flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


class SimilarIndex(Generic[Follower]):
    """The images of a run that others may borrow from, by model-input shape and dHash.

    An image is a candidate from the moment it is queued for the model. A look-alike that
    arrives before the candidate is styled waits for it; one that arrives after takes the
    kept result. Only the most recent results are kept (``max_bytes``, ``max_candidates``),
    so look-alikes far apart in the input order may both be styled.
    """

    def __init__(
        self,
        threshold: int,
        max_bytes: int = MAX_RESULT_BYTES,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        self.threshold = threshold
        self.max_bytes = max_bytes
        self.max_candidates = max_candidates
        self._by_shape: dict[tuple[int, int], dict[int, int]] = {}
        self._order: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._results: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._result_bytes = 0
        self._waiting: dict[int, list[Follower]] = {}

    def find(self, shape: tuple[int, int], value: int) -> tuple[int, int] | None:
        """(candidate, distance) of the closest candidate within the threshold, or None."""
        best: tuple[int, int] | None = None
        for index, other in self._by_shape.get(shape, {}).items():
            distance = hamming(value, other)
            if distance <= self.threshold and (best is None or distance < best[1]):
                best = (index, distance)
        return best

    def add(self, index: int, shape: tuple[int, int], value: int) -> None:
        """Make an image queued for the model a candidate."""
        self._by_shape.setdefault(shape, {})[index] = value
        self._order[index] = shape
        while len(self._order) > self.max_candidates:
            self._forget(next(iter(self._order)))

    def result(self, index: int) -> torch.Tensor | None:
        """A candidate's styled pixels, when it has been styled and is still kept."""
        return self._results.get(index)

    def wait(self, index: int, follower: Follower) -> None:
        """Hold a look-alike until candidate ``index`` is styled."""
        self._waiting.setdefault(index, []).append(follower)

    def styled(self, index: int, pixels: torch.Tensor) -> list[Follower]:
        """Keep a candidate's result; returns the look-alikes that waited for it."""
        if index in self._order:
            self._results[index] = pixels
            self._result_bytes += pixels.numel() * pixels.element_size()
            while self._result_bytes > self.max_bytes and self._results:
                self._forget(next(iter(self._results)))
        return self._waiting.pop(index, [])

    def drop(self, index: int) -> list[Follower]:
        """Withdraw a candidate whose result failed; returns the look-alikes that waited."""
        self._forget(index)
        return self._waiting.pop(index, [])

    def _forget(self, index: int) -> None:
        shape = self._order.pop(index, None)
        if shape is not None:
            self._by_shape[shape].pop(index, None)
        pixels = self._results.pop(index, None)
        if pixels is not None:
            self._result_bytes -= pixels.numel() * pixels.element_size()


@dataclass(frozen=True)
class Borrowed:
    """A look-alike's styled result handed to ``item`` instead of styling it."""

    item: PreparedImage
    pixels: torch.Tensor  # the lender's result, uint8 (H, W, 3)
    lender: int  # index of the image that was styled
    distance: int  # dHash distance between the two


class ReuseStage:
    """--reuse-similar as a stage in front of batching: look-alikes borrow, the rest pass.

    ``threshold`` None turns the stage off: every image passes and nothing is borrowed.
    """

    def __init__(self, threshold: int | None) -> None:
        self._index: SimilarIndex[tuple[PreparedImage, int]] | None = None
        if threshold is not None:
            self._index = SimilarIndex(threshold)

    def admit(self, item: PreparedImage) -> list[Borrowed] | None:
        """None: style ``item`` (it becomes a candidate). A list: ``item`` borrows.

        The list holds its result when the look-alike was styled already; it is empty when
        the look-alike is still on its way to the model (``styled`` hands it over later).
        """
        if self._index is None:
            return None
        value = dhash(item.pixels)  # type: ignore[arg-type]
        found = self._index.find(item.shape, value)
        if found is None:
            self._index.add(item.index, item.shape, value)
            return None
        lender, distance = found
        pixels = self._index.result(lender)
        if pixels is None:
            self._index.wait(lender, (item, distance))
            return []
        return [Borrowed(item, pixels, lender, distance)]

    def styled(self, item: PreparedImage, pixels: torch.Tensor) -> list[Borrowed]:
        """Keep ``item``'s result for later look-alikes; returns those that waited for it."""
        if self._index is None:
            return []
        waiting = self._index.styled(item.index, pixels)
        return [Borrowed(follower, pixels, item.index, distance) for follower, distance in waiting]

    def failed(self, item: PreparedImage) -> list[PreparedImage]:
        """Withdraw ``item``, whose result failed; returns the look-alikes that waited for it."""
        if self._index is None:
            return []
        return [follower for follower, _ in self._index.drop(item.index)]
