"""Records under attack: hostile manifests and embedded records, kills between the manifest
append and the rename, short writes, inputs replaced mid-run, special files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from animegan_cli.cli.app import main
from animegan_cli.core.files import hash_file, hash_files
from animegan_cli.media import data
from animegan_cli.media.outputs import TEMP_PREFIX
from animegan_cli.model.weights import STYLES
from animegan_cli.pipeline.convert import CHANGED_WHILE_READING
from animegan_cli.records import incremental
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest, ManifestEntry, find_provenance
from animegan_cli.records.record import Provenance
from tests.conftest import make_image, photo_like


def cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def convert_cli(src: Path, out: Path, checkpoint: Path, *extra: str):
    return cli("convert", str(src), "-o", str(out), "--weights", str(checkpoint), "--size",
               "32", "--num-workers", "0", "--backend", "torch", "--json", *extra)


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def valid_record() -> dict:
    return {
        "tool": "animegan 0.1.0", "input_blake2b": "ab" * 32, "input_size": 1234,
        "input_mtime_ns": 1_700_000_000_123_456_789, "style": "paprika",
        "checkpoint": STYLES["paprika"].blob_id,
        "settings": {"size": 512, "precision": "fp32", "backend": "torch",
                     "align_corners": False, "keep_size": False},
    }


def with_raw(record: dict, path: tuple[str, ...], raw: str) -> str:
    """``record`` as JSON with the value at ``path`` replaced by raw JSON text."""
    record = json.loads(json.dumps(record))
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@RAW@@"
    return json.dumps(record).replace('"@@RAW@@"', raw)


DEEP = "[" * 20_000 + "]" * 20_000  # under the size bound, beyond the parser's recursion
HOSTILE = [
    (("input_size",), "1e999", "input_size must be an integer"),
    (("input_size",), "Infinity", "not valid JSON: Infinity is not a number"),
    (("input_mtime_ns",), "NaN", "not valid JSON: NaN is not a number"),
    (("input_mtime_ns",), "-Infinity", "not valid JSON: -Infinity is not a number"),
    (("input_size",), str(2**64), "input_size must be an integer"),
    (("input_size",), "-5", "input_size must be an integer"),
    (("input_size",), '"1234"', "input_size must be an integer"),
    (("input_size",), "true", "input_size must be an integer"),
    (("input_size",), "1" * 5000, "not valid JSON"),  # over Python's int digits limit
    (("style",), "42", "style must be a string"),
    (("input_blake2b",), '"abc"', "input_blake2b must be a lower-case hex digest"),
    (("checkpoint",), '{"a": 1}', "checkpoint must be a string"),
    (("settings",), "[]", "settings must be a JSON object"),
    (("settings", "size"), "[512]", "settings.size must be a JSON scalar"),
    (("settings", "size"), "1e999", "settings.size must be a JSON scalar"),
    (("settings", "size"), DEEP, "nested too deeply"),
    (("style",), json.dumps("x" * 70_000), "over 65536 bytes"),
]
HOSTILE_IDS = [f"{'.'.join(path)}={raw[:12]}" for path, raw, _ in HOSTILE]


@pytest.mark.parametrize("path,raw,why", HOSTILE, ids=HOSTILE_IDS)
def test_a_hostile_manifest_line_is_ignored_like_a_torn_one(tmp_path, path, raw, why):
    good = {"output": "a.png", "size": 10, "mtime_ns": 20, "provenance": valid_record()}
    bad = with_raw({**good, "output": "b.png"}, ("provenance", *path), raw)
    (tmp_path / MANIFEST_NAME).write_text(f"{json.dumps(good)}\n{bad}\n")
    manifest = Manifest.load(tmp_path)
    assert list(manifest.entries) == ["a.png"]
    assert manifest.get(tmp_path / "a.png").provenance.input_size == 1234  # type: ignore


@pytest.mark.parametrize("field,raw", [("size", "1e999"), ("mtime_ns", "NaN"), ("size", "-1"),
                                       ("size", "1.5"), ("output", "7")])
def test_hostile_values_in_the_manifests_own_fields_are_ignored(tmp_path, field, raw):
    line = with_raw({"output": "b.png", "size": 10, "mtime_ns": 20,
                     "provenance": valid_record()}, (field,), raw)
    (tmp_path / MANIFEST_NAME).write_text(line + "\n")
    assert Manifest.load(tmp_path).entries == {}


def png_with_record(path: Path, text: str) -> Path:
    info = PngInfo()
    info.add_text("animegan", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_like(40, 28), "RGB").save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("path,raw,why", HOSTILE, ids=HOSTILE_IDS)
def test_a_hostile_embedded_record_is_invalid_for_inspect(tmp_path, path, raw, why):
    out = png_with_record(tmp_path / "x.png", with_raw(valid_record(), path, raw))
    assert read_embedded(out) is None
    result = cli("inspect", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"animegan: error: {out}: invalid animegan provenance record ("
    )
    assert why in result.stderr and result.stderr.count("\n") == 1


def test_hostile_records_do_not_crash_convert(tmp_path, checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, (path, raw, _) in enumerate(HOSTILE):
        make_image(src / f"{i}.png", seed=i)
        png_with_record(out / f"{i}.png", with_raw(valid_record(), path, raw))
    make_image(src / "new.png", seed=99)
    lines = [with_raw({"output": "new.png", "size": 1, "mtime_ns": 2,
                       "provenance": valid_record()}, ("provenance", *path), raw)
             for path, raw, _ in HOSTILE]
    (out / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 0, result.output
    by_name = {Path(r["input"]).name: r for r in json_lines(result)}
    assert by_name.pop("new.png")["status"] == "converted"
    assert {(r["status"], r["reason"]) for r in by_name.values()} == {
        ("skipped", incremental.UNKNOWN_PROVENANCE)
    }


# ------------------------------------------------ the manifest line comes before the rename

def failing_renames(monkeypatch, check=None) -> list[Path]:
    """Make every rename of an output's temp file fail (a kill right before it)."""
    real, targets = os.replace, []

    def in_folder(name, dir_fd) -> Path:  # noqa: ANN001 - os.replace's arguments
        # atomic_write renames by names relative to a folder descriptor.
        return Path(os.readlink(f"/proc/self/fd/{dir_fd}"), name) if dir_fd else Path(name)

    def replace(src, dst, *args, src_dir_fd=None, dst_dir_fd=None, **kwargs):
        if Path(src).name.startswith(TEMP_PREFIX):
            temp, target = in_folder(src, src_dir_fd), in_folder(dst, dst_dir_fd)
            targets.append(target)
            if check is not None:
                check(temp, target)
            raise OSError(errno.EIO, "Input/output error (simulated kill)")
        return real(src, dst, *args, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return targets


def test_the_manifest_line_is_appended_before_the_rename(tmp_path, checkpoint, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.bmp")

    seen: list[bool] = []

    def entry_is_there(temp: Path, target: Path) -> None:
        entry = Manifest.load(out).get(target)
        seen.append(entry is not None and entry.matches(temp.stat()))

    targets = failing_renames(monkeypatch, entry_is_there)
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 1 and not (out / "a.bmp").exists()
    assert targets == [out / "a.bmp"] and seen == [True]
    monkeypatch.undo()
    again = convert_cli(src, out, checkpoint)  # a kill left no output: converted
    assert [r["status"] for r in json_lines(again)] == ["converted"]
    shown = cli("inspect", str(out / "a.bmp"))  # a BMP's only record: the manifest
    assert shown.exit_code == 0 and f"blake2b-256 {hash_file(src / 'a.bmp')}" in shown.stdout


def test_an_entry_for_a_rename_that_never_happened_hides_nothing(tmp_path, checkpoint,
                                                                 monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.bmp", seed=1)
    assert convert_cli(src, out, checkpoint).exit_code == 0
    old_inode = (out / "a.bmp").stat().st_ino
    make_image(src / "a.bmp", seed=2)  # edited: the next run rewrites the output
    failing_renames(monkeypatch)
    assert convert_cli(src, out, checkpoint).exit_code == 1  # appended, then "killed"
    monkeypatch.undo()
    manifest = Manifest.load(out)
    last = manifest.get(out / "a.bmp")
    still = manifest.match(out / "a.bmp", (out / "a.bmp").stat())
    assert last is not None and still is not None and still is not last
    assert (out / "a.bmp").stat().st_ino == old_inode  # the old file, as its entry says
    again = convert_cli(src, out, checkpoint)
    assert [(r["status"], r["reason"]) for r in json_lines(again)] == [
        ("converted", "input changed")  # not "provenance unknown" forever
    ]
    record = find_provenance(out / "a.bmp")
    assert record is not None and record.input_blake2b == hash_file(src / "a.bmp")


def test_a_failed_append_fails_a_bmp_and_only_warns_for_a_png(tmp_path, checkpoint,
                                                              monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.bmp", seed=1)
    make_image(src / "b.png", seed=2)

    def broken(self, line: bytes) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Manifest, "_append", broken)
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 1
    by_name = {Path(r["input"]).name: r for r in json_lines(result)}
    assert by_name["b.png"]["status"] == "converted" and (out / "b.png").exists()
    assert by_name["a.bmp"]["error"] == (
        f"cannot write {out / 'a.bmp'}: manifest not updated (cannot write "
        f"{out / MANIFEST_NAME}: Input/output error); a BMP has no record of its own"
    )
    assert not (out / "a.bmp").exists()
    assert result.stderr.count("manifest not updated (cannot write") == 2  # a.bmp's + warning


def test_the_manifest_keeps_the_last_entry_that_matches_the_file(tmp_path):
    out = tmp_path / "a.png"
    out.write_bytes(b"first version")
    manifest = Manifest.load(tmp_path)
    manifest.record(out, Provenance("ab" * 32, 1, 1, "s", "", {}))
    written = out.stat()
    temp = tmp_path / "other"
    temp.write_bytes(b"a second version, never renamed")
    manifest.add(out, temp.stat(), Provenance("cd" * 32, 2, 2, "s", "", {}))
    reread = Manifest.load(tmp_path)
    assert reread.get(out).provenance.input_size == 2  # type: ignore[union-attr]
    assert reread.match(out, written).provenance.input_size == 1  # type: ignore[union-attr]
    os.replace(temp, out)  # the rename happens after all: the new entry describes the file
    assert reread.match(out, out.stat()).provenance.input_size == 2  # type: ignore
    assert find_provenance(out).input_size == 2  # type: ignore[union-attr]
    never = tmp_path / "never"
    never.write_bytes(b"a third version, never renamed either")
    reread.add(out, never.stat(), Provenance("ef" * 32, 3, 3, "s", "", {}))
    assert reread.compact_if_needed(min_lines=0)  # keeps the entry that matches the file
    compacted = Manifest.load(tmp_path)
    assert compacted.lines == 1
    assert compacted.get(out).provenance.input_size == 2  # type: ignore[union-attr]


def test_a_short_manifest_write_warns_once_and_the_next_run_repairs_it(tmp_path, checkpoint,
                                                                       monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    for i in range(3):
        make_image(src / f"{i}.png", seed=i)
    real = os.write

    def short(fd: int, data: bytes) -> int:
        if b'"provenance"' in data:  # a manifest line: the disk fills half-way through it
            return real(fd, data[: len(data) // 2])
        return real(fd, data)

    monkeypatch.setattr(os, "write", short)
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 0
    assert result.stderr.count("manifest not updated (") == 1
    assert "short write (" in result.stderr
    assert Manifest.load(out).entries == {}  # torn lines only
    monkeypatch.undo()
    again = convert_cli(src, out, checkpoint)
    assert {r["status"] for r in json_lines(again)} == {"skipped"}  # from embedded records
    assert len(Manifest.load(out).entries) == 3  # repaired: each new line starts anew


# ------------------------------------------------ an input replaced between plan and decode

def test_an_input_replaced_after_planning_fails_with_its_duplicates(tmp_path, checkpoint,
                                                                     monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.png", seed=1)
    shutil.copyfile(src / "a.png", src / "b.png")  # a duplicate: styled with a.png
    make_image(src / "c.png", seed=3)
    planned_hash = hash_file(src / "a.png")
    real_plan = incremental.plan_work

    def plan_then_swap(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        make_image(src / "a.png", seed=7)  # replaced before the decoder reads it
        return plan

    monkeypatch.setattr(incremental, "plan_work", plan_then_swap)
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 1
    by_name = {Path(r["input"]).name: r for r in json_lines(result)}
    assert by_name["a.png"]["error"] == CHANGED_WHILE_READING
    assert by_name["b.png"]["error"] == (
        f"identical to {src / 'a.png'}, which {CHANGED_WHILE_READING}"
    )
    assert by_name["c.png"]["status"] == "converted"
    records = [read_embedded(p) for p in out.glob("*.png")]
    assert all(r is not None and r.input_blake2b != planned_hash for r in records)
    assert sorted(p.name for p in out.glob("*.png")) == ["c.png"]


def test_the_decoder_hashes_the_bytes_it_decodes_and_keeps_draft_mode(tmp_path):
    path = make_image(tmp_path / "big.jpg", 400, 300)
    item = data.prepare_image(0, path, data.PreprocessSettings(size=64))
    assert item.error is None and item.blake2b == hash_file(path)
    assert item.original_size == (400, 300)


# ------------------------------------------------ special files and folders in the way

def finishes(fn, *args) -> object:
    """Run fn in a thread; fail the test instead of hanging when it blocks."""
    box: list[object] = []

    def call() -> None:
        try:
            box.append(fn(*args))
        except Exception as exc:  # handed to the test's thread
            box.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"{fn.__name__} blocked"
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


def test_hashing_or_decoding_a_fifo_never_blocks(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert finishes(hash_files, [fifo]) == [None]
    with pytest.raises(OSError, match="not a regular file"):
        finishes(hash_file, fifo)
    item = finishes(data.prepare_image, 0, fifo, data.PreprocessSettings(size=32))
    assert item.error == "cannot decode: not a regular file"  # type: ignore[union-attr]


def test_a_folder_at_an_output_path_fails_that_input(tmp_path, checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.png", seed=1)
    make_image(src / "b.png", seed=2)
    (out / "a.png").mkdir(parents=True)
    for extra in ([], ["--overwrite"], ["--dry-run"]):
        result = convert_cli(src, out, checkpoint, *extra)
        assert result.exit_code == 1, extra
        assert (f"animegan: error: {src / 'a.png'}: output path {out / 'a.png'} is a folder\n"
                in result.stderr), extra
        assert {Path(r["input"]).name: r["status"] for r in json_lines(result)}["a.png"] == (
            "failed")


def test_a_manifest_line_over_the_limit_is_skipped_unread(tmp_path, monkeypatch):
    line = {"output": "a.png", "size": 10, "mtime_ns": 20, "provenance": valid_record()}
    other = {**line, "output": "b.png"}
    junk = b'{"output": "c.png", "x": "' + b"y" * 50_000 + b'"}\n'
    (tmp_path / MANIFEST_NAME).write_bytes(
        json.dumps(line).encode() + b"\n" + junk + json.dumps(other).encode()
    )
    monkeypatch.setattr("animegan_cli.records.manifest.MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read whole"))
    manifest = Manifest.load(tmp_path)
    assert sorted(manifest.entries) == ["a.png", "b.png"] and manifest.lines == 3
    assert manifest._needs_newline  # the last line has no newline: the next append adds one


def test_a_manifest_over_the_size_limit_is_ignored_with_a_warning_and_rewritten(
        tmp_path, checkpoint, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    make_image(src / "a.png", seed=1)
    assert convert_cli(src, out, checkpoint).exit_code == 0
    with open(out / MANIFEST_NAME, "ab") as handle:
        handle.write(b"\n" * 30_000)
    monkeypatch.setattr("animegan_cli.records.manifest.MAX_MANIFEST_BYTES", 20_000)
    result = convert_cli(src, out, checkpoint)
    assert result.exit_code == 0
    assert result.stderr.count(f"animegan: {out / MANIFEST_NAME} is over ") == 1
    assert [r["status"] for r in json_lines(result)] == ["skipped"]  # its own record
    assert (out / MANIFEST_NAME).stat().st_size < 20_000  # rewritten at the end
    assert list(Manifest.load(out).entries) == ["a.png"]


def test_manifest_entries_compare_size_and_mtime(tmp_path):
    entry = ManifestEntry(5, 6, Provenance("", 0, 0, "s", "", {}))
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    os.utime(path, ns=(6, 6))
    assert entry.matches(path.stat())
