"""Provenance records: hashing, embedding in each output format, the manifest, lookup."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from animegan_cli.core import atomic
from animegan_cli.core.errors import UsageError, WeightsError
from animegan_cli.core.files import hash_file, hash_files
from animegan_cli.media.outputs import write_image_atomic
from animegan_cli.model.weights import STYLES, WeightsStore, git_blob_id
from animegan_cli.records import staleness
from animegan_cli.records.checkpoint import checkpoint_id
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest, ManifestEntry, find_provenance
from animegan_cli.records.record import Provenance
from animegan_cli.records.staleness import settings_for_output
from tests.conftest import photo_like


def record(**change: object) -> Provenance:
    fields: dict[str, object] = {
        "input_blake2b": "ab" * 32,
        "input_size": 1234,
        "input_mtime_ns": 1_700_000_000_123_456_789,
        "style": "paprika",
        "checkpoint": STYLES["paprika"].blob_id,
        "settings": {"size": 512, "precision": "fp32", "backend": "torch",
                     "align_corners": False, "keep_size": False},
    }
    fields.update(change)
    return Provenance(**fields)  # type: ignore[arg-type]


def styled_image(mode: str = "RGB") -> Image.Image:
    img = Image.fromarray(photo_like(24, 16), "RGB")
    return img.convert(mode) if mode != "RGB" else img


def test_record_round_trips_through_json_and_names_every_field():
    original = record(similar_to="cd" * 32, distance=3)
    text = original.to_json()
    assert text.isascii() and "\n" not in text
    assert set(json.loads(text)) == {
        "tool", "input_blake2b", "input_size", "input_mtime_ns", "style", "checkpoint",
        "settings", "similar_to", "distance",
    }
    assert Provenance.from_json(text) == original
    assert "similar_to" not in record().to_dict()


@pytest.mark.parametrize("junk", ["[]", '{"input_size": 1}', '"text"'])
def test_a_foreign_record_is_refused(junk):
    with pytest.raises(ValueError):
        Provenance.from_json(junk)


def test_quality_is_a_setting_of_lossy_outputs_only():
    base = {"size": 512}
    assert settings_for_output(base, Path("a.jpg"), 80) == {"size": 512, "quality": 80}
    assert settings_for_output(base, Path("a.webp"), 80) == {"size": 512, "quality": 80}
    assert settings_for_output(base, Path("a.png"), 80) == {"size": 512}


def test_hash_is_blake2b_256_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert hash_file(path) == hashlib.blake2b(data, digest_size=32).hexdigest()


def test_hash_files_keeps_order_and_gives_none_for_unreadable(tmp_path):
    paths = []
    for i in range(20):  # enough to use the thread pool
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(b"x" * i)
    paths.insert(5, tmp_path / "missing.bin")
    hashes = hash_files(paths)
    assert hashes[5] is None
    assert hashes[:5] + hashes[6:] == [hash_file(p) for p in paths[:5] + paths[6:]]


@pytest.mark.parametrize(
    "name,mode", [("a.png", "RGB"), ("a.png", "RGBA"), ("a.jpg", "RGB"), ("a.webp", "RGBA"),
                  ("a.tif", "RGB")],
)
def test_each_format_stores_the_record_and_reads_it_back(tmp_path, name, mode):
    path = tmp_path / name
    original = record(style="my ünïcode style")
    write_image_atomic(styled_image(mode), path, metadata=original.to_json())
    assert read_embedded(path) == original
    with Image.open(path) as img:  # still a normal image
        img.load()


def test_bmp_has_no_room_and_foreign_images_have_no_record(tmp_path):
    write_image_atomic(styled_image(), tmp_path / "a.bmp", metadata=record().to_json())
    assert read_embedded(tmp_path / "a.bmp") is None
    styled_image().save(tmp_path / "plain.jpg")
    assert read_embedded(tmp_path / "plain.jpg") is None
    (tmp_path / "text.png").write_text("not an image")
    assert read_embedded(tmp_path / "text.png") is None


def write_output(path: Path, data: bytes = b"image bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_manifest_round_trip_last_record_wins(tmp_path):
    out = write_output(tmp_path / "sub" / "a.png")
    manifest = Manifest.load(tmp_path)
    manifest.record(out, record(input_size=1))
    manifest.record(out, record(input_size=2))
    again = Manifest.load(tmp_path)
    assert again.lines == 2
    entry = again.get(out)
    assert entry is not None and entry.provenance.input_size == 2
    assert entry.matches(out.stat())
    assert json.loads((tmp_path / MANIFEST_NAME).read_text().splitlines()[0])["output"] == (
        "sub/a.png"
    )


def test_manifest_entry_stops_matching_when_the_output_changes(tmp_path):
    out = write_output(tmp_path / "a.png")
    manifest = Manifest.load(tmp_path)
    manifest.record(out, record())
    write_output(out, b"edited by hand, longer than before")
    entry = Manifest.load(tmp_path).get(out)
    assert entry is not None and not entry.matches(out.stat())


def test_torn_last_line_is_ignored_and_the_next_append_is_readable(tmp_path):
    a, b = write_output(tmp_path / "a.png"), write_output(tmp_path / "b.png")
    Manifest.load(tmp_path).record(a, record())
    with open(tmp_path / MANIFEST_NAME, "ab") as handle:
        handle.write(b'{"output": "b.png", "size": 3, "provenance": {"inp')  # crash here
    manifest = Manifest.load(tmp_path)
    assert manifest.get(a) is not None and manifest.get(b) is None
    manifest.record(b, record(input_size=7))
    reread = Manifest.load(tmp_path)
    assert reread.get(b).provenance.input_size == 7  # type: ignore[union-attr]
    assert reread.get(a) is not None


def test_compaction_keeps_live_entries_of_existing_outputs(tmp_path):
    keep, gone = write_output(tmp_path / "keep.png"), write_output(tmp_path / "gone.png")
    manifest = Manifest.load(tmp_path)
    for size in range(6):
        manifest.record(keep, record(input_size=size))
    manifest.record(gone, record())
    gone.unlink()
    assert not manifest.compact_if_needed(min_lines=100)  # small manifests are left alone
    assert manifest.compact_if_needed(min_lines=4)
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["provenance"]["input_size"] == 5
    assert Manifest.load(tmp_path).get(keep).provenance.input_size == 5  # type: ignore[union-attr]


def test_compaction_keeps_what_another_run_appended_meanwhile(tmp_path):
    ours, theirs = write_output(tmp_path / "ours.png"), write_output(tmp_path / "theirs.png")
    manifest = Manifest.load(tmp_path)
    other_shard = Manifest.load(tmp_path)
    for size in range(5):
        manifest.record(ours, record(input_size=size))
    other_shard.record(theirs, record(input_size=42))
    assert manifest.compact_if_needed(min_lines=2)
    reread = Manifest.load(tmp_path)
    assert reread.get(theirs).provenance.input_size == 42  # type: ignore[union-attr]
    assert reread.get(ours).provenance.input_size == 4  # type: ignore[union-attr]


def test_find_provenance_uses_the_manifest_for_files_without_metadata(tmp_path):
    out = tmp_path / "out" / "deep" / "a.bmp"
    write_image_atomic(styled_image(), out)
    assert find_provenance(out) is None
    Manifest.load(tmp_path / "out").record(out, record())
    assert find_provenance(out) == record()
    write_image_atomic(styled_image("L"), out)  # replaced since: the entry no longer vouches
    assert find_provenance(out) is None


def test_checkpoint_id_without_loading(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setattr(WeightsStore, "find", lambda self, name: None)
    assert checkpoint_id("paprika", None) == STYLES["paprika"].blob_id  # not even installed
    assert checkpoint_id("paprika", checkpoint) == git_blob_id(checkpoint.read_bytes())
    with pytest.raises(WeightsError, match="does not exist"):
        checkpoint_id("paprika", tmp_path / "missing.pt")
    with pytest.raises(UsageError, match="unknown style 'nope'"):
        checkpoint_id("nope", None)


def test_compaction_is_written_through_atomic_write_and_synced(tmp_path, monkeypatch):
    keep = write_output(tmp_path / "keep.png")
    manifest = Manifest.load(tmp_path)
    for size in range(4):
        manifest.record(keep, record(input_size=size))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    assert manifest.compact_if_needed(min_lines=2)
    assert len(synced) == 2  # the new manifest, then its folder
    assert sorted(os.listdir(tmp_path)) == [MANIFEST_NAME, "keep.png"]


def test_a_failed_compaction_leaves_only_atomic_write_temp_names(tmp_path, monkeypatch):
    keep = write_output(tmp_path / "keep.png")
    manifest = Manifest.load(tmp_path)
    for size in range(4):
        manifest.record(keep, record(input_size=size))
    left: list[str] = []

    def killed_before_rename(_src, _dst, **_kw):  # noqa: ANN001, ANN202
        left.extend(n for n in os.listdir(tmp_path) if n not in (MANIFEST_NAME, "keep.png"))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "replace", killed_before_rename)
    assert not manifest.compact_if_needed(min_lines=2)
    # A kill at this moment would leave this name, which the next run's clean-up removes.
    assert len(left) == 1 and atomic.temp_file_pid(left[0]) == os.getpid()
    assert manifest.failure == f"cannot compact {tmp_path / MANIFEST_NAME}: Input/output error"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_manifest_is_not_read_or_appended_to(tmp_path, dangling):
    victim = tmp_path.parent / f"{tmp_path.name}-victim.jsonl"
    out = write_output(tmp_path / "a.png")
    if not dangling:
        other = Manifest(tmp_path.parent)  # a valid line, as if from another folder
        victim.write_bytes(other._line("a.png", ManifestEntry(1, 2, record())))
    before = victim.read_bytes() if not dangling else None
    (tmp_path / MANIFEST_NAME).symlink_to(victim)
    manifest = Manifest.load(tmp_path)
    assert manifest.entries == {}
    manifest.record(out, record())
    assert manifest.failure == (
        f"cannot write {tmp_path / MANIFEST_NAME}: it is a symbolic link; not following it"
    )
    assert (victim.read_bytes() if not dangling else victim.exists()) == (before or False)


def test_staleness_compares_pixels_not_the_engine_and_old_records_follow_the_rule():
    old_fp32 = {"size": 512, "precision": "fp32", "backend": "openvino",
                "align_corners": False, "keep_size": False}  # a record from before the rule
    bf16_torch = {**old_fp32, "precision": "bf16", "backend": "torch", "device": "cpu"}
    assert staleness.staleness_key(old_fp32) == staleness.staleness_key(bf16_torch)
    assert staleness.settings_change(old_fp32, bf16_torch) is None
    assert staleness.engine_change(old_fp32, bf16_torch) == (
        "engine differs: backend openvino -> torch, precision fp32 -> bf16; same pixels "
        "within float tolerance"
    )
    int8 = {**old_fp32, "precision": "int8"}
    assert staleness.settings_change(int8, bf16_torch) == "settings changed: int8 -> float"
    assert staleness.settings_change(old_fp32, {**old_fp32, "size": 256, "quality": 80}) == (
        "settings changed: quality None -> 80, size 512 -> 256"
    )
