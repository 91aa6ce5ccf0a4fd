"""AnimeGANv2's own TensorFlow 1 checkpoints (Hayao, Shinkai, Paprika) as this project's
Generator state dict, read with ``tfbundle`` (no TensorFlow).

The variable names are those the original ``net/generator.py`` creates under
``generator/G_MODEL``: ``tf.contrib.layers.conv2d`` scopes ``Conv``, ``Conv_1``, ... and
``layer_norm`` scopes ``LayerNorm``, ``LayerNorm_1``, ... numbered within each block
(``A`` .. ``E``); the inverted residual blocks ``C/r1`` .. ``C/r4`` hold a pointwise
``Conv`` + ``LayerNorm``, the depthwise ``r<i>/w`` and ``r<i>/bias``, norms ``1`` and
``2`` and the linear ``Conv_1``; ``out_layer/Conv``. Conv kernels are HWIO (ours OIHW),
depthwise kernels H W C M (ours C*M, 1, H, W); norms hold ``gamma`` and ``beta``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from animegan_cli.model.originals import ORIGINALS
from animegan_cli.model.tfbundle import Bundle, BundleError, index_path

if TYPE_CHECKING:
    import numpy as np
    import torch

# Where the generator's variables live: under the training script's "generator" scope, or
# bare when a G_net was built outside it.
ROOT_SCOPES = ("generator/G_MODEL/", "G_MODEL/")
# Optimizer slots saved beside a variable in a training checkpoint: not weights.
SLOT_SUFFIXES = ("/Adam", "/Adam_1")
VARIANT = "tf1"  # generator.VARIANTS: the graph these checkpoints were trained in
_LATEST = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)
_SHARD_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def _numbered(base: str, n: int) -> str:
    """TF's unique scope names: ``Conv``, ``Conv_1``, ``Conv_2`` ..."""
    return base if n == 0 else f"{base}_{n}"


@functools.cache
def tf_names() -> dict[str, tuple[str, str]]:
    """Our state-dict key -> (the TF variable under the root scope, its layout kind)."""
    names: dict[str, tuple[str, str]] = {}

    def conv_norm(ours: str, conv: str, norm: str) -> None:
        names[f"{ours}.1.weight"] = (f"{conv}/weights", "conv")
        names[f"{ours}.2.weight"] = (f"{norm}/gamma", "vector")
        names[f"{ours}.2.bias"] = (f"{norm}/beta", "vector")

    for block, scope, count in (("block_a", "A", 3), ("block_b", "B", 2),
                                ("block_d", "D", 2), ("block_e", "E", 3)):
        for i in range(count):
            conv_norm(f"{block}.{i}", f"{scope}/{_numbered('Conv', i)}",
                      f"{scope}/{_numbered('LayerNorm', i)}")
    conv_norm("block_c.0", "C/Conv", "C/LayerNorm")
    conv_norm("block_c.5", "C/Conv_1", "C/LayerNorm_1")
    for r in range(1, 5):
        ours, scope = f"block_c.{r}.layers", f"C/r{r}"
        conv_norm(f"{ours}.0", f"{scope}/Conv", f"{scope}/LayerNorm")
        names[f"{ours}.1.1.weight"] = (f"{scope}/r{r}/w", "depthwise")
        names[f"{ours}.1.1.bias"] = (f"{scope}/r{r}/bias", "vector")
        names[f"{ours}.1.2.weight"] = (f"{scope}/1/gamma", "vector")
        names[f"{ours}.1.2.bias"] = (f"{scope}/1/beta", "vector")
        names[f"{ours}.2.weight"] = (f"{scope}/Conv_1/weights", "conv")
        names[f"{ours}.3.weight"] = (f"{scope}/2/gamma", "vector")
        names[f"{ours}.3.bias"] = (f"{scope}/2/beta", "vector")
    names["out_layer.0.weight"] = ("out_layer/Conv/weights", "conv")
    return names


def _tf_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The TF layout of one of our shapes: OIHW -> HWIO; (C*M, 1, H, W) -> (H, W, C*M, 1)."""
    if kind == "conv":
        o, i, h, w = shape
        return (h, w, i, o)
    if kind == "depthwise":
        c, m, h, w = shape
        return (h, w, c, m)
    return shape


def _to_ours(array: np.ndarray, kind: str) -> np.ndarray:
    """A TF kernel in our layout."""
    if kind == "conv":
        return array.transpose(3, 2, 0, 1)
    if kind == "depthwise":
        h, w, c, m = array.shape
        # depthwise_conv2d's output channel c * M + m is our group c's filter m.
        return array.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)
    return array


@functools.cache
def _our_shapes() -> dict[str, tuple[int, ...]]:
    from animegan_cli.model.generator import Generator

    return {key: tuple(value.shape) for key, value in Generator().state_dict().items()}


def find_prefix(path: Path) -> Path | None:
    """The checkpoint prefix a path names (a folder, ``PREFIX``, ``PREFIX.index``, its
    ``.meta`` graph or a data shard), or None when it is no TensorFlow checkpoint."""
    if path.is_dir():
        return _latest_in(path)
    if path.suffix in (".index", ".meta"):
        return path.with_suffix("")
    if _SHARD_SUFFIX.search(path.name):
        return path.with_name(_SHARD_SUFFIX.sub("", path.name))
    return path if index_path(path).is_file() else None


def _latest_in(folder: Path) -> Path:
    """The checkpoint a folder holds: the one its ``checkpoint`` file names, else its only one."""
    try:
        state = (folder / "checkpoint").read_text(errors="replace")
    except OSError:
        state = ""
    match = _LATEST.search(state)
    if match:
        # The path may be the training machine's: the file is expected beside it.
        named = folder / Path(match.group(1)).name
        if index_path(named).is_file():
            return named
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    if not indexes:
        raise BundleError(f"{folder} holds no TensorFlow checkpoint (no .index file)")
    listed = ", ".join(p.name for p in indexes)
    raise BundleError(f"{folder} holds several checkpoints ({listed}); name one, e.g. "
                      f"{indexes[-1].with_suffix('')}")


def guess_name(prefix: Path) -> str:
    """The name to store a checkpoint under: its style's, from the prefix or its folder."""
    for part in (prefix.name, prefix.parent.name):
        for original in ORIGINALS.values():
            if original.word.lower() in part.lower():
                return original.name
    return re.split(r"[-.]", prefix.name)[0].lower() or "tf_checkpoint"


def _root(bundle: Bundle) -> str:
    """The scope holding the generator, or a BundleError for a checkpoint of something else."""
    where = index_path(bundle.prefix)
    if bundle.is_object_based():
        raise BundleError(
            f"{where} is a TensorFlow 2 object-based checkpoint (tf.train.Checkpoint); only "
            "AnimeGANv2's TensorFlow 1 checkpoints (names like generator/G_MODEL/A/Conv/weights) "
            "can be imported")
    for root in ROOT_SCOPES:
        if any(name.startswith(root) for name in bundle.entries):
            return root
    some = ", ".join(sorted(bundle.entries)[:3]) or "no tensors"
    raise BundleError(f"{where} is not an AnimeGANv2 generator checkpoint: no generator/G_MODEL "
                      f"variables (it holds {some})")


def _check_names(bundle: Bundle, root: str) -> None:
    """Every generator variable there, none unknown, each of the exact shape."""
    held = {name for name in bundle.entries
            if name.startswith(root) and not name.endswith(SLOT_SUFFIXES)}
    wanted = {root + tf: (_tf_shape(_our_shapes()[key], kind))
              for key, (tf, kind) in tf_names().items()}
    problems = []
    missing = sorted(set(wanted) - held)
    unexpected = sorted(held - set(wanted))
    misshaped = [f"{name} {bundle.entries[name].shape} != {shape}"
                 for name, shape in wanted.items()
                 if name in held and bundle.entries[name].shape != shape]
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shapes", misshaped)):
        if items:
            rest = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{rest}")
    if problems:
        raise BundleError(f"{index_path(bundle.prefix)} is not an AnimeGANv2 generator "
                          f"checkpoint: {'; '.join(problems)}")


def read_generator(prefix: Path) -> dict[str, torch.Tensor]:
    """The generator's weights in a TF checkpoint as our state dict (float32), every
    tensor's crc32c checked; a BundleError naming the file for anything else."""
    import torch

    bundle = Bundle.open(prefix)
    root = _root(bundle)
    _check_names(bundle, root)
    arrays = bundle.read_all({root + tf for tf, _ in tf_names().values()})
    return {key: torch.from_numpy(_to_ours(arrays[root + tf], kind).copy())
            for key, (tf, kind) in tf_names().items()}
