"""Errors, the per-item failure boundary, bounds, atomic writes, signals: used by every layer."""
