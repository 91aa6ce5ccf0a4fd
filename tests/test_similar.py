"""Perceptual hashing and the index of styled look-alikes behind --reuse-similar."""

from __future__ import annotations

import numpy as np
import torch

from animegan_cli.pipeline.similar import SimilarIndex, dhash, hamming
from tests.conftest import photo_like


def chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)


def test_dhash_is_close_for_a_noisy_copy_and_far_for_another_picture():
    base = photo_like(64, 48, seed=1)
    noisy = np.clip(base.astype(int) + np.random.default_rng(5).integers(-6, 7, base.shape),
                    0, 255).astype(np.uint8)
    other = np.fliplr(photo_like(64, 48, seed=2)).copy()
    h = dhash(chw(base))
    assert dhash(base.transpose(2, 0, 1)) == h  # numpy or tensor, same hash
    assert hamming(h, dhash(chw(noisy))) <= 4
    assert hamming(h, dhash(chw(other))) > 16


def test_index_matches_within_threshold_and_shape_only():
    index: SimilarIndex[str] = SimilarIndex(threshold=2)
    index.add(0, (32, 32), 0b1111)
    assert index.find((32, 32), 0b1100) == (0, 2)
    assert index.find((32, 32), 0b1000) is None  # distance 3
    assert index.find((32, 28), 0b1111) is None  # another shape never matches


def test_index_prefers_the_closest_candidate():
    index: SimilarIndex[str] = SimilarIndex(threshold=4)
    index.add(0, (8, 8), 0b0000)
    index.add(1, (8, 8), 0b0111)
    assert index.find((8, 8), 0b0110) == (1, 1)


def test_waiting_look_alikes_are_released_when_the_candidate_is_styled():
    index: SimilarIndex[str] = SimilarIndex(threshold=0)
    index.add(3, (8, 8), 42)
    assert index.result(3) is None
    index.wait(3, "follower-a")
    index.wait(3, "follower-b")
    pixels = torch.zeros(8, 8, 3, dtype=torch.uint8)
    assert index.styled(3, pixels) == ["follower-a", "follower-b"]
    assert index.result(3) is pixels
    assert index.styled(3, pixels) == []


def test_old_results_are_dropped_beyond_the_memory_budget():
    index: SimilarIndex[str] = SimilarIndex(threshold=0, max_bytes=2 * 8 * 8 * 3)
    for i in range(3):
        index.add(i, (8, 8), i)
        index.styled(i, torch.zeros(8, 8, 3, dtype=torch.uint8))
    assert index.result(0) is None and index.find((8, 8), 0) is None
    assert index.result(2) is not None and index.find((8, 8), 2) == (2, 0)
