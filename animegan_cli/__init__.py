"""animegan: batch-convert photos into anime-style images with AnimeGANv2."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Stylizer", "__version__"]

if TYPE_CHECKING:
    from animegan_cli.stylizer import Stylizer


def __getattr__(name: str) -> object:
    # Lazy: importing the package (the CLI does, for --version) must not import torch.
    if name == "Stylizer":
        from animegan_cli.stylizer import Stylizer

        return Stylizer
    raise AttributeError(f"module 'animegan_cli' has no attribute {name!r}")
