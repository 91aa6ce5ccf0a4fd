"""Where a run decodes: in decoder processes (a DataLoader) or in one forked decoder.

Decoder processes cost a fixed price before the first image: importing torch (its
DataLoader, 1.5-2.4 s) and starting the processes (~0.4 s). A small run does not earn it
back, so it decodes in one process forked from its own (a few milliseconds, no torch),
read by a thread that overlaps the model as the DataLoader does; with an engine that takes
numpy (OpenVINO) and its model cached, such a run never imports torch at all. Decoding
stays in a process of its own because a decoder that crashes (a damaged file meeting a
bug in a codec library) must fail its file, not end the run: the reader notices the
death, fails the file in hand and forks a fresh decoder for the rest, as workers.py does
for the DataLoader's processes. The crossover (IN_PROCESS_MAX_IMAGES) is measured by
``benchmarks/fixed_costs.py crossover``; see docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

from animegan_cli.core.orphans import end_with_parent, how_it_died
from animegan_cli.core.priority import lower_this_thread
from animegan_cli.media import data

# Runs of at most this many images to style decode without a DataLoader (one forked decoder).
IN_PROCESS_MAX_IMAGES = 32
# Images decoded ahead of the model by that thread (each a model-sized uint8 array).
AHEAD = 4
_END = object()


def in_process(count: int, num_workers: int) -> bool:
    """Whether a run styling ``count`` images decodes without a DataLoader (one forked
    decoder): asked for (--num-workers 0), or too few images for the DataLoader to pay."""
    return num_workers == 0 or count <= IN_PROCESS_MAX_IMAGES


def decoded_on_thread(dataset: data.ImageDataset, ahead: int = AHEAD,
                      forked: bool = True) -> ThreadDecoder:
    """Every item of ``dataset`` in order, decoded from now on (so decoding overlaps the
    model's loading) by a forked process read by a thread, or with ``forked`` False
    (--num-workers 0: no process at all, as asked) by the thread itself; ``close()``
    stops them."""
    return ThreadDecoder(dataset, ahead, forked)


class ThreadDecoder:
    """A reading thread feeding a bounded queue, iterated in order, from one forked decoder
    process at a time. A file that fails to decode is an item with its reason
    (data.prepare_image); one whose decoder died is an item saying how it died; anything
    else the thread raises is raised again where the items are taken."""

    def __init__(self, dataset: data.ImageDataset, ahead: int = AHEAD,
                 forked: bool = True) -> None:
        self.dataset = dataset
        self.forked = forked
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max(1, ahead))
        self.stop = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._work, name="decoder", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            index = 0
            while index < len(self.dataset):
                index = self._from_one_decoder(index) if self.forked else self._decode_here()
                if index < 0:
                    return  # closed
        except BaseException as exc:  # raised again where the images are taken
            self._put(exc)
        self._put(_END)

    def _decode_here(self) -> int:
        """Queue every item, decoded on this thread; -1 once closed."""
        lower_this_thread()  # decoding ahead must not take the model's cores from it
        with data.own_pixel_limit():  # --max-pixels is the limit (decode_image)
            for index in range(len(self.dataset)):
                if self.stop.is_set() or not self._put(self.dataset[index]):
                    return -1
        return len(self.dataset)

    def _from_one_decoder(self, start: int) -> int:
        """Queue the items a decoder forked now decodes from ``start`` on; the index to go
        on from (past the file a dead decoder had in hand), or -1 once closed."""
        wanted = self.dataset.settings
        receiver, process = _fork_decoder(self.dataset, start)
        index = start
        try:
            while index < len(self.dataset):
                try:
                    item: data.PreparedImage = receiver.recv()
                except EOFError:  # it died: the file in hand is the next one in order
                    process.join()
                    reason = f"decoder process died reading it ({how_it_died(process.exitcode)})"
                    item = data.PreparedImage(index, error=reason)
                if not self._put(_as_wanted(item, wanted)):
                    return -1
                index += 1
                if item.error is not None and item.error.startswith("decoder process died"):
                    return index
            return index
        finally:
            receiver.close()
            process.kill()
            process.join()

    def _put(self, item: object) -> bool:
        """Queue ``item``, waiting for room; False once the reader is closed."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> ThreadDecoder:
        return self

    def __next__(self) -> data.PreparedImage:
        if self.done:
            raise StopIteration
        item = self.queue.get()
        if item is _END:
            self.done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the thread (it ends after the image in hand) and wait for it."""
        self.done = True
        self.stop.set()
        self.thread.join()


def _fork_decoder(dataset: data.ImageDataset, start: int
                  ) -> tuple[Connection, multiprocessing.process.BaseProcess]:
    """A decoder process forked now, sending dataset[start:] in order through a pipe (whose
    small buffer keeps it at most an image or two ahead of the reader)."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    # numpy pixels cross the pipe as plain bytes; tensors would need torch's sharing.
    as_numpy = data.ImageDataset(dataset.paths, dataclasses.replace(dataset.settings, numpy=True))
    context = multiprocessing.get_context("fork")  # no re-import: starts in milliseconds
    process = context.Process(target=_decode_into, args=(as_numpy, range(start, len(dataset)),
                                                         sender), daemon=True)
    process.start()
    sender.close()  # the reader sees EOF once the decoder's end closes
    return receiver, process


def _decode_into(dataset: data.ImageDataset, indices: Sequence[int], sender: Connection) -> None:
    """The decoder process: each image in order into the pipe, then exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent()
    lower_this_thread()  # decoding ahead must not take the model's cores from it
    with data.own_pixel_limit():  # --max-pixels is the limit (decode_image)
        for index in indices:
            sender.send(dataset[index])
    sender.close()


def _as_wanted(item: data.PreparedImage, settings: data.PreprocessSettings
               ) -> data.PreparedImage:
    """``item`` with tensors where the run wants tensors (the decoder always sends numpy)."""
    if settings.numpy or item.pixels is None:
        return item
    import torch

    alpha = None if item.alpha is None else torch.from_numpy(item.alpha)
    return dataclasses.replace(item, pixels=torch.from_numpy(item.pixels), alpha=alpha)
