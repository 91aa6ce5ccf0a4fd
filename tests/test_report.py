"""--report: the JSON account of a run, and text that always prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from animegan_cli.pipeline.convert import ConvertOptions, FileResult, Summary
from animegan_cli.pipeline.report import build_report, json_safe, one_line, write_report


def summary() -> Summary:
    s = Summary(seconds=12.34567, engine="torch cpu fp32", found=5, batch_size=2)
    s.add(FileResult(Path("a.jpg"), Path("out/a.jpg"), "converted"))
    s.add(FileResult(Path("b.jpg"), Path("out/b.jpg"), "skipped", "output exists"))
    s.add(FileResult(Path("bad.png"), None, "failed",
                     "not an image, or a format that cannot be read"))
    return s


def test_report_has_counts_failures_settings_time_and_status(tmp_path: Path):
    options = ConvertOptions(inputs=["photos"], output=tmp_path / "out", size=256)
    report = build_report(summary(), options, exit_status=1)
    assert report["exit_status"] == 1 and report["error"] is None
    assert report["interrupted_by"] is None
    assert report["counts"] == {
        "found": 5, "converted": 1, "skipped": 1, "failed": 1, "not_done": 2,
    }
    assert report["failures"] == [
        {"input": "bad.png", "error": "not an image, or a format that cannot be read"}
    ]
    assert report["elapsed_seconds"] == 12.346
    settings = report["settings"]
    assert settings["size"] == 256 and settings["output"] == str(tmp_path / "out")
    assert settings["inputs"] == ["photos"] and settings["max_memory"] is None
    assert report["engine"] == "torch cpu fp32" and report["batch_size_used"] == 2
    json.dumps(report)  # all JSON-able


def test_report_of_a_run_that_never_started(tmp_path: Path):
    options = ConvertOptions(inputs=["x"], output=tmp_path)
    report = build_report(None, options, exit_status=2, error="another animegan run ...")
    assert report["counts"]["found"] == 0 and report["failures"] == []
    assert report["exit_status"] == 2 and report["error"] == "another animegan run ..."


def test_write_report_is_atomic_and_leaves_no_temp(tmp_path: Path):
    path = tmp_path / "report.json"
    path.write_text("old")
    write_report(path, {"exit_status": 0, "name": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"exit_status": 0, "name": "é"}
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_report_failure_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_report(path, {"not json": object()})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


def test_non_utf8_names_and_newlines_print_unambiguously():
    name = os.fsdecode(b"caf\xe9 photo.jpg")  # Latin-1 bytes: not UTF-8
    assert json_safe(name) == "caf\\xe9 photo.jpg"
    json_safe(name).encode("utf-8")  # would raise with the raw surrogate
    assert one_line("two\nlines\tand é.jpg") == "two\\nlines\\tand é.jpg"
    assert one_line(Path("plain name.png")) == "plain name.png"
