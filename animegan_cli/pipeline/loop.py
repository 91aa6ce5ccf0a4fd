"""The styling loop: prepared images -> stages -> shape batches -> the model -> the Writer.

One loop, driven by every runner: the local runner (convert.py) feeds it from its decoder
processes, a Ray actor (runners/ray_runner.py) from the inputs of its work items. Between
reading and the model sit *stages* (``Stage``): each may take an image in place of the loop
(``admit``: the parts to style instead, none when it settles the image itself) and may take
a styled part back (``take``) before the loop writes it as the image's result; ``settled``
hears every result the loop wrote or failed. The face stage (faces/stage.py) and the
reuse-similar stage (``ReuseLoopStage``) and the tile stage (pipeline/tiles.py) are
stages; a new one is one class and a line in ``stages_for``.

The per-item failure boundary (core/failures.py) is here: a batch the engine raises on
fails its inputs alone, a non-finite result fails its input alone; the run goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from animegan_cli.core.failures import PER_ITEM_ERRORS, item_failure_reason
from animegan_cli.engines.base import NON_FINITE_REASON, NonFiniteOutput
from animegan_cli.media import data
from animegan_cli.pipeline.results import FileResult, Summary
from animegan_cli.pipeline.similar import ReuseStage
from animegan_cli.pipeline.tiles import TilePlanner, TileStage
from animegan_cli.pipeline.writer import Lender, Target, Writer
from animegan_cli.records import incremental

if TYPE_CHECKING:
    import torch

    from animegan_cli.faces.detect import FaceSettings
    from animegan_cli.records.manifest import Manifest
    from animegan_cli.stylizer import Stylizer

CHANGED_WHILE_READING = "changed while the run was reading it; run it again"


class Stage(Protocol):
    """A step between reading an image and writing its result (see the module docstring)."""

    def admit(self, item: data.PreparedImage, target: Target) -> list[data.PreparedImage] | None:
        """None: the image goes on as it is. A list: the parts to style in its place."""

    def take(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> bool:
        """A styled part (None: it failed, for ``reason``); False when it is not the stage's."""

    def settled(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> None:
        """The loop wrote (pixels) or failed (None, for ``reason``) ``item``'s result."""


@dataclass
class ReuseLoopStage:
    """--reuse-similar as a loop stage: look-alikes borrow a result instead of being styled."""

    reuse: ReuseStage
    loop: StylingLoop | None = None  # set by the loop that runs it

    def admit(self, item: data.PreparedImage, target: Target) -> list[data.PreparedImage] | None:
        borrowed = self.reuse.admit(item)
        if borrowed is None:
            return None
        self._lend(borrowed)  # a look-alike's result, now or once it is styled
        return []

    def take(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> bool:
        return False

    def settled(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> None:
        assert self.loop is not None
        if pixels is not None:
            self._lend(self.reuse.styled(item, pixels))
            return
        for follower in self.reuse.failed(item):  # look-alikes that waited for it
            self.loop.writer.fail(self.loop.targets[follower.index], reason, follower.seconds)

    def _lend(self, borrowed: list) -> None:
        """Write look-alikes' results to the images that borrow them."""
        assert self.loop is not None
        targets = self.loop.targets
        for loan in borrowed:
            lender = Lender(targets[loan.lender], loan.distance)
            self.loop.writer.submit(
                targets[loan.item.index], loan.item, loan.pixels, loan.item.seconds, lender
            )


def stages_for(
    faces: FaceSettings,
    reuse_similar: int | None,
    writer: Writer,
    manifest: Manifest,
    on_message: Callable[[str], None],
    style_note: str | None = None,
    tiles: TilePlanner | None = None,
) -> list[Stage]:
    """The stages a run's settings turn on, in the order an image meets them."""
    stages: list[Stage] = []
    if tiles is not None:
        stages.append(TileStage(tiles))
    if faces.on:
        from animegan_cli.faces.stage import FaceStage  # needs OpenCV: only with --faces

        if style_note is not None:
            on_message(style_note)
        stages.append(FaceStage(faces, writer, manifest, on_message))
    if reuse_similar is not None:
        stages.append(ReuseLoopStage(ReuseStage(reuse_similar)))
    return stages


@dataclass
class StylingLoop:
    """Prepared images in, styled results out to the Writer; see the module docstring."""

    stylizer: Stylizer
    targets: list[Target]  # targets[i] is the input of prepared item i
    writer: Writer
    summary: Summary
    batch_size: int
    stages: list[Stage] = field(default_factory=list)
    # Held around each model run: a Ray actor's two calls take turns on its engine.
    model_lock: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)

    def __post_init__(self) -> None:
        self.batcher = data.ShapeBatcher(self.batch_size)
        for stage in self.stages:
            if isinstance(stage, (ReuseLoopStage, TileStage)):
                stage.loop = self

    def run(self, items: Iterable[data.PreparedImage]) -> None:
        """Style every prepared item; stops early when the writer stopped the run."""
        for item in items:
            self.summary.prepare_seconds += item.seconds
            if self.writer.stopped:
                break
            self.add(item)
        self.finish()

    def add(self, item: data.PreparedImage) -> None:
        """One prepared item: checked, through the stages, into the batches."""
        if not self.readable(item):
            return
        parts = self._admitted(item)
        for part in parts:
            for batch in self.batcher.add(part):
                self.style(batch)

    def finish(self) -> None:
        """Style what is left in the batcher."""
        for batch in self.batcher.flush():
            self.style(batch)

    def _admitted(self, item: data.PreparedImage) -> list[data.PreparedImage]:
        target = self.targets[item.index]
        for stage in self.stages:
            parts = stage.admit(item, target)
            if parts is not None:
                return parts
        return [item]

    def readable(self, item: data.PreparedImage) -> bool:
        """False, with its inputs reported failed, for an image that cannot be styled."""
        target = self.targets[item.index]
        if item.error is not None:
            self.writer.fail(target, item.error, item.seconds)
            return False
        if not changed_since_planning(item, target.lead):
            return True
        lead = target.lead
        self.writer.report(FileResult(
            lead.item.path, None, "failed", CHANGED_WHILE_READING, item.seconds, lead.reason
        ))
        for dup in target.duplicates:
            reason = f"identical to {lead.item.path}, which {CHANGED_WHILE_READING}"
            self.writer.report(FileResult(dup.item.path, None, "failed", reason, 0.0, dup.reason))
        return False

    def style(self, batch: list[data.PreparedImage]) -> None:
        """Run one batch on the model and queue its results; only non-finite ones fail.

        A batch the engine raises on fails its inputs alone; the run goes on.
        """
        if self.writer.stopped:
            return
        start = time.perf_counter()
        bad: set[int] = set()
        styled: list[torch.Tensor] | torch.Tensor  # the batch's tensor when some are bad
        try:
            with self.model_lock:  # a Ray actor's other call decodes meanwhile
                styled = self.stylizer.run(batch)
        except NonFiniteOutput as exc:
            styled, bad = exc.pixels, set(exc.bad)
        except PER_ITEM_ERRORS as exc:
            self._fail_batch(batch, f"the model failed on it: {item_failure_reason(exc)}",
                             time.perf_counter() - start)
            return
        spent = time.perf_counter() - start
        self.summary.engine_seconds += spent
        share = spent / len(batch)
        for position, (item, pixels) in enumerate(zip(batch, styled)):
            kept = None if position in bad else pixels
            self._result(item, kept, NON_FINITE_REASON, item.seconds + share)

    def _result(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str,
                spent: float) -> None:
        """One styled (or failed: None) item: to the stage that owns it, else written."""
        if any(stage.take(item, pixels, reason) for stage in self.stages):
            return
        target = self.targets[item.index]
        if pixels is None:
            self.writer.fail(target, reason, spent)
        else:
            self.writer.submit(target, item, pixels, spent)
        for stage in self.stages:
            stage.settled(item, pixels, reason)

    def _fail_batch(self, batch: list[data.PreparedImage], reason: str, spent: float) -> None:
        """Fail every input of a batch the engine could not run (a face's: its whole image)."""
        self.summary.engine_seconds += spent
        for item in batch:
            self._result(item, None, reason, item.seconds)


def changed_since_planning(item: data.PreparedImage, target: incremental.Decision) -> bool:
    """Whether the bytes decoded are not those hashed when planning (the file was replaced).

    An input that could not be hashed then gets the hash of what was decoded.
    """
    assert target.record is not None
    planned = target.record.input_blake2b
    if item.blake2b is None:
        return False
    if not planned:
        target.record = dataclasses.replace(target.record, input_blake2b=item.blake2b)
        return False
    return item.blake2b != planned
