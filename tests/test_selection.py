"""Selecting inputs by mtime (--since, --newer-than) and by shard (--shard I/N)."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from animegan_cli.core.errors import UsageError
from animegan_cli.records.selection import Selection, parse_shard, parse_since, shard_of

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def test_since_reads_dates_datetimes_and_ages():
    assert parse_since("2026-11-01") == datetime(2026, 11, 1).astimezone()
    assert parse_since("2026-11-01T12:30") == datetime(2026, 11, 1, 12, 30).astimezone()
    assert parse_since("2026-11-01T12:30+02:00") == datetime(
        2026, 11, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_since("7d", now=NOW) == NOW - timedelta(days=7)
    assert parse_since("-12h", now=NOW) == NOW - timedelta(hours=12)
    assert parse_since("30m", now=NOW) == NOW - timedelta(minutes=30)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "7 days", ""])
def test_since_rejects_other_text(text):
    with pytest.raises(UsageError, match="--since"):
        parse_since(text)


def test_shard_parses_i_of_n_counting_from_zero():
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard("3/4") == (3, 4)
    for bad in ["4/4", "1/0", "a/b", "1", "-1/4"]:
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_shards_are_disjoint_cover_everything_and_are_balanced():
    paths = [Path(f"album{i % 7}/IMG_{i:04d}.jpg") for i in range(2000)]
    for count in (1, 3, 8):
        owners = [shard_of(p, count) for p in paths]
        assert all(0 <= o < count for o in owners)  # each path in exactly one shard
        sizes = Counter(owners)
        assert set(sizes) == set(range(count))
        assert max(sizes.values()) < 1.25 * len(paths) / count
    # Stable: decided by the relative path alone, whatever the machine, the run or the
    # version (a change here would move files between the shards of running cron jobs).
    assert shard_of(Path("album/IMG_0001.jpg"), 1000) == 796


def test_shard_exclusion_partitions_inputs():
    paths = [Path(f"{i}.png") for i in range(300)]
    chosen = [
        {p for p in paths if Selection.build(shard=(i, 3)).shard_exclusion(p) is None}
        for i in range(3)
    ]
    assert set().union(*chosen) == set(paths)
    assert sum(len(c) for c in chosen) == len(paths)


def test_since_keeps_at_or_after_and_newer_than_is_strict(tmp_path):
    ref = tmp_path / "last-run"
    ref.write_text("")
    os.utime(ref, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    newer = Selection.build(newer_than=ref)
    assert newer.time_exclusion(2_000_000_000_000_000_001) is None
    assert "not newer than" in newer.time_exclusion(2_000_000_000_000_000_000)
    moment = datetime(2033, 1, 1, tzinfo=timezone.utc)
    since = Selection.build(since=moment)
    at_ns = int(moment.timestamp()) * 1_000_000_000
    assert since.time_exclusion(at_ns) is None
    assert "before --since" in since.time_exclusion(at_ns - 1)


def test_newer_than_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--newer-than"):
        Selection.build(newer_than=tmp_path / "nope")
