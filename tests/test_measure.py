"""Model-only measurement: alternating rounds over engines and shapes."""

from __future__ import annotations

import time

import torch

from animegan_cli.tools.measure import interleaved_rates, model_only_rate


class SleepyEngine:
    """Takes ``per_pixel`` seconds per pixel of a batch; records the shapes it ran."""

    description = "sleepy"

    def __init__(self, per_pixel: float) -> None:
        self.per_pixel = per_pixel
        self.ran: list[tuple[int, ...]] = []

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        self.ran.append(tuple(batch.shape))
        time.sleep(self.per_pixel * batch[:, 0].numel())
        return batch.permute(0, 2, 3, 1)


def test_rounds_alternate_engines_and_rates_follow_their_speed():
    fast, slow = SleepyEngine(1e-6), SleepyEngine(4e-6)
    rates = interleaved_rates({"fast": fast, "slow": slow}, [(1, 32, 64)], rounds=2,
                              seconds=0.05)
    ratio = rates["fast", (1, 32, 64)].images_per_second / rates["slow", (1, 32, 64)]\
        .images_per_second
    assert 2.5 < ratio < 4.5
    assert rates["slow", (1, 32, 64)].batches >= 2


def test_varying_shapes_cycle_batch_by_batch():
    engine = SleepyEngine(1e-7)
    interleaved_rates({"e": engine}, [(1, 8, 8), (2, 8, 16)], rounds=1, seconds=0.02,
                      varying=True)
    timed = engine.ran[2:]  # after one warm-up batch per shape
    assert timed[:4] == [(1, 3, 8, 8), (2, 3, 8, 16), (1, 3, 8, 8), (2, 3, 8, 16)]


def test_model_only_rate_takes_an_engine_and_reports_per_shape():
    rates = model_only_rate(SleepyEngine(1e-7), [(8, 8), (16, 8)], batch_size=2, rounds=1,
                            seconds=0.02)
    assert sorted(rates) == [(8, 8), (16, 8)]
    assert rates[16, 8].batch_size == 2 and rates[16, 8].images_per_second > 0
