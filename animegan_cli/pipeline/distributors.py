"""The runners a run hands its styling to, by name: the pipeline's one way to reach them.

Runners (animegan_cli/runners/) depend on the pipeline and drive its loop (loop.py); the
pipeline never imports them. convert.py asks this registry for a runner by name, and the
module is imported only when a run uses it (Ray only with --ray). The runners of the input
kinds styled whole (clips, animations) are named by media/kinds.py's registry the same way.
A new runner is one module in runners/ and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RUNNERS = {
    "ray": "animegan_cli.runners.ray_runner",  # --ray: work items on a Ray actor pool
}


def runner(name: str) -> ModuleType:
    """The runner module registered as ``name``, imported now."""
    return importlib.import_module(RUNNERS[name])
