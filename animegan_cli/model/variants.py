"""Generator variants: how a lineage of checkpoints was trained to run (torch-free, so that
planning and the engines' warm-up can name them without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """The graph's details that differ between lineages of checkpoints."""

    half_pixel: bool  # bilinear resize with half-pixel centres (PyTorch) or without (TF1)
    norm_eps: float  # added to the variance by each norm (GroupNorm(1) / LayerNorm)


# "torch": the PyTorch port's graph (the published styles; today's pixels). "tf1":
# AnimeGANv2's own TensorFlow 1 graph: tf.image.resize_images samples at dst * in / out (no
# half-pixel centres), and tf.contrib's layer_norm (over H, W and C of each image, as our
# GroupNorm(1), with per-channel gamma and beta) adds 1e-12, not 1e-5. The padding is the
# same in both (reflect; the stride-2 convs pad only right and bottom).
VARIANTS = {
    "torch": Variant(half_pixel=True, norm_eps=1e-5),
    "tf1": Variant(half_pixel=False, norm_eps=1e-12),
}
DEFAULT_VARIANT = "torch"


def variant_tag(variant: str) -> str:
    """What a cached converted model's name adds for a variant ("" for the default, so the
    names of models cached before variants existed still hold)."""
    return "" if variant == DEFAULT_VARIANT else f"-{variant}"
