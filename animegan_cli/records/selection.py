"""Which inputs a run takes: by modification time (--since, --newer-than) and by shard."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from animegan_cli.core.errors import UsageError

_AGE = re.compile(r"^(\d+)([smhdw])$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A point in time from an ISO 8601 date or datetime (local time unless it has an offset),
    or an age such as ``7d``, ``12h``, ``30m`` (that long before ``now``)."""
    value = text.strip()
    age = _AGE.match(value.lstrip("-"))
    if age:
        delta = timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
        return (now or datetime.now().astimezone()) - delta
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a date (2026-11-01), a date and time "
            "(2026-11-01T12:00, local time unless an offset is given) or an age (7d, 12h, 30m)"
        ) from None
    # astimezone() reads a naive datetime as local time, as `find -newermt` does.
    return moment.astimezone()


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N): shard I (0-based) of N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I counts from 0)")
    shard = (int(match.group(1)), int(match.group(2)))
    check_shard(shard)
    return shard


def check_shard(shard: tuple[int, int]) -> None:
    """Raise UsageError unless 0 <= I < N."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise UsageError(
            f"--shard {index}/{count}: I must be between 0 and N-1 (it counts from 0; "
            "for a 1-based Slurm array use $((SLURM_ARRAY_TASK_ID - 1)))"
        )


def shard_of(relative: Path, count: int) -> int:
    """The shard (0..count-1) an input belongs to, from a hash of its relative POSIX path.

    The hash depends only on the path below the input root, so every machine and every run
    agrees on it, wherever the folder is mounted.
    """
    key = relative.as_posix().encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Selection:
    """The --since / --newer-than / --shard filters of one run, resolved once."""

    shard: tuple[int, int] | None = None
    since: datetime | None = None
    newer_than: Path | None = None
    since_ns: int | None = None
    newer_than_ns: int | None = None

    @classmethod
    def build(
        cls,
        shard: tuple[int, int] | None = None,
        since: datetime | None = None,
        newer_than: Path | None = None,
    ) -> Selection:
        """Check the filters and read the reference file's mtime (once, before the walk)."""
        if shard is not None:
            check_shard(shard)
        since_ns = None
        if since is not None:
            since_ns = int(since.astimezone().timestamp() * 1_000_000_000)
        newer_than_ns = None
        if newer_than is not None:
            try:
                newer_than_ns = os.stat(newer_than).st_mtime_ns
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise UsageError(f"--newer-than {newer_than}: {reason}") from exc
        return cls(shard, since, newer_than, since_ns, newer_than_ns)

    @property
    def by_time(self) -> bool:
        """Whether the filters need each input's mtime."""
        return self.since_ns is not None or self.newer_than_ns is not None

    def shard_exclusion(self, relative: Path) -> str | None:
        """Why an input is outside this run's shard, or None when it is inside."""
        if self.shard is None:
            return None
        index, count = self.shard
        if shard_of(relative, count) == index:
            return None
        return f"excluded: not in --shard {index}/{count}"

    def time_exclusion(self, mtime_ns: int) -> str | None:
        """Why an input with this mtime is left out by --since / --newer-than, or None."""
        if self.since_ns is not None and mtime_ns < self.since_ns:
            return f"excluded: modified before --since {self.since.isoformat()}"  # type: ignore[union-attr]
        if self.newer_than_ns is not None and mtime_ns <= self.newer_than_ns:
            return f"excluded: not newer than --newer-than {self.newer_than}"
        return None
