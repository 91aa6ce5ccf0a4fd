"""Byte counts as messages print them: below every layer that names a size (decoders, memory
budgets, serve's limits), so that a file's size and a budget read alike."""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30


def format_bytes(count: float) -> str:
    """Bytes as GB with one decimal (MB below 1 GB), as the messages print them."""
    return f"{count / GIB:.1f} GB" if count >= GIB else f"{count / MIB:.0f} MB"
