"""``--faces`` inside convert: crop-mode planning, and the stage that detects faces, sends
their 512x512 crops through the run's batches and hands the results to the Writer.

Crop mode writes ``<stem>_face<K>`` per face, and how many is known only after decoding.
Planning therefore looks at one *anchor* per input: ``<stem>_face1`` (or, when the last run
found no face and ``--faces-fallback whole`` converted it whole, the plain ``<stem>``
output). The anchor's record says how many faces there were (``face_count``, recorded but
not compared): an up-to-date anchor whose siblings are all present, with records of the
same input, is skipped; otherwise the input is converted again. After a conversion, the
crops beyond today's count (and a whole-image fallback output) that carry a crop-mode
record are deleted and the run says so: an old crop never stays claiming to be current.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import torch
from PIL import Image

from animegan_cli.core.files import hash_bytes, open_regular
from animegan_cli.engines.base import NON_FINITE_REASON
from animegan_cli.faces import blend as face_blend
from animegan_cli.faces.detect import (
    FACE_SIZE,
    NO_FACE,
    Box,
    FaceSettings,
    crop_output,
    find_faces,
    largest_faces,
)
from animegan_cli.media import data
from animegan_cli.pipeline.writer import Target, Writer
from animegan_cli.records import incremental
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.record import Provenance
from animegan_cli.records.staleness import RESULT_SETTINGS

CHANGED = "changed while the run was reading it; run it again"
_FACE_PREP = data.PreprocessSettings(size=FACE_SIZE, max_pixels=0)


def record_of(manifest: Manifest, path: Path) -> Provenance | None:
    """An existing output's record (manifest entry, else embedded); None when absent or none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    entry = manifest.match(path, stat)
    return entry.provenance if entry is not None else read_embedded(path)


def _is_crop_output(record: Provenance | None) -> TypeGuard[Provenance]:
    return record is not None and record.settings.get("faces") == "crop"


def base_of(anchor: Path) -> Path:
    """The plain output name an anchor (``<stem>_face1`` or ``<stem>``) stands for."""
    stem = anchor.stem
    return anchor.with_name(stem[: -len("_face1")] + anchor.suffix) if stem.endswith(
        "_face1") else anchor


def anchors(planned: list[Path], manifest: Manifest) -> list[Path]:
    """Crop mode: the output planning looks at for each input (see the module docstring)."""
    chosen = []
    for out in planned:
        first = crop_output(out, 1)
        whole = not first.exists() and _is_crop_output(record_of(manifest, out))
        chosen.append(out if whole else first)
    return chosen


def recheck_crops(plan: incremental.Plan, manifest: Manifest) -> None:
    """Crop mode: convert again what planning would copy (a copy gives only the anchor) or
    skip while one of its crops is missing or from another input."""
    for d in plan.decisions:
        if d.action == incremental.COPY:
            assert d.record is not None
            d.action, d.source, d.reason = incremental.CONVERT, None, "no output yet"
            d.record = _plain_record(d.record)
        elif d.action == incremental.SKIP and d.output != base_of(d.output):
            problem = _sibling_problem(d.output, manifest)
            if problem is not None:
                record = record_of(manifest, d.output)
                assert record is not None
                d.action, d.reason, d.record = incremental.CONVERT, problem, _plain_record(record)


def _sibling_problem(anchor: Path, manifest: Manifest) -> str | None:
    first = record_of(manifest, anchor)
    if first is None:
        return None
    count = first.settings.get("face_count")
    for k in range(2, count + 1 if isinstance(count, int) else 2):
        path = crop_output(base_of(anchor), k)
        record = record_of(manifest, path)
        if record is None or record.input_blake2b != first.input_blake2b:
            return f"face crop {path.name} missing or from another input"
    return None


def _plain_record(record: Provenance) -> Provenance:
    """A record without what one detection found (face_count, face_box...)."""
    settings = {k: v for k, v in record.settings.items() if k not in RESULT_SETTINGS}
    return dataclasses.replace(record, settings=settings, similar_to=None, distance=None)


def _with_faces(record: Provenance, found: dict[str, object]) -> Provenance:
    return dataclasses.replace(record, settings={**_plain_record(record).settings, **found})


@dataclass
class _Job:
    """One input in faces mode: its parts in the batches, and their results as they come."""

    target: Target
    whole: data.PreparedImage
    boxes: list[Box]  # in the upright original's pixels, reading order
    crops: list[Box]
    parts: list[data.PreparedImage]
    spent: float
    found: int  # faces detected; more than len(boxes) where --max-faces left some out
    results: dict[int, torch.Tensor] = field(default_factory=dict)  # id(part) -> pixels
    failed: bool = False

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.parts)

    def report(self) -> dict[str, object]:
        """What --json and --report say about this input's faces."""
        return {"count": len(self.boxes), "boxes": [b.as_list() for b in self.boxes]}

    def recorded(self) -> dict[str, object]:
        """What every output of this input records about the detection."""
        capped = {"faces_found": self.found} if self.found > len(self.boxes) else {}
        return {"face_count": len(self.boxes), **capped}


class FaceStage:
    """Between the decoders and the model: faces found, crops batched, results written.

    A stage of the styling loop (pipeline/loop.py's Stage): ``admit`` gives an image's parts
    (the whole image and its face crops), ``take`` collects their results."""

    def __init__(
        self,
        settings: FaceSettings,
        writer: Writer,
        manifest: Manifest,
        on_message: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.detector = settings.build_detector()
        self.writer = writer
        self.manifest = manifest
        self.on_message = on_message
        self._owner: dict[int, _Job] = {}  # id(part) -> its job

    def admit(self, item: data.PreparedImage, target: Target) -> list[data.PreparedImage]:
        """Find ``item``'s faces; returns the parts to batch (none when it failed)."""
        start = time.perf_counter()
        try:
            upright = self._read_upright(target.lead.item.path, item)
        except data.DECODE_ERRORS + (ValueError,) as exc:
            reason = CHANGED if isinstance(exc, ValueError) else data.describe_error(exc)
            self.writer.fail(target, reason, item.seconds)
            return []
        found = find_faces(self.detector, upright)
        boxes = self._capped(found, target)
        if not boxes and self.settings.mode == "crop" and self.settings.fallback == "fail":
            self._remove_stale(target, 1, keep_whole=False)
            self.writer.fail(target, NO_FACE, item.seconds + time.perf_counter() - start)
            return []
        crops = [face_blend.square_crop(b, self.settings.margin, *upright.size) for b in boxes]
        parts = [self._face_item(upright, c) for c in crops]
        if self.settings.mode == "paste" or not boxes:  # paste without a face: the whole image
            parts = [item, *parts]
        job = _Job(target, item, boxes, crops, parts, item.seconds + time.perf_counter() - start,
                   len(found))
        for part in parts:
            self._owner[id(part)] = job
        return parts

    def take(self, item: data.PreparedImage, pixels: torch.Tensor | None,
             reason: str = NON_FINITE_REASON) -> bool:
        """Keep one styled part (None: it failed, for ``reason``); False when ``item`` is not
        the stage's."""
        job = self._owner.pop(id(item), None)
        if job is None:
            return False
        if job.failed:
            return True
        if pixels is None:  # one bad part fails the input; its other parts are dropped
            job.failed = True
            job.results.clear()
            self.writer.fail(job.target, reason, job.spent)
            return True
        job.results[id(item)] = pixels
        if job.complete:
            self._write(job)
        return True

    def settled(self, item: data.PreparedImage, pixels: torch.Tensor | None, reason: str) -> None:
        """Nothing to do: the stage writes its inputs' results itself (a loop Stage's hook)."""

    def _capped(self, found: list[Box], target: Target) -> list[Box]:
        """The faces to style: at most --max-faces, the largest, said once for the image."""
        limit = self.settings.max_faces
        if len(found) > limit:
            self.on_message(f"{target.lead.item.path}: {len(found)} faces found; styling the "
                            f"{limit} largest (--max-faces {limit})")
        return largest_faces(found, limit)

    def _read_upright(self, path: Path, item: data.PreparedImage) -> Image.Image:
        """The input at full size, upright: faces are cropped from every pixel it has."""
        with open_regular(path) as handle:
            raw = handle.read()
        if item.blake2b is not None and hash_bytes(raw) != item.blake2b:
            raise ValueError(CHANGED)
        with data.own_pixel_limit(), Image.open(io.BytesIO(raw)) as img:
            return data.decode_opened(img, 0, 0)[0]

    def _face_item(self, upright: Image.Image, crop: Box) -> data.PreparedImage:
        face = face_blend.face_input(upright, crop)
        return data.prepare_decoded(-1, face, face.size, _FACE_PREP)

    def _write(self, job: _Job) -> None:
        found = job.report()
        if self.settings.mode == "paste":
            self._write_paste(job, found)
            return
        faces = job.parts if job.boxes else []
        for k, (part, box) in enumerate(zip(faces, job.boxes), 1):
            recorded = {**job.recorded(), "face_index": k,
                        "face_box": ",".join(map(str, box.as_list()))}
            crop = Target(*self._renamed(job.target, k, recorded))
            self.writer.submit(crop, part, job.results[id(part)], job.spent / len(faces),
                               faces={**found, "index": k})
        if not job.boxes:  # --faces-fallback whole
            whole = Target(*self._renamed(job.target, 0, {"face_count": 0}))
            self.writer.submit(whole, job.whole, job.results[id(job.whole)], job.spent,
                               faces=found)
        self._remove_stale(job.target, len(job.boxes) + 1, keep_whole=not job.boxes)

    def _write_paste(self, job: _Job, found: dict[str, object]) -> None:
        boxes = ";".join(",".join(map(str, b.as_list())) for b in job.boxes[:40])
        for d in job.target.decisions:
            assert d.record is not None
            d.record = _with_faces(d.record, {**job.recorded(), "face_boxes": boxes})
        # Each face keeps the photo's colours (--colour) as its image does in Stylizer.finish.
        keep_colour = self.writer.stylizer.keep_colour
        faces = [(crop, keep_colour(part, job.results[id(part)]))
                 for crop, part in zip(job.crops, job.parts[1:])]
        original = job.whole.original_size

        def compose(image: Image.Image) -> Image.Image:
            for crop, pixels in faces:
                region = face_blend.output_region(crop, original, image.size)
                face = Image.fromarray(pixels.numpy(), "RGB")
                image = face_blend.paste_face(image, face, region)
            return image

        self.writer.submit(job.target, job.whole, job.results[id(job.whole)], job.spent,
                           compose=compose, faces=found)

    def _renamed(
        self, target: Target, k: int, recorded: dict[str, object]
    ) -> tuple[incremental.Decision, list[incremental.Decision]]:
        """``target``'s decisions for face ``k`` (0: the whole image), records included."""

        def one(d: incremental.Decision) -> incremental.Decision:
            assert d.record is not None
            base = base_of(d.output)
            out = crop_output(base, k) if k else base
            return dataclasses.replace(d, output=out, record=_with_faces(d.record, recorded))

        return one(target.lead), [one(d) for d in target.duplicates]

    def _remove_stale(self, target: Target, first: int, keep_whole: bool) -> None:
        """Delete crops ``first`` and beyond (and the fallback output unless kept) that
        carry a crop-mode record: they are no longer this input's faces."""
        for d in target.decisions:
            base = base_of(d.output)
            stale: list[tuple[Path, int | None]] = [] if keep_whole else [(base, None)]
            k = first
            while crop_output(base, k).exists():
                stale.append((crop_output(base, k), k))
                k += 1
            removed = [p for p, k in stale if self._remove_if_crop(p, k)]
            if removed:
                names = ", ".join(p.name for p in removed)
                self.on_message(f"{d.item.path}: removed {names}: no longer one of its faces")

    def _remove_if_crop(self, path: Path, index: int | None) -> bool:
        """Delete ``path`` if its record says it is crop ``index`` (None: the whole-image
        fallback) of a crop-mode run; another input's output of that name is left alone."""
        record = record_of(self.manifest, path)
        if not _is_crop_output(record) or record.settings.get("face_index") != index:
            return False
        try:
            path.unlink()
        except OSError as exc:
            self.on_message(f"cannot remove old face crop {path}: {exc.strerror or exc}")
            return False
        return True
