"""Incremental runs: skip what is up to date, redo what changed, reuse duplicates, select."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from animegan_cli import stylizer as stylizer_module
from animegan_cli.cli.app import main
from animegan_cli.core.atomic import temp_file_pid
from animegan_cli.core.files import hash_file
from animegan_cli.engines.base import TorchEngine
from animegan_cli.media import data
from animegan_cli.model.generator import Generator
from animegan_cli.pipeline.convert import ConvertEvents, ConvertOptions, FileResult, convert
from animegan_cli.records import incremental
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest
from animegan_cli.records.record import Provenance
from tests.conftest import make_image, photo_like


def options(src: Path | list[str], out: Path, checkpoint: Path, **kw) -> ConvertOptions:
    inputs = [str(src)] if isinstance(src, Path) else src
    kw.setdefault("size", 32)
    kw.setdefault("num_workers", 0)
    kw.setdefault("precision", "fp32")
    kw.setdefault("backend", "torch")  # tests count TorchEngine.run calls
    kw.setdefault("weights", checkpoint)
    return ConvertOptions(inputs=inputs, output=out, **kw)


def run(opts: ConvertOptions) -> tuple[object, dict[str, FileResult]]:
    """convert() and its results keyed by input path relative to the first input folder."""
    seen: list[FileResult] = []
    summary = convert(opts, ConvertEvents(on_result=seen.append))
    root = Path(opts.inputs[0])
    return summary, {r.input.relative_to(root).as_posix(): r for r in seen}


def statuses(results: dict[str, FileResult]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.fixture
def styled(monkeypatch) -> list[int]:
    """Counts the images that go through the model."""
    counts: list[int] = []
    original = TorchEngine.run

    def counting(self, batch: torch.Tensor) -> torch.Tensor:
        counts.append(int(batch.shape[0]))
        return original(self, batch)

    monkeypatch.setattr(TorchEngine, "run", counting)
    return counts


def forbid_model_and_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an up-to-date run decoded an input or loaded the model")

    monkeypatch.setattr(data, "decode_with_size", refuse)
    monkeypatch.setattr(stylizer_module.WeightsStore, "resolve", refuse)


def test_rerun_skips_up_to_date_outputs_without_decoding(photo_dir, tmp_path, checkpoint,
                                                         monkeypatch):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    forbid_model_and_decoding(monkeypatch)
    summary, results = run(options(photo_dir, out, checkpoint))
    assert (summary.converted, summary.skipped) == (0, 3)
    assert {r.reason for r in results.values()} == {"up to date"}

    hashed: list[Path] = []
    monkeypatch.setattr(incremental, "hash_files", lambda paths: hashed.extend(paths) or [])
    summary, results = run(options(photo_dir, out, checkpoint, trust_mtime=True))
    assert summary.skipped == 3 and hashed == []  # sizes and mtimes only
    assert {r.reason for r in results.values()} == {"up to date (size and mtime unchanged)"}


def test_editing_a_photo_reconverts_exactly_that_photo(photo_dir, tmp_path, checkpoint):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    make_image(photo_dir / "b.png", 28, 40, seed=99)
    _, results = run(options(photo_dir, out, checkpoint))
    assert statuses(results) == {"a.jpg": "skipped", "b.png": "converted",
                                 "nested/c.webp": "skipped"}
    assert results["b.png"].reason == "input changed"
    record = read_embedded(out / "b.png")
    assert record is not None and record.input_blake2b == hash_file(photo_dir / "b.png")


ALL = {"a.jpg", "b.png", "nested/c.webp"}
CHANGES = [
    ({"size": 48}, "settings changed: size 32 -> 48", ALL),
    ({"precision": "int8", "backend": "openvino"}, "settings changed: float -> int8", ALL),
    ({"keep_size": True}, "keep_size False -> True", ALL),
    ({"align_corners": True}, "align_corners False -> True", ALL),
    ({"quality": 80}, "quality 95 -> 80", {"a.jpg", "nested/c.webp"}),  # PNG is lossless
    ({"weights": "other"}, "style changed: random_generator.pt -> other.pt", ALL),
]


def test_a_change_of_settings_redoes_exactly_the_affected_outputs(photo_dir, tmp_path,
                                                                  checkpoint):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(Generator().state_dict(), other)
    for change, reason, redone in CHANGES:
        if change.get("weights") == "other":
            change = {"weights": other}
        _, results = run(options(photo_dir, out, checkpoint, dry_run=True, **change))
        assert {n for n, r in results.items() if r.status == "would-convert"} == redone, change
        assert all(reason in results[n].reason for n in redone), change


def test_trust_mtime_trusts_size_and_mtime_hash_mode_reads_the_bytes(tmp_path, checkpoint):
    src = make_image(tmp_path / "in" / "x.bmp", 16, 16, seed=1)
    out = tmp_path / "out"
    convert(options(src.parent, out, checkpoint))
    stamp = src.stat().st_mtime_ns
    make_image(src, 16, 16, seed=2)  # same size, other bytes, mtime put back
    os.utime(src, ns=(stamp, stamp))
    _, trusted = run(options(src.parent, out, checkpoint, dry_run=True, trust_mtime=True))
    assert trusted["x.bmp"].status == "would-skip"
    _, hashed = run(options(src.parent, out, checkpoint, dry_run=True))
    assert (hashed["x.bmp"].status, hashed["x.bmp"].reason) == ("would-convert", "input changed")


def test_a_touched_input_is_up_to_date_and_then_trusted_by_mtime(photo_dir, tmp_path,
                                                                 checkpoint, monkeypatch):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    os.utime(photo_dir / "a.jpg", ns=(1_900_000_000_000_000_000,) * 2)
    _, results = run(options(photo_dir, out, checkpoint))
    assert results["a.jpg"].reason == "up to date"  # same bytes: nothing to redo
    hashed: list[Path] = []
    monkeypatch.setattr(incremental, "hash_files", lambda paths: hashed.extend(paths) or [])
    _, results = run(options(photo_dir, out, checkpoint, trust_mtime=True))
    assert statuses(results) == dict.fromkeys(results, "skipped") and hashed == []


def test_outputs_without_provenance_are_kept_until_overwrite(photo_dir, tmp_path, checkpoint):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    Image.fromarray(photo_like(8, 8), "RGB").save(out / "a.jpg")  # made by something else
    _, results = run(options(photo_dir, out, checkpoint))
    assert results["a.jpg"].status == "skipped"
    assert results["a.jpg"].reason == incremental.UNKNOWN_PROVENANCE
    _, results = run(options(photo_dir, out, checkpoint, overwrite=True))
    assert statuses(results) == dict.fromkeys(results, "converted")
    assert read_embedded(out / "a.jpg") is not None


def test_without_the_manifest_the_outputs_metadata_decides(photo_dir, tmp_path, checkpoint,
                                                           monkeypatch):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    (out / MANIFEST_NAME).unlink()
    forbid_model_and_decoding(monkeypatch)
    summary, _ = run(options(photo_dir, out, checkpoint))
    assert summary.skipped == 3
    assert len(Manifest.load(out).entries) == 3  # rebuilt for the next run


def test_identical_inputs_are_styled_once(tmp_path, checkpoint, styled):
    src = tmp_path / "in"
    make_image(src / "a.png", 32, 24, seed=1)
    (src / "sub").mkdir()
    shutil.copyfile(src / "a.png", src / "sub" / "a2.png")
    shutil.copyfile(src / "a.png", src / "a3.jpg")  # same bytes, another output format
    make_image(src / "b.png", 32, 24, seed=2)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copyfile(src / "broken.jpg", src / "broken2.jpg")
    out = tmp_path / "out"
    summary, results = run(options(src, out, checkpoint, batch_size=2))
    assert sum(styled) == 2
    assert (summary.converted, summary.reused, summary.failed) == (4, 2, 2)
    for name in ["sub/a2.png", "a3.jpg"]:
        assert results[name].reused_from == src / "a.png"
        assert results[name].reason == f"identical to {src / 'a.png'}"
    assert np.array_equal(pixels(out / "a.png"), pixels(out / "sub" / "a2.png"))
    assert results["broken2.jpg"].error == results["broken.jpg"].error
    record = read_embedded(out / "a3.jpg")
    assert record is not None and record.input_mtime_ns == (src / "a3.jpg").stat().st_mtime_ns


def test_a_new_copy_of_a_converted_photo_gets_a_copy_of_its_output(photo_dir, tmp_path,
                                                                   checkpoint, monkeypatch):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    shutil.copyfile(photo_dir / "a.jpg", photo_dir / "nested" / "again.jpg")
    forbid_model_and_decoding(monkeypatch)
    summary, results = run(options(photo_dir, out, checkpoint))
    assert (summary.converted, summary.reused, summary.skipped) == (1, 1, 3)
    assert results["nested/again.jpg"].reused_from == out / "a.jpg"
    assert (out / "nested" / "again.jpg").read_bytes() == (out / "a.jpg").read_bytes()
    entry = Manifest.load(out).get(out / "nested" / "again.jpg")
    assert entry is not None
    assert entry.provenance.input_mtime_ns == (photo_dir / "nested/again.jpg").stat().st_mtime_ns


@pytest.mark.parametrize("batch_size", [1, 4])
def test_reuse_similar_borrows_a_look_alikes_result_only_when_asked(tmp_path, checkpoint,
                                                                     styled, batch_size):
    src = tmp_path / "in"
    base = photo_like(40, 32, seed=1)
    rng = np.random.default_rng(3)
    near = np.clip(base.astype(int) + rng.integers(-4, 5, base.shape), 0, 255).astype(np.uint8)
    src.mkdir()
    Image.fromarray(base).save(src / "1_base.png")
    Image.fromarray(near).save(src / "2_near.png")
    Image.fromarray(np.fliplr(photo_like(40, 32, seed=2)).copy()).save(src / "3_far.png")
    out = tmp_path / "out"
    summary, results = run(options(src, out, checkpoint, reuse_similar=6, batch_size=batch_size))
    assert sum(styled) == 2 and summary.reused == 1
    assert results["2_near.png"].reused_from == src / "1_base.png"
    assert np.array_equal(pixels(out / "2_near.png"), pixels(out / "1_base.png"))
    record = read_embedded(out / "2_near.png")
    assert record is not None and record.similar_to == hash_file(src / "1_base.png")

    _, results = run(options(src, out, checkpoint, reuse_similar=6))
    assert statuses(results) == dict.fromkeys(results, "skipped")
    styled.clear()
    _, results = run(options(src, out, checkpoint))  # no longer allowed: styled on its own
    assert statuses(results)["2_near.png"] == "converted" and sum(styled) == 1
    assert "similar image" in results["2_near.png"].reason
    assert read_embedded(out / "2_near.png").similar_to is None  # type: ignore[union-attr]


def test_dry_run_loads_no_model_and_writes_nothing(photo_dir, tmp_path, monkeypatch):
    forbid_model_and_decoding(monkeypatch)
    out = tmp_path / "out"
    summary, results = run(options(photo_dir, out, tmp_path / "no-such.pt", dry_run=True))
    assert statuses(results) == dict.fromkeys(results, "would-convert")
    assert {r.reason for r in results.values()} == {"no output yet"}
    assert summary.converted == 3 and not out.exists()


def test_since_and_newer_than_select_by_mtime(photo_dir, tmp_path):
    day = 86_400 * 10**9
    start = 1_800_000_000 * 10**9
    for i, name in enumerate(["a.jpg", "b.png", "nested/c.webp"]):
        os.utime(photo_dir / name, ns=(start + i * day,) * 2)
    ref = tmp_path / "last-run"
    ref.write_text("")
    os.utime(ref, ns=(start + day,) * 2)
    base = options(photo_dir, tmp_path / "out", tmp_path / "x.pt", dry_run=True)

    def chosen(**kw) -> set[str]:
        _, results = run(ConvertOptions(**{**base.__dict__, **kw}))
        return {n for n, r in results.items() if r.status == "would-convert"}

    assert chosen(newer_than=ref) == {"nested/c.webp"}
    moment = datetime.fromtimestamp((start + day) / 1e9, tz=timezone.utc)
    assert chosen(since=moment) == {"b.png", "nested/c.webp"}
    assert chosen(since=moment, newer_than=ref) == {"nested/c.webp"}


def test_shards_split_a_folder_and_their_union_is_the_whole(tmp_path, checkpoint):
    src = tmp_path / "in"
    for i in range(8):
        make_image(src / f"d{i % 2}" / f"{i}.png", 16, 16, seed=i)
    out = tmp_path / "out"
    done: list[str] = []
    for index in range(3):
        summary, results = run(options(src, out, checkpoint, shard=(index, 3)))
        done += [n for n, r in results.items() if r.status == "converted"]
        assert summary.excluded == 8 - summary.converted
    assert sorted(done) == sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    summary, _ = run(options(src, out, checkpoint))  # all three appended to one manifest
    assert (summary.converted, summary.skipped) == (0, 8)
    assert len(Manifest.load(out).entries) == 8


def cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def test_cli_pipeline_nul_list_json_then_dry_run(photo_dir, tmp_path, checkpoint):
    names = "\0".join(str(p) for p in sorted(photo_dir.rglob("*.*"))) + "\0"
    shutil.copyfile(photo_dir / "a.jpg", photo_dir / "a_copy.jpg")
    names += f"{photo_dir / 'a_copy.jpg'}\0"
    args = ["convert", "-", "--null", "-o", str(tmp_path / "out"), "--weights", str(checkpoint),
            "--size", "32", "--num-workers", "0", "--backend", "torch", "--json"]
    result = cli(*args, stdin=names)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["status"] for r in records) == ["converted"] * 4
    assert [r["reused_from"] for r in records if r["reused_from"]] == [str(photo_dir / "a.jpg")]
    assert "converted 4 (1 reused), skipped 0, failed 0 in" in result.stderr
    dry = cli(*args, "--dry-run", stdin=names)
    assert dry.exit_code == 0
    assert {json.loads(line)["status"] for line in dry.stdout.splitlines()} == {"would-skip"}
    text = cli(*args[:-1], "--dry-run", "--shard", "0/1", stdin=names)
    assert f"would skip {photo_dir / 'a.jpg'} (up to date)" in text.stderr
    assert text.stderr.rstrip().endswith("dry run: would convert 0, would skip 4")


def test_cli_inspect_prints_the_record_or_fails_in_one_line(photo_dir, tmp_path, checkpoint):
    out = tmp_path / "out"
    convert(options(photo_dir, out, checkpoint))
    result = cli("inspect", str(out / "a.jpg"))
    assert result.exit_code == 0
    assert f"blake2b-256 {hash_file(photo_dir / 'a.jpg')}" in result.stdout
    assert "size=32 precision=fp32" in result.stdout
    as_json = json.loads(cli("inspect", "--json", str(out / "b.png")).stdout)
    assert as_json["file"] == str(out / "b.png") and as_json["settings"]["size"] == 32
    missing = cli("inspect", str(out / "a.jpg"), str(photo_dir / "a.jpg"))
    assert missing.exit_code == 1
    assert missing.stderr == (f"animegan: error: {photo_dir / 'a.jpg'}: no animegan provenance "
                              "(not written by animegan convert, or stripped)\n")


@pytest.mark.parametrize(
    "args,message",
    [
        (("--since", "soon"), "--since 'soon': expected a date"),
        (("--shard", "2/2"), "--shard 2/2: I must be between 0 and N-1"),
        (("--reuse-similar", "65"), "--reuse-similar must be between 0 and 64"),
    ],
)
def test_cli_selection_usage_errors_exit_2(photo_dir, tmp_path, args, message):
    result = cli("convert", str(photo_dir), "-o", str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_copy_output_names_its_temp_file_with_the_pid(tmp_path, monkeypatch):
    # Before atomic_write, "2024-06-01 beach.jpg" gave a temp name that read as pid 2024.
    source, out = tmp_path / "source.jpg", tmp_path / "out"
    make_image(source)
    out.mkdir()
    target = out / "2024-06-01 beach.jpg"
    seen: list[str] = []
    real_copy = shutil.copyfileobj

    def copy_and_look(src, dst, *args):  # noqa: ANN001, ANN202
        seen.extend(os.listdir(out))
        return real_copy(src, dst, *args)

    monkeypatch.setattr(incremental.shutil, "copyfileobj", copy_and_look)
    manifest = Manifest.load(out)
    incremental.copy_output(source, target, provenance_record(), manifest)
    assert len(seen) == 1 and temp_file_pid(seen[0]) == os.getpid()
    assert target.read_bytes() == source.read_bytes()


def provenance_record() -> Provenance:
    return Provenance("ab" * 32, 1, 2, "paprika", "c" * 40, {"size": 32})


def cli_convert(src: str, out: Path, checkpoint: Path, *extra: str, stdin: str | None = None):
    args = ["convert", src, "-o", str(out), "--weights", str(checkpoint), "--size", "32",
            "--num-workers", "0", "--json", *extra]
    return cli(*args, stdin=stdin)


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_another_engine_does_not_make_outputs_stale_int8_does(photo_dir, tmp_path, checkpoint,
                                                              monkeypatch):
    out = tmp_path / "out"
    first = cli_convert(str(photo_dir), out, checkpoint, "--backend", "torch")
    assert first.exit_code == 0, first.output
    forbid_model_and_decoding(monkeypatch)
    again = cli_convert(str(photo_dir), out, checkpoint, "--backend", "openvino")
    assert again.exit_code == 0, again.output
    records = json_lines(again)
    assert {r["status"] for r in records} == {"skipped"}
    assert {r["reason"] for r in records} == {
        "up to date (engine differs: backend torch -> openvino; same pixels within float "
        "tolerance)"
    }
    dry = cli_convert(str(photo_dir), out, checkpoint, "--backend", "openvino",
                      "--precision", "int8", "--dry-run")
    assert {(r["status"], r["reason"]) for r in json_lines(dry)} == {
        ("would-convert", "settings changed: float -> int8")
    }
    overwrite = cli_convert(str(photo_dir), out, checkpoint, "--overwrite", "--dry-run")
    assert {r["status"] for r in json_lines(overwrite)} == {"would-convert"}


@pytest.mark.slow
def test_an_earlier_runs_output_is_copied_for_a_renamed_moved_or_listed_photo(
        photo_dir, tmp_path, checkpoint, monkeypatch):
    out = tmp_path / "out"
    assert cli_convert(str(photo_dir), out, checkpoint).exit_code == 0
    (photo_dir / "a.jpg").rename(photo_dir / "renamed.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(photo_dir / "b.png", elsewhere / "b_copy.png")
    listed = tmp_path / "listed" / "c_again.webp"
    listed.parent.mkdir()
    shutil.copyfile(photo_dir / "nested" / "c.webp", listed)
    forbid_model_and_decoding(monkeypatch)

    moved = cli_convert(str(photo_dir), out, checkpoint, "--quiet")
    assert moved.exit_code == 0, moved.output
    copies = {r["input"]: r for r in json_lines(moved) if r["status"] == "converted"}
    assert copies[str(photo_dir / "renamed.jpg")]["reused_from"] == str(out / "a.jpg")
    assert (out / "renamed.jpg").read_bytes() == (out / "a.jpg").read_bytes()

    in_folder = cli_convert(str(elsewhere), out, checkpoint)
    assert in_folder.exit_code == 0, in_folder.output
    assert "converted 1 (1 reused)" in in_folder.stderr
    [copy] = json_lines(in_folder)
    assert copy["reused_from"] == str(out / "b.png")
    assert Path(copy["output"]).read_bytes() == (out / "b.png").read_bytes()

    from_list = cli_convert("-", out, checkpoint, stdin=f"{listed}\n")
    assert from_list.exit_code == 0, from_list.output
    assert "converted 1 (1 reused)" in from_list.stderr
    [copy] = json_lines(from_list)
    assert copy["reused_from"] == str(out / "nested" / "c.webp")
    assert Path(copy["output"]).read_bytes() == (out / "nested" / "c.webp").read_bytes()
    entry = Manifest.load(out).get(Path(copy["output"]))
    assert entry is not None and entry.provenance.input_mtime_ns == listed.stat().st_mtime_ns


@pytest.mark.slow
def test_earlier_outputs_are_not_copied_when_stale_changed_or_similar(photo_dir, tmp_path,
                                                                       checkpoint):
    out = tmp_path / "out"
    assert cli_convert(str(photo_dir), out, checkpoint).exit_code == 0
    copy = tmp_path / "other" / "a2.jpg"
    copy.parent.mkdir()
    shutil.copyfile(photo_dir / "a.jpg", copy)
    for extra in (["--size", "48"], ["--overwrite"]):  # another setting; forced
        dry = cli_convert(str(copy.parent), out, checkpoint, "--dry-run", *extra)
        assert [r["reused_from"] for r in json_lines(dry)] == [None], extra
    os.utime(out / "a.jpg", ns=(1, 1))  # changed behind the manifest's back: not trusted
    dry = cli_convert(str(copy.parent), out, checkpoint, "--dry-run")
    assert [r["reused_from"] for r in json_lines(dry)] == [None]


@pytest.mark.slow
def test_own_weights_are_recorded_by_file_name_never_as_a_published_style(
        photo_dir, tmp_path, checkpoint, monkeypatch):
    own = tmp_path / "paprika.pt"  # named like a published style, but other weights
    shutil.copyfile(checkpoint, own)
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    monkeypatch.setenv("ANIMEGAN_STYLE", "hayao")  # overridden by --weights
    result = cli_convert(str(photo_dir), out, own, "--report", str(report))
    assert result.exit_code == 0, result.output
    record = read_embedded(out / "a.jpg")
    assert record is not None and record.style == "paprika.pt"
    shown = cli("inspect", str(out / "a.jpg"))
    assert "  style      paprika.pt (checkpoint " in shown.stdout
    settings = json.loads(report.read_text())["settings"]
    assert settings["style"] is None and settings["weights"] == str(own)

    both = cli_convert(str(photo_dir), out, own, "--style", "paprika")
    assert both.exit_code == 2
    assert both.stderr == "animegan: error: give --style or --weights, not both\n"


def test_weights_with_a_published_blob_id_are_recorded_as_that_style(checkpoint, monkeypatch):
    from animegan_cli.model import weights
    from animegan_cli.model.weights import STYLES, git_blob_id
    from animegan_cli.records.checkpoint import record_style

    blob = git_blob_id(checkpoint.read_bytes())
    assert record_style("x", checkpoint, blob) == checkpoint.name
    renamed = dict(STYLES)
    renamed["paprika"] = dataclasses.replace(STYLES["paprika"], blob_id=blob)
    monkeypatch.setattr(weights, "STYLES", renamed)  # the registry file_style_name reads
    assert record_style("x", checkpoint, blob) == "paprika"
    assert record_style("paprika", None, STYLES["paprika"].blob_id) == "paprika"
