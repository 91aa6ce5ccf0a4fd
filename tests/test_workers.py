"""Decoder processes that die: only the image in hand fails, the run never hangs."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

import pytest
from torch.utils.data import get_worker_info

from animegan_cli.core.errors import RunStopped
from animegan_cli.media import data
from animegan_cli.media.data import ImageDataset, PreprocessSettings
from animegan_cli.pipeline import workers
from animegan_cli.pipeline.workers import prepared_images
from tests.conftest import make_image

_prepare = data.prepare_image


def _crash(how: str) -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    ctypes.string_at(0)  # a segfault, as in a broken decoder


def dying_on(name: str, how: str):
    """prepare_image, except that a worker given ``name`` dies (never the test process)."""

    def prepare(index: int, path: Path, settings: PreprocessSettings) -> data.PreparedImage:
        if path.name == name and get_worker_info() is not None:
            _crash(how)
        return _prepare(index, path, settings)

    return prepare


def dataset(tmp_path: Path, n: int = 6) -> ImageDataset:
    paths = [make_image(tmp_path / f"{i}.png", 16, 16, seed=i) for i in range(n)]
    return ImageDataset(paths, PreprocessSettings(size=16))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_item_once(tmp_path: Path, num_workers: int):
    items = list(prepared_images(dataset(tmp_path), num_workers, prefetch=2))
    assert sorted(item.index for item in items) == list(range(6))
    assert all(item.error is None for item in items)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "reason"), [
    ("kill", "killed by signal 9, SIGKILL"),
    ("segfault", "killed by signal 11, SIGSEGV"),
])
def test_a_dying_worker_fails_only_its_image(tmp_path, monkeypatch, how, reason):
    ds = dataset(tmp_path, 8)
    # Patched before the DataLoader forks its workers, so they inherit it.
    monkeypatch.setattr(data, "prepare_image", dying_on("3.png", how))
    items = list(prepared_images(ds, num_workers=2, prefetch=2))
    assert sorted(item.index for item in items) == list(range(8))
    failed = {item.index: item.error for item in items if item.error is not None}
    assert failed == {3: f"decoder process died reading it ({reason})"}


@pytest.mark.slow
def test_workers_that_keep_dying_between_images_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "MAX_UNEXPLAINED_DEATHS", 1)
    monkeypatch.setattr(data, "_init_worker", lambda _: os._exit(3))
    with pytest.raises(RunStopped, match=r"decoder processes keep dying \(exit status 3\)"):
        list(prepared_images(dataset(tmp_path, 2), num_workers=1, prefetch=1))


def test_torch_sigchld_handler_is_restored(tmp_path: Path):
    before = signal.getsignal(signal.SIGCHLD)
    list(prepared_images(dataset(tmp_path, 2), num_workers=1, prefetch=1))
    after = signal.getsignal(signal.SIGCHLD)
    # Torch installs its handler once per process; whatever was there is there again.
    if getattr(before, "__module__", "").startswith("torch."):
        assert after is before
    else:
        assert not getattr(after, "__module__", "").startswith("torch.") or after is before
