"""Decoders and the writer thread run at a lower priority than the model's threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from animegan_cli.core.priority import HELPER_NICENESS, lower_this_thread
from animegan_cli.media import data
from animegan_cli.media.data import ImageDataset, PreprocessSettings
from animegan_cli.pipeline.workers import prepared_images
from tests.conftest import make_image


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: the calling thread's


def test_lowering_a_thread_leaves_the_others_alone():
    before, seen = niceness(), []
    worker = threading.Thread(target=lambda: (lower_this_thread(), seen.append(niceness())))
    worker.start()
    worker.join()
    assert seen == [before + HELPER_NICENESS]
    assert niceness() == before


def test_decoder_processes_run_at_the_helper_priority(tmp_path: Path, monkeypatch):
    main = niceness()
    real = data.prepare_image

    def prepare_noting_priority(index, path, settings):
        item = real(index, path, settings)
        item.error = f"nice {niceness()}"  # carried back to the parent with the item
        return item

    monkeypatch.setattr(data, "prepare_image", prepare_noting_priority)  # before the fork
    paths = [make_image(tmp_path / f"{i}.png", 16, 16, seed=i) for i in range(2)]
    items = list(prepared_images(ImageDataset(paths, PreprocessSettings(size=16)), 1, 1))
    assert {item.error for item in items} == {f"nice {main + HELPER_NICENESS}"}
    assert niceness() == main


def test_the_writer_thread_encodes_at_the_helper_priority():
    from animegan_cli.pipeline.writer import Writer

    writer = Writer(None, None, None, None, None)  # type: ignore[arg-type]
    try:
        assert writer._pool.submit(niceness).result() == niceness() + HELPER_NICENESS
    finally:
        writer._pool.shutdown()
