"""The AnimeGANv2 generator: a tensor in [-1, 1] in, a tensor in [-1, 1] out."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from animegan_cli.core.limits import MIN_SIDE as MIN_SIDE  # defined where planning can read it
from animegan_cli.model.norm_stats import StatsGroupNorm
from animegan_cli.model.variants import DEFAULT_VARIANT, VARIANTS


def resize_asymmetric(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Bilinear resize sampling at ``dst * in / out``, the last row/column repeated: TF1's
    ``resize_bilinear(align_corners=False)``. With the input padded by one edge row/column,
    an align-corners resize to ``out + 1`` samples at exactly those points; it exports to
    OpenVINO and ONNX as ordinary pad, resize and slice."""
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    out = F.interpolate(padded, size=(size[0] + 1, size[1] + 1), mode="bilinear",
                        align_corners=True)
    return out[..., :-1, :-1]


class ConvNormLReLU(nn.Sequential):
    """Reflection pad -> conv (no bias unless asked) -> GroupNorm(1) -> LeakyReLU(0.2).

    The GroupNorms are StatsGroupNorm: nn.GroupNorm unless a pass supplies or asks for
    their statistics (model/norm_stats.py).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] | None = None,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        pad = kernel_size // 2 if padding is None else padding
        super().__init__(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=0, groups=groups, bias=bias),
            StatsGroupNorm(1, out_ch, affine=True, eps=1e-5),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """Inverted residual block with expansion 2; adds the input when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, expansion: int = 2) -> None:
        super().__init__()
        self.use_residual = in_ch == out_ch
        bottleneck = in_ch * expansion
        self.layers = nn.Sequential(
            ConvNormLReLU(in_ch, bottleneck, kernel_size=1, padding=0),
            ConvNormLReLU(bottleneck, bottleneck, groups=bottleneck, bias=True),
            nn.Conv2d(bottleneck, out_ch, kernel_size=1, bias=False),
            StatsGroupNorm(1, out_ch, affine=True, eps=1e-5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_residual else out


class Generator(nn.Module):
    """AnimeGANv2 generator; state-dict compatible with the published checkpoints.

    ``align_corners`` is an attribute rather than a forward argument so that an
    exported graph (OpenVINO, torch.compile) bakes the choice in; so is ``variant`` (a
    key of ``VARIANTS``: the graph the checkpoint was trained in).
    """

    def __init__(self, align_corners: bool = False, variant: str = DEFAULT_VARIANT) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.variant = variant
        # Set only during a tiled pass (model/norm_stats.py): (features, size, step) -> features.
        self.resample: Callable[[torch.Tensor, torch.Size, int], torch.Tensor] | None = None
        # The stride-2 convs pad only right and bottom, as the TensorFlow original did.
        down_pad = (0, 1, 0, 1)
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=down_pad),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(64, 128, stride=2, padding=down_pad),
            ConvNormLReLU(128, 128),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(128, 128), ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, kernel_size=1, bias=False), nn.Tanh())
        for norm in self.modules():
            if isinstance(norm, nn.GroupNorm):
                norm.eps = VARIANTS[variant].norm_eps

    def _resize(self, x: torch.Tensor, size: torch.Size, step: int) -> torch.Tensor:
        """The bilinear resize between blocks (``step`` 0, then 1), as the checkpoint's graph
        did it; a tile of a larger image samples where the whole image would
        (model/norm_stats.py sets ``resample`` for that pass)."""
        if self.resample is not None:
            return self.resample(x, size, step)
        if self.align_corners or VARIANTS[self.variant].half_pixel:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
        return resize_asymmetric(x, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Style a batch (N, 3, H, W) in [-1, 1]; returns the same shape in [-1, 1]."""
        full_size = x.shape[-2:]
        out = self.block_a(x)
        half_size = out.shape[-2:]
        out = self.block_b(out)
        out = self.block_c(out)
        out = self._resize(out, half_size, 0)
        out = self.block_d(out)
        out = self._resize(out, full_size, 1)
        out = self.block_e(out)
        return self.out_layer(out)
