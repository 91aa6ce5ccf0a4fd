"""Deciding, per input, whether a run leaves it out, skips it, reuses a result or converts it."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat as stat_mode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.core.atomic import atomic_write
from animegan_cli.core.files import hash_files
from animegan_cli.media.inputs import InputFile
from animegan_cli.media.outputs import format_of
from animegan_cli.records.embedded import embeds_record, read_embedded
from animegan_cli.records.manifest import Manifest
from animegan_cli.records.record import Provenance
from animegan_cli.records.selection import Selection
from animegan_cli.records.staleness import engine_change, settings_change, settings_for_output
from animegan_cli.settings import fields

EXCLUDE, SKIP, CONVERT, DUPLICATE, COPY = "exclude", "skip", "convert", "duplicate", "copy"
FAIL = "fail"  # the input failed before planning (InputFile.error): never opened or hashed
UNKNOWN_PROVENANCE = "output exists, provenance unknown (--overwrite redoes it)"


@dataclass(frozen=True)
class Rules:
    """What an up-to-date output must match, and how to look at the inputs."""

    style: str
    checkpoint: str | None  # None: could not be identified (dry run); not compared
    settings: dict[str, object]
    quality: int = fields.QUALITY.default
    overwrite: bool = False
    trust_mtime: bool = False
    reuse_similar: int | None = None
    selection: Selection = field(default_factory=Selection)
    video_crf: int | None = None  # recorded (and compared) for video outputs
    video_smoothing: str | None = None  # the same; recorded only when not "off"
    # Settings that depend on the input itself (how --tile styles it: pipeline/tiles.py).
    per_input: Callable[[InputFile], dict[str, object]] | None = None


@dataclass
class Decision:
    """What a run does with one input, and why."""

    item: InputFile
    output: Path
    action: str  # EXCLUDE | SKIP | CONVERT | DUPLICATE | COPY | FAIL (reason: the error)
    reason: str
    record: Provenance | None = None  # what the output will record (CONVERT, DUPLICATE, COPY)
    leader: int | None = None  # DUPLICATE: index of the identical input that is styled
    source: Path | None = None  # DUPLICATE: that input's path; COPY: the output copied

    @property
    def writes(self) -> bool:
        """Whether the run writes this input's output."""
        return self.action in (CONVERT, DUPLICATE, COPY)


@dataclass
class Plan:
    """Every input's decision, plus manifest entries to write for outputs found up to date."""

    decisions: list[Decision]
    repairs: list[tuple[Path, Provenance]] = field(default_factory=list)


@dataclass
class _Pending:
    index: int
    stat: os.stat_result | None
    settings: dict[str, object]
    reason: str
    existing: Provenance | None = None
    from_manifest: bool = False
    note: str | None = None  # an up-to-date output made by another engine: says which
    trusted: bool = False  # up to date by size and mtime (--trust-mtime): not hashed


# hash -> extension -> an up-to-date output of an input with that hash, and its record
_Reusable = dict[str, dict[str, tuple[Path, Provenance]]]


def plan_work(
    inputs: Sequence[InputFile],
    planned: Sequence[Path],
    rules: Rules,
    manifest: Manifest,
) -> Plan:
    """Decide for every input; reads only stats, hashes and (rarely) output headers.

    An output is up to date when its record has this run's checkpoint, the settings that
    change pixels (staleness.staleness_key) and the input's BLAKE2b hash (with
    ``trust_mtime``: its size and mtime). Inputs with identical bytes are styled once; one
    identical to an up-to-date output of the same format, of this run or (through the
    manifest) of an earlier one, gets a copy of it.
    """
    decisions: list[Decision | None] = [None] * len(inputs)
    plan = Plan([])
    pending: list[_Pending] = []
    reusable: _Reusable = {}
    for i, (item, out) in enumerate(zip(inputs, planned)):
        look = _first_look(item, out, i, rules, manifest)
        if isinstance(look, Decision):
            decisions[i] = look
        elif look.trusted:  # --trust-mtime: up to date by its size and mtime
            assert look.existing is not None
            decisions[i] = Decision(item, out, SKIP, look.reason)
            if not look.from_manifest:
                plan.repairs.append((out, look.existing))
            _add_reusable(reusable, look.existing, out)
        else:
            pending.append(look)

    hashes = hash_files([inputs[p.index].path for p in pending])
    to_write: list[tuple[_Pending, str | None]] = []
    for p, h in zip(pending, hashes):
        skip = _skip_if_same_input(p, h, inputs[p.index], planned[p.index], plan)
        if skip is None:
            to_write.append((p, h))
            continue
        decisions[p.index] = skip
        assert p.existing is not None
        _add_reusable(reusable, p.existing, planned[p.index])

    earlier = ContentIndex(manifest, rules, {planned[p.index] for p, _ in to_write})
    leaders: dict[str, int] = {}
    for p, h in to_write:
        decisions[p.index] = _writing_decision(p, h, inputs, planned, rules, reusable,
                                               earlier, leaders)
    plan.decisions = [d for d in decisions if d is not None]
    return plan


def _first_look(
    item: InputFile, out: Path, index: int, rules: Rules, manifest: Manifest
) -> Decision | _Pending:
    """Decide from stats and records alone, or say what is left to hash."""
    selection = rules.selection
    excluded = selection.shard_exclusion(item.relative)
    if excluded is None and item.error is not None:
        return Decision(item, out, FAIL, item.error)
    stat = None
    if excluded is None:
        try:
            stat = os.stat(item.path)
        except OSError:
            stat = None  # the decoder says what is wrong with it
        if stat is not None and selection.by_time:
            excluded = selection.time_exclusion(stat.st_mtime_ns)
    if excluded is not None:
        return Decision(item, out, EXCLUDE, excluded)
    settings = settings_for_output(rules.settings, out, rules.quality, rules.video_crf,
                                   rules.video_smoothing)
    if rules.per_input is not None:
        settings.update(rules.per_input(item))
    if rules.overwrite:
        if os.path.isdir(out):
            return Decision(item, out, FAIL, f"output path {out} is a folder")
        return _Pending(index, stat, settings, "--overwrite")
    state, existing, from_manifest = _existing_record(manifest, out)
    if state == _FOLDER:
        return Decision(item, out, FAIL, f"output path {out} is a folder")
    if state == _ABSENT:
        return _Pending(index, stat, settings, "no output yet")
    if existing is None:
        return Decision(item, out, SKIP, UNKNOWN_PROVENANCE)
    changed = _mismatch(existing, settings, rules)
    note = engine_change(existing.settings, settings)
    entry = _Pending(index, stat, settings, changed or "", existing, from_manifest, note)
    if changed is None and rules.trust_mtime and _same_stat(existing, stat):
        entry.trusted = True
        entry.reason = "up to date (size and mtime unchanged" + (f"; {note})" if note else ")")
    return entry


def _add_reusable(reusable: _Reusable, record: Provenance, output: Path) -> None:
    if record.similar_to is None and record.input_blake2b:
        reusable.setdefault(record.input_blake2b, {}).setdefault(
            output.suffix.lower(), (output, record)
        )


def _skip_if_same_input(
    p: _Pending, digest: str | None, item: InputFile, out: Path, plan: Plan
) -> Decision | None:
    """SKIP when the output's record fits and names this input's hash; else None (and
    ``p.reason`` says why it is written)."""
    existing = p.existing
    if existing is None or p.reason:
        return None
    if digest != existing.input_blake2b:
        p.reason = "input changed" if digest is not None else "input cannot be read"
        return None
    fresh = existing
    if p.stat is not None and p.stat.st_mtime_ns != existing.input_mtime_ns:
        # Same bytes, new mtime (touched, copied): refresh so --trust-mtime skips it.
        fresh = dataclasses.replace(existing, input_mtime_ns=p.stat.st_mtime_ns)
    if not p.from_manifest or fresh is not existing:
        plan.repairs.append((out, fresh))
    reason = f"up to date ({p.note})" if p.note else "up to date"
    return Decision(item, out, SKIP, reason)


def _writing_decision(
    p: _Pending,
    digest: str | None,
    inputs: Sequence[InputFile],
    planned: Sequence[Path],
    rules: Rules,
    reusable: _Reusable,
    earlier: ContentIndex,
    leaders: dict[str, int],
) -> Decision:
    """COPY of an identical input's up-to-date output, DUPLICATE of an identical input
    styled in this run, or CONVERT."""
    item, out = inputs[p.index], planned[p.index]
    record = _record(digest, p.stat, rules, p.settings)
    found = None
    if digest is not None:
        found = reusable.get(digest, {}).get(out.suffix.lower())
        found = found or earlier.find(digest, out, p.settings)
    if found is not None:
        source, made = found
        # The copy's pixels (and embedded record) are the source's: record what made them.
        record = dataclasses.replace(
            made, input_size=record.input_size, input_mtime_ns=record.input_mtime_ns
        )
        return Decision(item, out, COPY, f"identical to the input of {source}", record,
                        source=source)
    if digest is not None and digest in leaders:
        lead = inputs[leaders[digest]]
        return Decision(item, out, DUPLICATE, f"identical to {lead.path}", record,
                        leader=leaders[digest], source=lead.path)
    if digest is not None:
        leaders[digest] = p.index
    return Decision(item, out, CONVERT, p.reason, record)


@dataclass
class ContentIndex:
    """Earlier runs' outputs by their input's hash, from the manifest: a new photo identical
    to one converted before (renamed, copied elsewhere, given in a list) gets a copy.

    Built on the first lookup (a run with nothing to write never pays for it); a candidate
    output is only stat-ed on a hit. ``busy`` are outputs this run writes: never a source.
    """

    manifest: Manifest
    rules: Rules
    busy: set[Path]
    _keys: dict[str, list[str]] | None = None

    def find(
        self, digest: str, out: Path, settings: dict[str, object]
    ) -> tuple[Path, Provenance] | None:
        """An existing output of the same format made from ``digest`` under this run's
        checkpoint and settings, and its record; None when there is none."""
        if self.rules.overwrite or self.rules.checkpoint is None:
            return None
        if self._keys is None:
            self._keys = self.manifest.keys_by_input_hash()
        extension = out.suffix.lower()
        for key in self._keys.get(digest, ()):
            source = self.manifest.out_dir / key
            if source.suffix.lower() != extension or source == out or source in self.busy:
                continue
            try:
                entry = self.manifest.match(source, os.stat(source))
            except OSError:
                continue
            if entry is not None and self._fits(entry.provenance, digest, settings):
                return source, entry.provenance
        return None

    def _fits(self, record: Provenance, digest: str, settings: dict[str, object]) -> bool:
        return (
            record.input_blake2b == digest
            and record.similar_to is None
            and record.checkpoint == self.rules.checkpoint
            and settings_change(record.settings, settings) is None
        )


_ABSENT, _FILE, _FOLDER = "absent", "file", "folder"


def _existing_record(
    manifest: Manifest, output: Path
) -> tuple[str, Provenance | None, bool]:
    """(state, record, from_manifest) for an output: its record comes from the manifest
    when an entry matches the file, else from the file's own metadata."""
    try:
        stat = os.stat(output)
    except OSError:
        return _ABSENT, None, False
    if stat_mode.S_ISDIR(stat.st_mode):
        return _FOLDER, None, False
    entry = manifest.match(output, stat)
    if entry is not None:
        return _FILE, entry.provenance, True
    return _FILE, read_embedded(output), False


def _same_stat(record: Provenance, stat: os.stat_result | None) -> bool:
    return stat is not None and (stat.st_size, stat.st_mtime_ns) == (
        record.input_size,
        record.input_mtime_ns,
    )


def _mismatch(record: Provenance, settings: dict[str, object], rules: Rules) -> str | None:
    """Why an existing output does not fit this run (its input aside), or None."""
    if rules.checkpoint is not None and record.checkpoint != rules.checkpoint:
        if record.style != rules.style:
            return f"style changed: {record.style} -> {rules.style}"
        return f"checkpoint changed: {record.checkpoint[:12]} -> {rules.checkpoint[:12]}"
    changed = settings_change(record.settings, settings)
    if changed is not None:
        return changed
    if record.similar_to is not None:
        allowed = rules.reuse_similar
        if allowed is None:
            return "made from a similar image and --reuse-similar is not given"
        if record.distance is None or record.distance > allowed:
            return f"made from a similar image at distance {record.distance} > {allowed}"
    return None


def _record(
    digest: str | None,
    stat: os.stat_result | None,
    rules: Rules,
    settings: dict[str, object],
) -> Provenance:
    return Provenance(
        input_blake2b=digest or "",
        input_size=stat.st_size if stat else 0,
        input_mtime_ns=stat.st_mtime_ns if stat else 0,
        style=rules.style,
        checkpoint=rules.checkpoint or "",
        settings=settings,
    )


def copy_output(source: Path, target: Path, record: Provenance, manifest: Manifest) -> None:
    """Write ``target`` as a byte copy of ``source`` (atomically), and record it.

    The copy keeps the source's embedded metadata, which differs from ``record`` only in the
    input's size and mtime; the manifest gets ``record`` itself, appended before the rename
    (see Manifest). A format without an embedded record (BMP) is not renamed into place
    when that append fails.
    """
    with open(source, "rb") as original:
        # Inside the output folder: a symlinked folder on the way is refused, not followed.
        atomic_write(
            target,
            lambda handle: shutil.copyfileobj(original, handle),
            root=manifest.out_dir,
            before_rename=record_before_rename(manifest, target, record),
        )


def record_before_rename(
    manifest: Manifest, output: Path, record: Provenance
) -> Callable[[os.stat_result], None]:
    """A ``before_rename`` hook that appends ``output``'s manifest entry.

    A failed append only warns (manifest.failure) where the output embeds its record; for
    a BMP it raises, so that no output exists whose provenance nobody knows.
    """

    def append(written: os.stat_result) -> None:
        try:
            manifest.add(output, written, record)
        except OSError as exc:
            if not embeds_record(format_of(output).pil_name):
                reason = f"manifest not updated ({manifest.failure or exc})"
                raise OSError(exc.errno, f"{reason}; a BMP has no record of its own") from exc

    return append
