"""Deciding, per input, whether a run leaves it out, skips it, reuses a result or converts it."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from animegan_cli.atomic import atomic_write
from animegan_cli.inputs import InputFile
from animegan_cli.provenance import (
    Manifest,
    Provenance,
    hash_files,
    read_embedded,
    settings_for_output,
)
from animegan_cli.selection import Selection

EXCLUDE, SKIP, CONVERT, DUPLICATE, COPY = "exclude", "skip", "convert", "duplicate", "copy"
FAIL = "fail"  # the input failed before planning (InputFile.error): never opened or hashed
UNKNOWN_PROVENANCE = "output exists, provenance unknown (--overwrite redoes it)"


@dataclass(frozen=True)
class Rules:
    """What an up-to-date output must match, and how to look at the inputs."""

    style: str
    checkpoint: str | None  # None: could not be identified (dry run); not compared
    settings: dict[str, object]
    quality: int = 95
    overwrite: bool = False
    trust_mtime: bool = False
    reuse_similar: int | None = None
    selection: Selection = field(default_factory=Selection)


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


def plan_work(
    inputs: Sequence[InputFile],
    planned: Sequence[Path],
    rules: Rules,
    manifest: Manifest,
) -> Plan:
    """Decide for every input; reads only stats, hashes and (rarely) output headers.

    An output is up to date when its record has this run's checkpoint and pixel settings
    and the input's BLAKE2b hash (with ``trust_mtime``: its size and mtime). Inputs with
    identical bytes are styled once; one identical to an up-to-date output of the same
    format gets a copy of it.
    """
    decisions: list[Decision | None] = [None] * len(inputs)
    plan = Plan([])
    pending: list[_Pending] = []
    known_hash: dict[int, str] = {}
    selection = rules.selection
    for i, (item, out) in enumerate(zip(inputs, planned)):
        excluded = selection.shard_exclusion(item.relative)
        if excluded is None and item.error is not None:
            decisions[i] = Decision(item, out, FAIL, item.error)
            continue
        stat = None
        if excluded is None:
            try:
                stat = os.stat(item.path)
            except OSError:
                stat = None  # the decoder says what is wrong with it
            if stat is not None and selection.by_time:
                excluded = selection.time_exclusion(stat.st_mtime_ns)
        if excluded is not None:
            decisions[i] = Decision(item, out, EXCLUDE, excluded)
            continue
        settings = settings_for_output(rules.settings, out, rules.quality)
        if rules.overwrite:
            pending.append(_Pending(i, stat, settings, "--overwrite"))
            continue
        exists, existing, from_manifest = _existing_record(manifest, out)
        if not exists:
            pending.append(_Pending(i, stat, settings, "no output yet"))
            continue
        if existing is None:
            decisions[i] = Decision(item, out, SKIP, UNKNOWN_PROVENANCE)
            continue
        changed = _mismatch(existing, settings, rules)
        entry = _Pending(i, stat, settings, changed or "", existing, from_manifest)
        if changed is None and rules.trust_mtime and _same_stat(existing, stat):
            decisions[i] = Decision(item, out, SKIP, "up to date (size and mtime unchanged)")
            if not from_manifest:
                plan.repairs.append((out, existing))
            if existing.similar_to is None:
                known_hash[i] = existing.input_blake2b
            continue
        pending.append(entry)

    hashes = hash_files([inputs[p.index].path for p in pending])
    reusable: dict[str, dict[str, Path]] = {}  # hash -> extension -> up-to-date output
    for i, h in known_hash.items():
        reusable.setdefault(h, {}).setdefault(planned[i].suffix.lower(), planned[i])
    to_write: list[tuple[_Pending, str | None]] = []
    for p, h in zip(pending, hashes):
        item, out, existing = inputs[p.index], planned[p.index], p.existing
        if existing is not None and not p.reason and h == existing.input_blake2b:
            decisions[p.index] = Decision(item, out, SKIP, "up to date")
            fresh = existing
            if p.stat is not None and p.stat.st_mtime_ns != existing.input_mtime_ns:
                # Same bytes, new mtime (touched, copied): refresh so --trust-mtime skips it.
                fresh = dataclasses.replace(existing, input_mtime_ns=p.stat.st_mtime_ns)
            if not p.from_manifest or fresh is not existing:
                plan.repairs.append((out, fresh))
            if existing.similar_to is None:
                reusable.setdefault(existing.input_blake2b, {}).setdefault(
                    out.suffix.lower(), out
                )
            continue
        if existing is not None and not p.reason:
            p.reason = "input changed" if h is not None else "input cannot be read"
        to_write.append((p, h))

    leaders: dict[str, int] = {}
    for p, h in to_write:
        item, out = inputs[p.index], planned[p.index]
        record = _record(h, p.stat, rules, p.settings)
        copy_from = reusable.get(h, {}).get(out.suffix.lower()) if h else None
        if copy_from is not None:
            decisions[p.index] = Decision(
                item, out, COPY, f"identical to the input of {copy_from}", record,
                source=copy_from,
            )
        elif h is not None and h in leaders:
            lead = inputs[leaders[h]]
            decisions[p.index] = Decision(
                item, out, DUPLICATE, f"identical to {lead.path}", record,
                leader=leaders[h], source=lead.path,
            )
        else:
            if h is not None:
                leaders[h] = p.index
            decisions[p.index] = Decision(item, out, CONVERT, p.reason, record)
    plan.decisions = [d for d in decisions if d is not None]
    return plan


def _existing_record(
    manifest: Manifest, output: Path
) -> tuple[bool, Provenance | None, bool]:
    """(exists, record, from_manifest) for an output: its record comes from the manifest
    when the entry still matches the file, else from the file's own metadata."""
    try:
        stat = os.stat(output)
    except OSError:
        return False, None, False
    entry = manifest.get(output)
    if entry is not None and entry.matches(stat):
        return True, entry.provenance, True
    return True, read_embedded(output), False


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
    if record.settings != settings:
        keys = sorted(set(record.settings) | set(settings))
        changes = [
            f"{k} {record.settings.get(k)} -> {settings.get(k)}"
            for k in keys
            if record.settings.get(k) != settings.get(k)
        ]
        return "settings changed: " + ", ".join(changes)
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
    """Write ``target`` as a byte copy of ``source`` (atomically), then record it.

    The copy keeps the source's embedded metadata, which differs from ``record`` only in the
    input's mtime; the manifest gets ``record`` itself.
    """
    with open(source, "rb") as original:
        # Inside the output folder: a symlinked folder on the way is refused, not followed.
        atomic_write(
            target, lambda handle: shutil.copyfileobj(original, handle), root=manifest.out_dir
        )
    manifest.record(target, record)
