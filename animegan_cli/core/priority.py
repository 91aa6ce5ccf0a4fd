"""Lower scheduling priority for the pipeline's helpers, so the model's threads keep the cores.

The decoder processes and the encoder/writer thread compete with the engine's threads for
the same cores; when the kernel preempts one engine thread, the others wait for it at the
next layer (the engine runs its threads in lockstep), so a busy helper costs the model more
than its own CPU time. At a lower priority (a higher nice value) a helper still gets every
cycle the model leaves idle, and the model loses less to it. Linux keeps a nice value per
thread, which is what lets the encoder thread drop its own and not the model's.
"""

from __future__ import annotations

import contextlib
import os

# 5 gives a helper a third of a model thread's share of a busy core (CFS weight 335 vs
# 1024): enough to keep up with the model, see docs/performance.md for the measurement.
HELPER_NICENESS = 5


def lower_this_thread(niceness: int = HELPER_NICENESS) -> None:
    """Raise the calling thread's nice value by ``niceness`` (processes: their main thread)."""
    # Lowering priority needs no privilege; where the platform has no nice (or refuses),
    # the helper simply runs at the normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
