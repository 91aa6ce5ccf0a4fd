"""Writer: the writer thread, its bounded queue, records, reports, and the stop on a full disk."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from animegan_cli.core.errors import RunStopped
from animegan_cli.media import outputs
from animegan_cli.media.inputs import InputFile
from animegan_cli.pipeline.lock import LOCK_NAME, output_lock
from animegan_cli.pipeline.results import ConvertEvents, FileResult, Summary
from animegan_cli.pipeline.writer import Lender, Target, Writer
from animegan_cli.records import incremental
from animegan_cli.records.embedded import read_embedded
from animegan_cli.records.manifest import MANIFEST_NAME, Manifest
from animegan_cli.records.record import Provenance
from animegan_cli.stylizer import Stylizer
from tests.conftest import make_image


@pytest.fixture
def stylizer(checkpoint: Path) -> Stylizer:
    return Stylizer.load(weights=checkpoint, size=32, backend="torch")


class Run:
    """A Writer's surroundings: OUT (locked), its manifest, a summary and the reports heard."""

    def __init__(self, out: Path, stylizer: Stylizer, held) -> None:  # noqa: ANN001
        self.out, self.stylizer, self.held = out, stylizer, held
        self.manifest = Manifest.load(out)
        self.summary = Summary()
        self.reports: list[FileResult] = []
        self.events = ConvertEvents(on_result=self.reports.append)

    def writer(self, **kw: int) -> Writer:
        return Writer(self.stylizer, self.manifest, self.held, self.summary, self.events,
                      quality=90, **kw)

    def target(self, name: str, *duplicates: str) -> Target:
        return Target(self.decision(name), [self.decision(d) for d in duplicates])

    def decision(self, name: str) -> incremental.Decision:
        digest = hashlib.blake2b(name.encode(), digest_size=32).hexdigest()  # stands for the bytes
        record = Provenance(digest, 1, 2, "test", "c" * 40, {"size": 32})
        source = self.out.parent / "in" / name
        return incremental.Decision(InputFile(source, Path(name)), self.out / name,
                                    incremental.CONVERT, "no output yet", record)

    def names(self) -> list[str]:
        return [r.output.name if r.output else f"!{r.input.name}" for r in self.reports]


@pytest.fixture
def run(tmp_path: Path, stylizer: Stylizer):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out) as held:
        yield Run(out, stylizer, held)


def styled(stylizer: Stylizer, path: Path):  # noqa: ANN201
    """A real prepared image and its real result."""
    item = stylizer.prepare(path)
    [pixels] = stylizer.run([item])
    return item, pixels


def made(width: int = 20, height: int = 12):  # noqa: ANN201
    from animegan_cli.media.data import PreparedImage

    torch.manual_seed(width)
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8)
    return PreparedImage(0, pixels.permute(2, 0, 1), None, (width, height)), pixels


def test_a_result_goes_to_its_input_and_each_duplicate_with_its_own_record(tmp_path, run):
    item, pixels = styled(run.stylizer, make_image(tmp_path / "in" / "a.png", 40, 28))
    target = run.target("a.png", "copy.png", "again.jpg")
    with run.writer() as writer:
        writer.submit(target, item, pixels, 0.5)
    assert run.names() == ["a.png", "copy.png", "again.jpg"]
    assert [r.status for r in run.reports] == ["converted"] * 3
    assert [r.reused_from for r in run.reports] == [None, target.lead.item.path,
                                                    target.lead.item.path]
    assert run.reports[0].seconds >= 0.5 and run.reports[1].seconds < 0.5
    assert (run.summary.converted, run.summary.reused) == (3, 2)
    with Image.open(run.out / "a.png") as a, Image.open(run.out / "copy.png") as copy:
        assert a.size == (32, 24) and a.tobytes() == copy.tobytes()
    written = Manifest.load(run.out)
    for decision in target.decisions:  # each output's record names its own input
        assert written.get(decision.output).provenance == decision.record
    assert read_embedded(run.out / "copy.png") == target.duplicates[0].record


def test_a_borrowed_result_records_its_lender(run):
    item, pixels = made()
    lender = run.target("lender.png")
    target = run.target("look-alike.png", "same.png")
    with run.writer() as writer:
        writer.submit(target, item, pixels, 0.0, Lender(lender, 3))
    lent_hash = lender.lead.record.input_blake2b
    records = [Manifest.load(run.out).get(run.out / n).provenance for n in ("look-alike.png",
                                                                            "same.png")]
    assert [(r.similar_to, r.distance) for r in records] == [(lent_hash, 3), (lent_hash, 3)]
    assert [r.input_blake2b for r in records] == [d.record.input_blake2b
                                                  for d in target.decisions]
    assert [r.reused_from for r in run.reports] == [lender.lead.item.path] * 2


def test_reports_come_in_queue_order_and_a_finished_write_at_once(run, monkeypatch):
    real_write = outputs.write_image_atomic
    first_may_finish = threading.Event()

    def slow_first(image, path, **kwargs):  # noqa: ANN001, ANN202
        if path.name == "0.png":
            assert first_may_finish.wait(10)
        return real_write(image, path, **kwargs)

    monkeypatch.setattr(outputs, "write_image_atomic", slow_first)
    item, pixels = made()
    with run.writer(max_pending=8) as writer:
        for i in range(3):
            writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
        writer.fail(run.target("bad.png"), "cannot decode: broken", 0.1)
        assert run.names() == ["!bad.png"]  # not held back by the unfinished writes
        first_may_finish.set()
    assert run.names() == ["!bad.png", "0.png", "1.png", "2.png"]
    with run.writer(max_pending=0) as writer:  # each write is waited for, then reported
        writer.submit(run.target("3.png"), item, pixels, 0.0)
        assert run.names()[-1] == "3.png"


def test_the_queue_is_bounded(run, monkeypatch):
    real_write = outputs.write_image_atomic
    gate = threading.Event()

    def gated(image, path, **kwargs):  # noqa: ANN001, ANN202
        assert gate.wait(10)
        return real_write(image, path, **kwargs)

    monkeypatch.setattr(outputs, "write_image_atomic", gated)
    item, pixels = made()
    submitted: list[int] = []

    def engine() -> None:
        with run.writer(max_pending=2) as writer:
            for i in range(4):
                writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
                submitted.append(i)

    thread = threading.Thread(target=engine)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and submitted == [0, 1]  # the third waits for the oldest write
    gate.set()
    thread.join(10)
    assert submitted == [0, 1, 2, 3] and run.names() == ["0.png", "1.png", "2.png", "3.png"]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_stops_the_writer_leaving_no_temp_file_and_no_further_writes(
    run, monkeypatch, err
):
    saves: list[str] = []

    def full_disk(self, fp, *args, **kwargs):  # noqa: ANN001, ANN202
        saves.append(os.path.basename(getattr(fp, "name", "?")))
        fp.write(b"half an image")  # the temp file has bytes in it when the disk fills
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    item, pixels = made()
    with pytest.raises(RunStopped) as stopped, run.writer() as writer:
        writer.submit(run.target("0.png", "dup.png"), item, pixels, 0.0)
        for i in range(1, 4):
            writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
    message = f"cannot write {run.out / '0.png'}: {os.strerror(err)}"
    assert str(stopped.value) == (
        f"{message}; stopping, as every further write would fail the same way (free space or "
        "fix the output folder, then run again: finished images are skipped)"
    )
    assert writer.stopped and writer.stop_reason == str(stopped.value)
    assert len(saves) == 1  # nothing queued after the failed write was attempted
    assert [(r.status, r.error) for r in run.reports] == [("failed", message)]
    assert (run.summary.converted, run.summary.failed) == (0, 1)
    assert sorted(os.listdir(run.out)) == [LOCK_NAME]  # no output, no temp file, no manifest


def test_other_write_errors_fail_only_their_output(run, monkeypatch):
    real_write = outputs.write_image_atomic

    def refuse_1(image, path, **kwargs):  # noqa: ANN001, ANN202
        if path.name == "1.png":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_write(image, path, **kwargs)

    monkeypatch.setattr(outputs, "write_image_atomic", refuse_1)
    item, pixels = made()
    with run.writer() as writer:
        for i in range(3):
            writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
    assert not writer.stopped
    assert run.names() == ["0.png", "!1.png", "2.png"]
    assert run.reports[1].error == f"cannot write {run.out / '1.png'}: Permission denied"


def test_out_moved_stops_the_writer_before_it_writes_into_the_new_out(tmp_path, run, monkeypatch):
    real_write = outputs.write_image_atomic

    def write_then_move(image, path, **kwargs):  # noqa: ANN001, ANN202
        real_write(image, path, **kwargs)
        run.out.rename(tmp_path / "moved")
        run.out.mkdir()

    monkeypatch.setattr(outputs, "write_image_atomic", write_then_move)
    item, pixels = made()
    with pytest.raises(RunStopped, match="was removed or moved during the run"), \
            run.writer() as writer:
        for i in range(3):
            writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
    assert sorted(os.listdir(tmp_path / "moved")) == sorted(["0.png", LOCK_NAME, MANIFEST_NAME])
    assert os.listdir(run.out) == []
    assert run.names() == ["0.png", "!1.png"]
    assert run.reports[1].error == (
        f"cannot write {run.out / '1.png'}: the output folder was removed or moved"
    )


def test_leaving_the_block_drains_every_write_even_on_an_error(run):
    item, pixels = made()
    with pytest.raises(KeyError), run.writer() as writer:
        for i in range(5):
            writer.submit(run.target(f"{i}.png"), item, pixels, 0.0)
        raise KeyError("the engine broke")
    assert run.names() == [f"{i}.png" for i in range(5)]
    assert all((run.out / f"{i}.png").is_file() for i in range(5))
    assert run.summary.write_seconds > 0
