"""The Batcher: one engine thread, same-shape batches within a window, a bounded queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from animegan_cli.serve.batcher import Batcher, Closed, QueueFull


class Recorder:
    """A run_batch that records each batch and can be held back with a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, payloads):
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(payloads))
        return [p.upper() if p != "bad" else ValueError("bad image") for p in payloads]


def test_images_from_different_clients_share_a_batch_within_the_window():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=4, wait_s=0.3, queue_size=16).start()
    futures = []
    clients = [threading.Thread(target=lambda n=n: futures.extend(
        batcher.submit([("a", f"c{n}")]))) for n in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert sorted(f.result(5) for f in futures) == ["C0", "C1", "C2"]
    assert batcher.close(5)
    assert len(run.batches) == 1 and sorted(run.batches[0]) == ["c0", "c1", "c2"]


def test_a_full_batch_runs_without_waiting_for_the_window():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=2, wait_s=30, queue_size=16).start()
    started = time.monotonic()
    futures = batcher.submit([("a", "x"), ("a", "y")])
    assert [f.result(5) for f in futures] == ["X", "Y"]
    assert time.monotonic() - started < 5  # not the 30 s window
    batcher.close(5)


def test_only_images_of_one_shape_share_a_batch_and_order_is_kept():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=8, wait_s=0.2, queue_size=16)
    futures = batcher.submit([("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2")])
    batcher.start()
    assert [f.result(5) for f in futures] == ["A1", "B1", "A2", "B2"]
    batcher.close(5)
    assert run.batches == [["a1", "a2"], ["b1", "b2"]]


def test_max_batch_size_bounds_a_batch():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=2, wait_s=0.0, queue_size=16)
    futures = batcher.submit([("a", str(i)) for i in range(5)])
    batcher.start()
    for f in futures:
        f.result(5)
    batcher.close(5)
    assert [len(b) for b in run.batches] == [2, 2, 1]


def test_a_full_queue_refuses_at_once_all_or_none():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, max_batch_size=1, wait_s=0.0, queue_size=2).start()
    first = batcher.submit([("a", "running")])
    assert run.started.wait(5)  # the engine holds it: the queue is empty again
    batcher.submit([("a", "q1"), ("a", "q2")])
    started = time.monotonic()
    with pytest.raises(QueueFull):
        batcher.submit([("a", "q3")])
    assert time.monotonic() - started < 0.05
    assert batcher.depth == 2
    gate.set()
    assert first[0].result(5) == "RUNNING"
    batcher.close(5)


def test_cancelled_images_are_skipped_not_computed_and_free_their_room():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, max_batch_size=1, wait_s=0.0, queue_size=2).start()
    batcher.submit([("a", "running")])
    assert run.started.wait(5)
    gone = batcher.submit([("a", "gone1"), ("a", "gone2")])
    assert all(f.cancel() for f in gone)  # the client went away
    assert batcher.depth == 0
    kept = batcher.submit([("a", "kept")])  # their room is free again
    gate.set()
    assert kept[0].result(5) == "KEPT"
    batcher.close(5)
    assert ["gone1"] not in run.batches and ["gone2"] not in run.batches
    assert batcher.dropped == 2
    with pytest.raises(CancelledError):
        gone[0].result(0)


def test_a_failing_image_fails_alone_and_an_engine_error_fails_its_batch():
    def run(payloads):
        if "boom" in payloads:
            raise RuntimeError("engine broke")
        return [ValueError("bad image") if p == "bad" else p for p in payloads]

    batcher = Batcher(run, max_batch_size=2, wait_s=0.0, queue_size=8)
    good, bad, boom1, boom2 = batcher.submit([("a", "ok"), ("a", "bad"), ("b", "boom"),
                                              ("b", "x")])
    batcher.start()
    assert good.result(5) == "ok"
    with pytest.raises(ValueError, match="bad image"):
        bad.result(5)
    with pytest.raises(RuntimeError, match="engine broke"):
        boom1.result(5)
    with pytest.raises(RuntimeError):
        boom2.result(5)
    assert batcher.close(5)  # the thread survived both


def test_close_finishes_what_is_queued_then_refuses_more():
    gate = threading.Event()
    run = Recorder(gate)
    batcher = Batcher(run, max_batch_size=1, wait_s=10, queue_size=8).start()
    futures = batcher.submit([("a", "1"), ("a", "2"), ("a", "3")])
    assert run.started.wait(5)
    closer = threading.Thread(target=batcher.close, args=(5,))
    closer.start()
    time.sleep(0.05)
    with pytest.raises(Closed):
        batcher.submit([("a", "late")])
    gate.set()
    closer.join(5)
    assert [f.result(0) for f in futures] == ["1", "2", "3"]


def test_on_batch_reports_each_batch_size():
    sizes = []
    batcher = Batcher(lambda p: list(p), max_batch_size=3, wait_s=0.0, queue_size=8,
                      on_batch=lambda n, s: sizes.append(n))
    futures = batcher.submit([("a", i) for i in range(4)])
    batcher.start()
    for f in futures:
        f.result(5)
    batcher.close(5)
    assert sizes == [3, 1]


def test_reserved_room_counts_as_taken_until_used_or_released():
    batcher = Batcher(lambda p: list(p), max_batch_size=1, wait_s=0.0, queue_size=3)
    batcher.reserve(2)  # a request decoding two images
    assert not batcher.full
    with pytest.raises(QueueFull):
        batcher.reserve(2)  # refused before it decodes anything
    batcher.reserve(1)
    assert batcher.full
    batcher.release(1)  # one of them turned out not to be an image
    futures = batcher.submit([("a", "x"), ("a", "y")], reserved=True)
    assert batcher.depth == 2 and not batcher.full
    batcher.start()
    assert [f.result(5) for f in futures] == ["x", "y"]
    batcher.close(5)
