"""The per-item failure boundary: an error while one input is decoded, styled, encoded or
muxed fails that input alone, with one line; the run goes on.

Every runner (convert's loop, the Ray actors, video clips) and every front end (serve) puts
its per-input work behind ``PER_ITEM_ERRORS`` and reports ``item_failure_reason(exc)``. A
decoder library raises whatever it likes on a damaged file (pillow-heif ``RuntimeError``,
Pillow's DDS ``NotImplementedError``, SPIDER ``AttributeError``), so the boundary is every
``Exception``. What is not an ``Exception`` ends the run as it should: Ctrl-C and SIGTERM
(``signals.Interrupted`` is a ``KeyboardInterrupt``), ``SystemExit``. Errors that mean the run
itself cannot go on (``RunStopped``: the output disk is full or gone) must be caught and
re-raised before this boundary.
"""

from __future__ import annotations

from animegan_cli.core.errors import AnimeganError

PER_ITEM_ERRORS: tuple[type[BaseException], ...] = (Exception,)

_MAX_REASON = 300  # characters: a reason is one line of a log, not a dump


def item_failure_reason(exc: BaseException) -> str:
    """One line for a failed input: our own errors as they read, others with their type."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, AnimeganError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return text or type(exc).__name__
