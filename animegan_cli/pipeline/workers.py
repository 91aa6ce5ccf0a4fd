"""Decoder processes that may die (OOM killer, a decoder's segfault): only their image fails."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Iterator, MutableSequence, Sequence

from torch.utils.data import Dataset, get_worker_info

from animegan_cli.core.errors import RunStopped
from animegan_cli.media import data

# A death with no image in hand (between two images) cannot be pinned on one; after this
# many in a row the run stops instead of restarting the workers for ever.
MAX_UNEXPLAINED_DEATHS = 3
_DEATH = re.compile(r"DataLoader worker \(pid\(?s?\)? ([\d, ]+)\)")


class _TrackedDataset(Dataset):
    """Items ``indices`` of ``dataset``; each worker posts (pid, index) of the image in hand.

    The slots are shared memory written only by their own worker, so after a death the
    main process reads which image the dead worker was decoding.
    """

    def __init__(
        self, dataset: data.ImageDataset, indices: Sequence[int], slots: MutableSequence[int]
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.slots = slots

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> data.PreparedImage:
        index = self.indices[position]
        info = get_worker_info()
        if info is None:
            return self.dataset[index]
        self.slots[2 * info.id] = os.getpid()
        self.slots[2 * info.id + 1] = index
        item = self.dataset[index]
        self.slots[2 * info.id + 1] = -1
        return item


def _how_it_died(exitcode: int | None) -> str:
    if exitcode is None:
        return "cause unknown"
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {-exitcode}, {signal.Signals(-exitcode).name}"
        return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def _dead_workers(exc: RuntimeError, iterator: object) -> dict[int, str] | None:
    """pid -> how it died, when ``exc`` is the DataLoader's worker-death error; else None."""
    match = _DEATH.search(str(exc))
    if not match:
        return None
    pids = [int(p) for p in re.findall(r"\d+", match.group(1))]
    # The exit code is only on torch's private list of worker processes; without it the
    # message still names the image, just not the signal.
    codes = {w.pid: w.exitcode for w in getattr(iterator, "_workers", ())}
    return {pid: _how_it_died(codes.get(pid)) for pid in pids}


@contextlib.contextmanager
def _no_async_worker_errors(removed: list) -> Iterator[None]:
    """Keep torch's SIGCHLD handler from raising in the middle of unrelated code.

    On the first multi-process iterator torch installs a SIGCHLD handler that raises
    RuntimeError wherever the main thread happens to be (inside the model, inside a
    write). With it off, a dead worker is still found by the iterator itself, which
    checks its workers every 5 s while it waits; the error then comes from next(), where
    we know what to do with it. Torch's handler is put back at the end.
    """
    try:
        yield
    finally:
        if removed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGCHLD, removed[0])


def _drop_torch_sigchld(removed: list) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGCHLD)
    if callable(handler) and getattr(handler, "__module__", "").startswith("torch."):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if not removed:
            removed.append(handler)


class _Loader:
    """One DataLoader iterator over ``indices``, with the slots its workers post to."""

    def __init__(
        self, dataset: data.ImageDataset, indices: Sequence[int], num_workers: int, prefetch: int
    ) -> None:
        self.num_workers = num_workers
        self.slots = multiprocessing.RawArray("q", [-1] * (2 * num_workers))
        tracked = _TrackedDataset(dataset, indices, self.slots)
        self.iterator = iter(data.make_loader(tracked, num_workers, prefetch))

    def in_hand(self, dead: dict[int, str]) -> dict[int, str]:
        """index -> how its worker died, for each dead worker that was decoding an image."""
        found = {}
        for w in range(self.num_workers):
            pid, index = self.slots[2 * w], self.slots[2 * w + 1]
            if pid in dead and index >= 0:
                found[index] = dead[pid]
        return found


def prepared_images(
    dataset: data.ImageDataset, num_workers: int, prefetch: int = 4
) -> Iterator[data.PreparedImage]:
    """Every item of ``dataset`` once, decoded ahead by ``num_workers`` processes.

    The workers start now (so decoding overlaps whatever the caller does next). When one
    dies, the image it was decoding comes back failed ("decoder process died ..."); the
    others it had queued are decoded again by fresh workers.
    """
    if num_workers == 0:
        return _in_process(dataset)
    removed: list = []
    first = _Loader(dataset, range(len(dataset)), num_workers, prefetch)
    _drop_torch_sigchld(removed)
    return _supervised(dataset, num_workers, prefetch, first, removed)


def _in_process(dataset: data.ImageDataset) -> Iterator[data.PreparedImage]:
    with data.own_pixel_limit():
        yield from data.make_loader(dataset, 0)


def _supervised(
    dataset: data.ImageDataset,
    num_workers: int,
    prefetch: int,
    loader: _Loader | None,
    removed: list,
) -> Iterator[data.PreparedImage]:
    remaining = list(range(len(dataset)))
    unexplained = 0
    with _no_async_worker_errors(removed):
        while remaining:
            if loader is None:
                loader = _Loader(dataset, remaining, num_workers, prefetch)
                _drop_torch_sigchld(removed)
            received: set[int] = set()
            try:
                for item in loader.iterator:
                    received.add(item.index)
                    yield item
                return
            except RuntimeError as exc:
                dead = _dead_workers(exc, loader.iterator)
                if dead is None:
                    raise
                culprits = loader.in_hand(dead)
            finally:
                loader = None  # drops the iterator, which shuts its workers down
            unexplained = 0 if culprits else unexplained + 1
            if unexplained >= MAX_UNEXPLAINED_DEATHS:
                how = ", ".join(sorted(set(dead.values())))
                raise RunStopped(
                    f"decoder processes keep dying ({how}) between images; "
                    "try --num-workers 0, or look for the OOM killer in the system log"
                )
            for index, how in sorted(culprits.items()):
                received.add(index)
                yield data.PreparedImage(index, error=f"decoder process died reading it ({how})")
            remaining = [i for i in remaining if i not in received]
