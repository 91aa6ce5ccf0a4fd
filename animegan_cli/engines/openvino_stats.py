"""OpenVINO with normalisation statistics in and out: the IR variant ``run_stats`` runs.

A second IR of the checkpoint, converted from model/norm_stats.py's ``StatsGenerator``:
inputs the image batch, the statistics (N, L, 2) and the mix (N,), outputs the styled
batch and the statistics each layer used; a second variant also takes the two sampling
grids of tiles of an image whose sides are not multiples of 4 (norm_stats.tile_grids).
Cached beside the plain IR (named ``...-stats[-grids]``), converted on the first
``run_stats`` that needs it; compiled per input shape (static shapes: a tile size is one
compile) in its own small LRU, so plain runs never pay for it.

Own statistics are asked for as mix 0 (the supplied zeros ignored); supplied ones without a
mix (tiles) run on a third variant, ``-stats-fixed``, that has no mix and measures nothing.
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


def stats_ir_path(plain_xml: Path, grids: bool, fixed: bool = False) -> Path:
    """A stats variant's .xml, named after the plain IR's (same checkpoint, same OpenVINO)."""
    variant = f"-stats{'-fixed' if fixed else ''}{'-grids' if grids else ''}"
    return plain_xml.with_name(f"{plain_xml.stem}{variant}.xml")


def convert_stats_generator(generator: Generator, grids: bool,
                            fixed: bool = False):  # -> openvino.Model
    """Trace StatsGenerator into an OpenVINO model with dynamic N/H/W: inputs the image, the
    statistics and the mix (with ``grids``, the two sampling grids too); outputs the styled
    image and the statistics used. ``fixed``: no mix input, the statistics used as they are
    (tiles): the graph then measures nothing of its own, which a mix of 1 still did (a
    reduction per layer: tiles ran at a third of the plain IR's speed)."""
    import openvino as ov
    import torch

    from animegan_cli.model.norm_stats import STATS_FIELDS, StatsGenerator

    model = StatsGenerator(generator.eval())
    layers = model.layers

    class Flat(torch.nn.Module):  # tracing wants flat tensor inputs
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x, stats, *rest):
            mix, grid = (None, rest) if fixed else (rest[0], rest[1:])
            return self.model(x, stats, mix, tuple(grid) if grid else None)

    example = [torch.zeros(1, 3, 64, 64), torch.zeros(1, layers, STATS_FIELDS)]
    shapes = [[-1, 3, -1, -1], [-1, layers, STATS_FIELDS]]
    if not fixed:
        example.append(torch.zeros(1))
        shapes.append([-1])
    if grids:
        example += [torch.zeros(1, 32, 32, 2), torch.zeros(1, 64, 64, 2)]
        shapes += [[-1, -1, -1, 2], [-1, -1, -1, 2]]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about control flow on shapes
        return ov.convert_model(Flat(), example_input=tuple(example), input=shapes)


class StatsRunner:
    """The stats IRs of one OpenVINO engine: each read or converted once (with and without
    grids, as asked), compiled per shape.

    ``core`` is the engine's shared Core and ``save_ir`` its atomic IR writer (passed in:
    this module imports nothing of openvino_engine, which imports it).
    """

    def __init__(self, generator: Callable[[], Generator], plain_xml: Path,
                 config: dict[str, object], core: Any,
                 save_ir: Callable[[Any, Path], None]) -> None:
        self.generator = generator  # loaded only to convert a variant not cached yet
        self.plain_xml = plain_xml
        self.core = core
        self.config = config
        self.save_ir = save_ir
        self.layers = 0  # the normalisations, read from the first IR's statistics input
        self.models: dict[tuple[bool, bool], Any] = {}  # (grids, fixed) -> openvino.Model
        self.compiled: OrderedDict[tuple[bool, bool, tuple[int, ...]], Any] = OrderedDict()
        self.compile_seconds = 0.0

    def _model(self, grids: bool, fixed: bool):  # -> openvino.Model
        if (grids, fixed) not in self.models:
            xml = stats_ir_path(self.plain_xml, grids, fixed)
            if not (xml.exists() and xml.with_suffix(".bin").exists()):  # .xml placed last
                self.save_ir(convert_stats_generator(self.generator(), grids, fixed), xml)
            model = self.core.read_model(xml)
            self.layers = model.inputs[1].get_partial_shape()[1].get_length()
            self.models[grids, fixed] = model
        return self.models[grids, fixed]

    def _request(self, shape: tuple[int, ...], grids: bool,
                 fixed: bool):  # -> openvino.InferRequest
        import openvino as ov

        from animegan_cli.model.norm_stats import STATS_FIELDS

        key = (grids, fixed, shape)
        found = self.compiled.get(key)
        if found is not None:
            self.compiled.move_to_end(key)
            return found
        started = time.perf_counter()
        shaped = self._model(grids, fixed).clone()
        n, _, h, w = shape
        shapes = [list(shape), [n, self.layers, STATS_FIELDS], *([] if fixed else [[n]])]
        if grids:
            shapes += [[n, h // 2, w // 2, 2], [n, h, w, 2]]
        shaped.reshape({port: ov.PartialShape(s) for port, s in zip(shaped.inputs, shapes)})
        with signal_stack.kept():  # see signal_stack: else a later SIGCHLD can be a SIGSEGV
            compiled = self.core.compile_model(shaped, "CPU", self.config)
        request = compiled.create_infer_request()
        self.compile_seconds += time.perf_counter() - started
        self.compiled[key] = request
        while len(self.compiled) > MAX_STATS_SHAPES:
            self.compiled.popitem(last=False)
        return request

    def run(
        self, batch: torch.Tensor, stats: np.ndarray | None, mix: np.ndarray | None,
        grids: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """StatsEngine.run_stats on these IRs (see engines/contract.py)."""
        import numpy as np
        import torch

        from animegan_cli.model.norm_stats import STATS_FIELDS, as_mix, as_stats

        x = to_model_input(torch.as_tensor(batch), torch.float32).numpy()
        n = len(x)
        fixed = stats is not None and mix is None  # tiles: statistics used as they are
        self._model(grids is not None, fixed)  # read (or converted) first: it says the layers
        if stats is None:
            supplied = np.zeros((n, self.layers, STATS_FIELDS), np.float32)
            blend = [np.zeros(n, np.float32)]
        else:
            supplied = as_stats(stats, n, self.layers)
            blend = [] if fixed else [as_mix(mix, n)]
        inputs = [x, supplied, *blend, *(grids or ())]
        result = self._request(tuple(x.shape), grids is not None, fixed).infer(inputs)
        y, used = (np.asarray(v) for v in result.values())
        return to_pixels(torch.from_numpy(y)), used.astype(np.float32)
