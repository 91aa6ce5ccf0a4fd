"""What this machine and installation are: versions, CPU features, paths, weights.

Everything but torch_details() is found without importing torch (~1.5 s): versions come
from the installed packages' metadata.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Mapping
from pathlib import Path

from animegan_cli import __version__
from animegan_cli.core.errors import UsageError, install_hint
from animegan_cli.core.units import format_bytes
from animegan_cli.engines.base import (
    ENGINES,
    available_backends,
    cpu_flags,
    resolve_backend,
    resolve_precision,
)
from animegan_cli.model.weights import WeightsStore, user_cache_dir
from animegan_cli.pipeline.resources import DEFAULT_BUDGET_SHARE, default_budget
from animegan_cli.settings.config import config_path

# The CPU features that decide which engine and precision are fast.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo where it exists)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_system() -> dict[str, dict[str, str]]:
    """Sections of ``animegan info``: versions, CPU, paths, weights (no torch import)."""
    flags = cpu_flags()
    store = WeightsStore.from_env()
    config = config_path()
    installed = {s.style.name: str(s.path) for s in store.status() if s.path}
    installed.update({name: str(path) for name, path in store.custom().items()})
    return {
        "versions": {
            "animegan": __version__,
            "python": platform.python_version(),
            **{b.package: _version(b.package) for b in ENGINES.values()},
            "pillow": _version("pillow"),
            "nncf (int8)": _version("nncf"),
        },
        "cpu": {
            "model": cpu_model(),
            "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count()),
            "features": " ".join(f"{f}:{'yes' if f in flags else 'no'}" for f in CPU_FEATURES),
        },
        "paths": {
            "config": f"{config} ({'exists' if config.exists() else 'not written yet'})",
            "cache": str(user_cache_dir()),
            "weights search": " -> ".join(str(p) for p in store.search_dirs),
        },
        "engines": engines_section(),
        "weights": installed or {"installed": "none (animegan weights download NAME)"},
        "faces": _faces_section(),
    }


def engines_section() -> dict[str, str]:
    """Each registered engine (a --backend choice): what it runs, or how to install it."""
    rows = {}
    ranked = available_backends()
    for backend in ENGINES.values():
        if not backend.available():
            rows[backend.name] = f"not installed ({backend.install})"
            continue
        preference = f"{ranked.index(backend) + 1} of {len(ranked)}"
        rows[backend.name] = (f"{'/'.join(backend.devices)}, {' '.join(backend.precisions)}, "
                              f"{' or '.join(backend.shape_modes)} shapes; auto's preference "
                              f"here: {preference}")
    return rows


def _faces_section() -> dict[str, str]:
    """Which styles --faces is made for, and whether its detector is installed."""
    from animegan_cli.faces.detect import face_styles
    from animegan_cli.model.weights import STYLES

    opencv = _version("opencv-python-headless")
    trained = ", ".join(f"{n} ({STYLES[n].resolution}px)" for n in face_styles())
    return {
        "trained on faces": f"{trained}; --faces on another style just crops",
        "detector": f"OpenCV {opencv} Haar cascades (bundled)" if opencv != "not installed"
        else f"not installed ({install_hint('faces')})",
    }


def torch_details() -> dict[str, dict[str, str]]:
    """The section of ``animegan info --torch`` that only an imported torch can tell."""
    import torch

    gpu = (
        f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
        if torch.cuda.is_available() else "none"
    )
    return {"torch": {"threads": str(torch.get_num_threads()), "gpu": gpu}}


def describe_auto(name: str, value: object, params: Mapping[str, object]) -> str:
    """For a setting left to the machine (``auto``, or none given), what it becomes here."""
    if name == "max_memory" and value is None:
        share = f"{DEFAULT_BUDGET_SHARE:.0%}"
        return f"{format_bytes(default_budget())} ({share} of available)"
    auto = value is None if name == "threads" else value == "auto"
    if not auto or name not in ("backend", "precision", "threads"):
        return ""
    try:
        device = str(params.get("device", "cpu"))
        backend = resolve_backend(str(params.get("backend", "auto")), device,
                                  str(params.get("precision", "auto")))
    except UsageError:
        return ""
    if name == "threads":
        # Each runtime has its own default (torch's is imported for this row alone).
        return ENGINES[backend].default_threads()
    if name == "backend":
        return backend
    try:
        return resolve_precision("auto", device, backend)
    except UsageError:
        return ""
