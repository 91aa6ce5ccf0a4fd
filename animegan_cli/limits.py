"""Bounds that planning checks before any model loads; importable without torch."""

from __future__ import annotations

MIN_SIDE = 8
"""Smallest side the generator takes: two stride-2 convs, then reflection padding of 1."""
