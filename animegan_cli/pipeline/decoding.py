"""Where a run decodes: in decoder processes (a DataLoader) or on a thread of its own process.

Decoder processes cost a fixed price before the first image: importing torch (its
DataLoader, 1.5-2.4 s) and starting the processes (~0.4 s). A small run does not earn it
back, so it decodes on one thread of its own (Pillow releases the GIL while it decodes and
resizes, so the thread overlaps the model as the processes do); with an engine that takes
numpy (OpenVINO) and its model cached, such a run never imports torch at all. The
processes stay for big runs, where they pay, and they keep a decoder that crashes from
taking the run with it. The crossover (IN_PROCESS_MAX_IMAGES) is measured by
``benchmarks/decoders.py``; see docs/performance.md.
"""

from __future__ import annotations

import queue
import threading

from animegan_cli.core.priority import lower_this_thread
from animegan_cli.media import data

# Runs of at most this many images to style decode on a thread of their own process.
IN_PROCESS_MAX_IMAGES = 32
# Images decoded ahead of the model by that thread (each a model-sized uint8 array).
AHEAD = 4
_END = object()


def in_process(count: int, num_workers: int) -> bool:
    """Whether a run styling ``count`` images decodes in its own process (no DataLoader):
    asked for (--num-workers 0), or too few images for decoder processes to pay."""
    return num_workers == 0 or count <= IN_PROCESS_MAX_IMAGES


def decoded_on_thread(dataset: data.ImageDataset, ahead: int = AHEAD) -> ThreadDecoder:
    """Every item of ``dataset`` in order, decoded by a thread that starts now (so decoding
    overlaps the model's loading); ``close()`` stops the thread."""
    return ThreadDecoder(dataset, ahead)


class ThreadDecoder:
    """One decoding thread feeding a bounded queue, iterated in order. A file that fails to
    decode is an item with its reason (data.prepare_image); anything else the thread raises
    is raised again where the items are taken."""

    def __init__(self, dataset: data.ImageDataset, ahead: int = AHEAD) -> None:
        self.dataset = dataset
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max(1, ahead))
        self.stop = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._work, name="decoder", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        lower_this_thread()  # decoding ahead must not take the model's cores from it
        try:
            with data.own_pixel_limit():  # --max-pixels is the limit (decode_image)
                for index in range(len(self.dataset)):
                    if self.stop.is_set() or not self._put(self.dataset[index]):
                        return
        except BaseException as exc:  # raised again where the images are taken
            self._put(exc)
        self._put(_END)

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
