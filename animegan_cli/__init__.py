"""animegan: batch-convert photos into anime-style images with AnimeGANv2."""

__version__ = "0.1.0"
