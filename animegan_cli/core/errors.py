"""Exception types; each carries a one-line message a user can act on."""

from __future__ import annotations


class AnimeganError(Exception):
    """Base class for every error the tool reports to the user."""


class UsageError(AnimeganError):
    """The command as given cannot run (bad option value, missing input, unwritable output)."""


class WeightsError(AnimeganError):
    """A checkpoint is missing, corrupt, incompatible or failed verification."""


class DownloadError(WeightsError):
    """A checkpoint could not be downloaded (offline, server error, hash mismatch)."""


class InputImageError(AnimeganError):
    """One input file cannot be converted (corrupt, truncated, not an image, unreadable)."""


class RunStopped(AnimeganError):
    """The run cannot go on (disk full, decoders keep dying); what was written stays."""

    summary: object | None = None


def install_hint(extra: str) -> str:
    """How to install an optional extra: the one form every message and doc uses. animegan
    is installed from its checkout (the index has no package of that name)."""
    return f'pip install -e ".[{extra}]" in the animegan checkout'
