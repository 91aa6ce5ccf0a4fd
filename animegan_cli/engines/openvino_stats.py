"""OpenVINO with normalisation statistics in and out: the IR variant ``run_stats`` runs.

A second IR of the checkpoint, converted from model/norm_stats.py's ``StatsGenerator``:
inputs the image batch, the statistics (N, L, 2) and the mix (N,), outputs the styled
batch and the statistics each layer used. Cached beside the plain IR (its name says
``stats``), converted on the first ``run_stats``; compiled per input shape (static shapes:
a tile size is one compile) in its own small LRU, so plain runs never pay for it.

Own statistics are asked for as mix 0 (the supplied zeros ignored), supplied ones as mix 1.
Kept apart from openvino_engine.py: that module only hands ``run_stats`` here.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from animegan_cli.engines import signal_stack
from animegan_cli.engines.contract import to_model_input, to_pixels

if TYPE_CHECKING:
    import numpy as np
    import torch

    from animegan_cli.model.generator import Generator

# Compiled shapes kept (a run's tile sizes: a full tile, the edge tiles, the stats pass).
MAX_STATS_SHAPES = 8


def stats_ir_path(plain_xml: Path) -> Path:
    """The stats variant's .xml, named after the plain IR's (same checkpoint, same OpenVINO)."""
    return plain_xml.with_name(f"{plain_xml.stem}-stats.xml")


def convert_stats_generator(generator: Generator):  # -> openvino.Model
    """Trace StatsGenerator into an OpenVINO model: dynamic N/H/W, three inputs, two outputs."""
    import openvino as ov
    import torch

    from animegan_cli.model.norm_stats import STATS_FIELDS, StatsGenerator

    model = StatsGenerator(generator.eval())
    layers = model.layers
    example = (torch.zeros(1, 3, 64, 64), torch.zeros(1, layers, STATS_FIELDS), torch.zeros(1))
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about control flow on shapes
        return ov.convert_model(
            model, example_input=example,
            input=[[-1, 3, -1, -1], [-1, layers, STATS_FIELDS], [-1]],
        )


class StatsRunner:
    """The stats IR of one OpenVINO engine: read or converted once, compiled per shape.

    ``core`` is the engine's shared Core and ``save_ir`` its atomic IR writer (passed in:
    this module imports nothing of openvino_engine, which imports it).
    """

    def __init__(self, generator: Generator, plain_xml: Path, config: dict[str, object],
                 core: Any, save_ir: Callable[[Any, Path], None]) -> None:
        from animegan_cli.model.norm_stats import norm_layers

        self.core = core
        self.config = config
        self.layers = len(norm_layers(generator))
        xml = stats_ir_path(plain_xml)
        if not (xml.exists() and xml.with_suffix(".bin").exists()):  # .xml placed last
            save_ir(convert_stats_generator(generator), xml)
        self.model = self.core.read_model(xml)
        self.compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.compile_seconds = 0.0

    def _request(self, shape: tuple[int, ...]):  # -> openvino.InferRequest
        import openvino as ov

        from animegan_cli.model.norm_stats import STATS_FIELDS

        found = self.compiled.get(shape)
        if found is not None:
            self.compiled.move_to_end(shape)
            return found
        started = time.perf_counter()
        shaped = self.model.clone()
        n = shape[0]
        shaped.reshape({
            shaped.inputs[0]: ov.PartialShape(list(shape)),
            shaped.inputs[1]: ov.PartialShape([n, self.layers, STATS_FIELDS]),
            shaped.inputs[2]: ov.PartialShape([n]),
        })
        with signal_stack.kept():  # see signal_stack: else a later SIGCHLD can be a SIGSEGV
            compiled = self.core.compile_model(shaped, "CPU", self.config)
        request = compiled.create_infer_request()
        self.compile_seconds += time.perf_counter() - started
        self.compiled[shape] = request
        while len(self.compiled) > MAX_STATS_SHAPES:
            self.compiled.popitem(last=False)
        return request

    def run(
        self, batch: torch.Tensor, stats: np.ndarray | None, mix: np.ndarray | None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """StatsEngine.run_stats on this IR (see engines/contract.py)."""
        import numpy as np
        import torch

        from animegan_cli.model.norm_stats import STATS_FIELDS, as_mix, as_stats

        x = to_model_input(batch, torch.float32).numpy()
        n = len(x)
        if stats is None:
            supplied = np.zeros((n, self.layers, STATS_FIELDS), np.float32)
            blend = np.zeros(n, np.float32)
        else:
            supplied = as_stats(stats, n, self.layers)
            blend = as_mix(1.0 if mix is None else mix, n)
        result = self._request(tuple(x.shape)).infer([x, supplied, blend])
        y, used = (np.asarray(v) for v in result.values())
        return to_pixels(torch.from_numpy(y)), used.astype(np.float32)
