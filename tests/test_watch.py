"""`animegan watch` (issue 26): a real `animegan watch` subprocess on temp folders, with a
real watcher (inotify here), a random checkpoint, tiny images and a short --settle."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SETTLE = "0.3"


class Watch:
    """A running `animegan watch --json`: its JSON lines and stderr lines as they come."""

    def __init__(self, inputs: list[Path], out: Path, checkpoint: Path, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "animegan_cli", "watch", *map(str, inputs), "-o", str(out),
             "--weights", str(checkpoint), "--size", "64", "--settle", SETTLE, "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.records: list[dict] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()
        self.until(lambda: any("watching" in line for line in self.errors), 60)

    def _read(self, stream: io.TextIOBase, is_json: bool) -> None:
        for line in stream:
            if is_json:
                self.records.append(json.loads(line))
            else:
                self.errors.append(line.rstrip("\n"))

    def until(self, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"watch ended ({self.proc.returncode}): {self.errors}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; records {self.records}, stderr {self.errors}")
            time.sleep(0.05)

    def converted(self, name: str | None = None) -> list[dict]:
        return [r for r in self.records if r["status"] == "converted"
                and (name is None or Path(r["input"]).name == name)]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.proc.kill()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(watched folder, OUT, a staging folder on the same file system)."""
    paths = tmp_path / "in", tmp_path / "out", tmp_path / "staging"
    for path in paths:
        path.mkdir()
    return paths


@pytest.fixture
def watching(folders, checkpoint):
    started: list[Watch] = []

    def start(*extra: str, inputs: list[Path] | None = None, out: Path | None = None) -> Watch:
        watch = Watch(inputs or [folders[0]], out or folders[1], checkpoint, *extra)
        started.append(watch)
        return watch
    yield start
    for watch in started:
        watch.close()


def _jpeg_bytes(source: Path) -> bytes:
    encoded = io.BytesIO()
    with Image.open(source) as img:
        img.save(encoded, "JPEG", quality=95)
    return encoded.getvalue()


def _settled_quietly(watch: Watch, seconds: float = 1.5) -> None:
    """Let a few settle periods pass, so that any extra work would have shown."""
    time.sleep(seconds)


def test_slow_chunked_write_is_styled_once_when_complete(folders, watching):
    watch = watching()
    data = _jpeg_bytes(make_image(folders[2] / "src.png", seed=3))
    target = folders[0] / "slow.jpg"
    chunks = [data[i:i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    with open(target, "wb") as f:  # pauses longer than --settle: the close is waited for
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            time.sleep(0.5)
    finished = time.time()
    watch.until(lambda: watch.converted("slow.jpg"), 30)
    _settled_quietly(watch)
    assert len(watch.converted("slow.jpg")) == 1
    assert not [r for r in watch.records if r["status"] == "failed"], watch.records
    output = folders[1] / "slow.jpg"
    assert output.stat().st_mtime >= finished - 0.05
    with Image.open(output) as img:
        img.load()  # whole
        assert img.size == (64, 44)
    assert watch.stop() == 0


def test_200_files_copied_at_once_are_each_styled_once(folders, watching):
    watch = watching()
    staged = [make_image(folders[2] / f"p{i:03d}.png", seed=i) for i in range(200)]
    for path in staged:
        shutil.copy(path, folders[0] / path.name)
    watch.until(lambda: len(watch.converted()) >= 200, 90)
    _settled_quietly(watch)
    names = [Path(r["input"]).name for r in watch.converted()]
    assert sorted(names) == sorted(p.name for p in staged)  # all, each once
    assert len(list(folders[1].glob("*.png"))) == 200
    assert watch.stop() == 0


def test_rename_into_the_folder_is_picked_up(folders, watching):
    watch = watching()
    staged = make_image(folders[2] / "moved.png", seed=7)
    os.rename(staged, folders[0] / "moved.png")
    watch.until(lambda: watch.converted("moved.png"), 30)
    assert (folders[1] / "moved.png").is_file()
    assert watch.stop() == 0


def test_modified_photo_is_restyled(folders, watching):
    make_image(folders[0] / "photo.png", seed=1)
    watch = watching()  # the catch-up styles it
    watch.until(lambda: watch.converted("photo.png"), 30)
    first = (folders[1] / "photo.png").read_bytes()
    staged = make_image(folders[2] / "photo.png", seed=9)
    shutil.copy(staged, folders[0] / "photo.png")  # rewritten in place
    watch.until(lambda: len(watch.converted("photo.png")) == 2, 30)
    assert watch.converted("photo.png")[1]["reason"] == "input changed"
    assert (folders[1] / "photo.png").read_bytes() != first
    assert watch.stop() == 0


def test_output_files_never_trigger_work(folders, watching):
    out = folders[0] / "styled"  # OUT inside the watched folder
    watch = watching(out=out)
    make_image(folders[2] / "one.png", seed=4)
    shutil.copy(folders[2] / "one.png", folders[0] / "one.png")
    watch.until(lambda: watch.converted("one.png"), 30)
    _settled_quietly(watch, 2.0)
    assert [Path(r["input"]).name for r in watch.records] == ["one.png"]
    assert (out / "one.png").is_file()
    assert watch.stop() == 0


def test_sigterm_mid_batch_leaves_whole_files_and_a_second_watch_catches_up(
        folders, watching):
    watch = watching()
    staged = [make_image(folders[2] / f"s{i:02d}.png", seed=i) for i in range(150)]
    for path in staged:
        shutil.copy(path, folders[0] / path.name)
    watch.until(lambda: watch.converted(), 60)
    assert watch.stop() == 0  # the batch in flight finishes, then a clean exit
    done = {Path(r["input"]).name for r in watch.converted()}
    assert 0 < len(done) < 150  # stopped mid-way: a batch is at most 64 files
    written = sorted(p.name for p in folders[1].iterdir() if not p.name.startswith("."))
    leftovers = [p.name for p in folders[1].iterdir() if p.name.startswith(".animegan-tmp-")]
    assert not leftovers
    assert sorted(done) == written  # every output reported, none partial
    for name in written:
        with Image.open(folders[1] / name) as img:
            img.load()

    again = watching()  # catches up exactly the rest
    again.until(lambda: len(again.converted()) >= 150 - len(done), 60)
    _settled_quietly(again)
    redone = {Path(r["input"]).name for r in again.converted()}
    skipped = {Path(r["input"]).name for r in again.records if r["status"] == "skipped"}
    assert redone == {p.name for p in staged} - done
    assert skipped == done
    assert again.stop() == 0


def test_bad_input_fails_alone_and_a_vanished_file_is_skipped_quietly(folders, watching):
    watch = watching()
    (folders[0] / "bad.jpg").write_bytes(b"not a jpeg at all")
    fleeting = folders[0] / "fleeting.png"
    make_image(fleeting, seed=5)
    fleeting.unlink()  # gone before it settled
    make_image(folders[2] / "good.png", seed=6)
    shutil.copy(folders[2] / "good.png", folders[0] / "good.png")
    watch.until(lambda: watch.converted("good.png") and len(watch.records) >= 2, 30)
    _settled_quietly(watch)
    failed = [r for r in watch.records if r["status"] == "failed"]
    assert [Path(r["input"]).name for r in failed] == ["bad.jpg"]
    assert not [r for r in watch.records if "fleeting" in r["input"]]
    errors = [line for line in watch.errors if "error" in line]
    assert len(errors) == 1 and "bad.jpg" in errors[0], watch.errors
    assert not (folders[1] / "bad.jpg").exists()
    assert watch.stop() == 0


def test_polling_observer_picks_up_a_dropped_file(folders, watching):
    watch = watching("--poll")  # network file systems: no inotify, no close events
    make_image(folders[2] / "polled.png", seed=8)
    shutil.copy(folders[2] / "polled.png", folders[0] / "polled.png")
    watch.until(lambda: watch.converted("polled.png"), 30)
    assert watch.stop() == 0


def test_a_burst_past_the_bound_becomes_one_rescan(folders, monkeypatch):
    """Memory stays bounded: past MAX_PENDING paths the follower drops events and asks for
    one rescan (None) once the folder is quiet, instead of queueing every path."""
    from animegan_cli.watch import follow

    monkeypatch.setattr(follow, "MAX_PENDING", 5)
    follower = follow.Follower([folders[0]], True, 0.2, False,
                               lambda path: path.suffix == ".png", lambda message: None)
    try:
        for i in range(20):
            make_image(folders[0] / f"b{i:02d}.png", seed=i)
        assert follower.inbox.maxsize == 5
        deadline = time.monotonic() + 20
        got: list[list[Path] | None] = []
        for batch in follower.batches(lambda: time.monotonic() > deadline or None in got):
            got.append(batch)
            assert len(follower.pending) <= 5
        assert None in got
        assert sum(len(b) for b in got if b) < 20  # not every path was kept
    finally:
        follower.close()
