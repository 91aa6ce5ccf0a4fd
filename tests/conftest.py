"""Shared fixtures: isolated cache/config dirs, generated images and a random checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animegan_cli.core.errors import AnimeganError
from animegan_cli.model.generator import Generator
from animegan_cli.tools.tune import TuneRequest

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "spec" / "golden"

# The test images are tiny, so torch's intra-op threads only add start and spin-wait costs, and
# on a busy machine those dominate (tests/test_convert.py: 28 s with 2 threads, 7 s with 1, on
# 2 shared cores). Set in the environment so that subprocesses and workers inherit it; an
# explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
TEST_THREADS = int(os.environ["OMP_NUM_THREADS"])


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point every cache/config/weights location below ``home``; never touch the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))  # serve's job store
    monkeypatch.delenv("ANIMEGAN_WEIGHTS_DIR", raising=False)
    # An address nothing listens on: a test that downloads by accident fails fast.
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_URL", "http://127.0.0.1:9/")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point every cache/config/weights location at a temp dir; never touch the network."""
    torch.set_num_threads(TEST_THREADS)  # again per test: a run with --threads N leaves N set
    home = tmp_path_factory.mktemp("home")
    isolate(monkeypatch, home)
    return home


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB image (H, W, 3) uint8: gradients plus noise, like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [xx / max(width - 1, 1), yy / max(height - 1, 1), (xx + yy) / max(width + height - 2, 1)],
        axis=-1,
    )
    noise = rng.normal(0, 0.08, size=(height, width, 3))
    return (np.clip(base + noise, 0, 1) * 255).astype(np.uint8)


def make_image(path: Path, width: int = 40, height: int = 28, mode: str = "RGB",
               seed: int = 0, **save: object) -> Path:
    """Write a generated image of the given mode to ``path`` (format from the extension)."""
    img = Image.fromarray(photo_like(width, height, seed), "RGB")
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize((width, height))
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path


def write_random_checkpoint(path: Path) -> Path:
    """Save a random-weight (seed 0) checkpoint in the published format: a float32 state dict."""
    torch.manual_seed(0)
    torch.save(Generator().state_dict(), path)
    return path


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A random-weight checkpoint in the published format (plain state dict, float32)."""
    return write_random_checkpoint(tmp_path / "random_generator.pt")


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A small folder tree of generated photos in several formats and sizes."""
    root = tmp_path / "photos"
    make_image(root / "a.jpg", 40, 28, seed=1)
    make_image(root / "b.png", 28, 40, seed=2)
    make_image(root / "nested" / "c.webp", 36, 36, seed=3)
    return root


@pytest.fixture
def deep_folder(tmp_path: Path):
    """tmp_path/in/d/d/...: 1100 folders deep (past the recursion limit); removed afterwards."""
    root = tmp_path / "in"
    path = root
    path.mkdir()
    for _ in range(1100):  # os.makedirs (and shutil.rmtree) recurse once per level
        path = path / "d"
        path.mkdir()
    yield path
    while path != tmp_path:  # bottom-up, so that pytest's rmtree meets a shallow tree
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
        path = path.parent


@pytest.fixture
def tune_requests(monkeypatch):
    """The TuneRequest the command builds, without measuring anything."""
    seen: list[TuneRequest] = []

    def fake_run_tune(request, on_trial=None, on_message=None):
        seen.append(request)
        raise AnimeganError("stopped by the test")

    monkeypatch.setattr("animegan_cli.cli.tune.run_tune", fake_run_tune)
    return seen
