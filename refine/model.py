"""The refiner's networks: a CycleGAN ResNet generator and a PatchGAN discriminator.

Two configurations matter (docs/refiner.md): ``RefinerConfig.reference()`` is CycleGAN as
published (instance norm, RGB in, image out); the default adds what keeps labels valid: the
renderer's G-buffer (inverse depth, normals, instance boundaries) as extra generator inputs, a
residual output that starts as the identity, and a per-pixel norm that makes tiled inference
seamless and works with channels_last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GBUFFER_CHANNELS = 6  # inverse depth 1, normals 3, instance boundary 1, "G-buffer present" flag 1


@dataclass(frozen=True)
class RefinerConfig:
    """The architecture; saved in every checkpoint so that a checkpoint rebuilds its own model."""

    channels: int = 64  # generator width (CycleGAN: 64)
    blocks: int = 9  # residual blocks (CycleGAN: 9 for 256 px)
    disc_channels: int = 64
    norm: Literal["instance", "pixel"] = "pixel"
    gbuffer: bool = True
    residual: bool = True

    @classmethod
    def reference(cls) -> RefinerConfig:
        """CycleGAN's published generator and discriminator."""
        return cls(norm="instance", gbuffer=False, residual=False)

    @property
    def channels_last(self) -> bool:
        """Whether to run in channels_last memory: much faster with the per-pixel norm (one fused
        layer norm), much slower with instance norm (pytorch #72341), on the CPU and on GPUs."""
        return self.norm == "pixel"

    def to_dict(self) -> dict:
        """Plain values for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RefinerConfig:
        """The inverse of ``to_dict``; unknown or missing keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        if set(values) != names:
            raise ValueError(f"architecture fields {sorted(values)} differ from {sorted(names)}")
        return cls(**values)


class PixelNorm(nn.Module):
    """Layer norm over the channels of each pixel: no statistics across pixels, so a tile is
    normalised exactly as in the whole image (instance norm is not, and seams appear). On a
    channels_last tensor the permuted view is contiguous, and this is one fused kernel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        normalised = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, eps=1e-5)
        return normalised.permute(0, 3, 1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    return PixelNorm(channels) if kind == "pixel" else nn.InstanceNorm2d(channels)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """ResNet generator (c7s1-64, d128, d256, R256 x blocks, u128, u64, c7s1-3).

    Images are in [-1, 1]. With ``gbuffer`` the input also takes ``GBUFFER_CHANNELS`` channels
    (zeros and a zero flag for real photos, which have none). With ``residual`` the network
    predicts a change added to the input in tanh's argument space, and starts as the identity.
    """

    def __init__(self, config: RefinerConfig, gbuffer: bool) -> None:
        super().__init__()
        c, norm = config.channels, config.norm
        self.config = config
        self.gbuffer = gbuffer
        self.residual = config.residual
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(3 + (GBUFFER_CHANNELS if gbuffer else 0), c, 7), _norm(norm, c), nn.ReLU(True),
        ]
        for k in (1, 2):
            layers += [nn.Conv2d(c * k, c * 2 * k, 3, stride=2, padding=1), _norm(norm, c * 2 * k), nn.ReLU(True)]
        layers += [_ResidualBlock(c * 4, norm) for _ in range(config.blocks)]
        for k in (4, 2):
            layers += [
                nn.ConvTranspose2d(c * k, c * k // 2, 3, stride=2, padding=1, output_padding=1),
                _norm(norm, c * k // 2), nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7)]
        self.body = nn.Sequential(*layers)
        if self.residual:  # start as the identity: refinement only ever adds to the render
            nn.init.zeros_(self.output_layer.weight)
            nn.init.zeros_(self.output_layer.bias)

    @property
    def output_layer(self) -> nn.Conv2d:
        """The last convolution (zero at the start of a residual generator)."""
        return self.body[-1]

    def forward(self, rgb: Tensor, gbuffer: Tensor | None = None) -> Tensor:
        """``rgb`` N x 3 x H x W in [-1, 1] (H, W multiples of 4); ``gbuffer`` N x 6 x H x W or None."""
        x = rgb
        if self.gbuffer:
            if gbuffer is None:
                gbuffer = rgb.new_zeros(rgb.shape[0], GBUFFER_CHANNELS, *rgb.shape[2:])
            x = torch.cat([rgb, gbuffer], dim=1)
        h = self.body(x)
        if self.residual:
            return torch.tanh(torch.atanh(rgb.clamp(-0.999, 0.999)) + h)
        return torch.tanh(h)


class Discriminator(nn.Module):
    """70 x 70 PatchGAN (C64-C128-C256-C512, one logit per patch); LSGAN targets 1 real, 0 fake."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        c, norm = config.disc_channels, config.norm
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for k_in, k_out, stride in ((1, 2, 2), (2, 4, 2), (4, 8, 1)):
            layers += [nn.Conv2d(c * k_in, c * k_out, 4, stride=stride, padding=1), _norm(norm, c * k_out), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(c * 8, 1, 4, stride=1, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, rgb: Tensor) -> Tensor:
        """Patch scores for N x 3 x H x W images in [-1, 1]."""
        return self.body(rgb)


class CycleModels(nn.Module):
    """The four networks of a CycleGAN: ``to_real`` (the refiner), ``to_synthetic``, and a
    discriminator per domain, and with the refiner's PatchNCE term its projection ``heads``
    (refine/patchnce.py). Only ``to_real`` is needed to apply a checkpoint."""

    def __init__(self, config: RefinerConfig, heads: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.config = config
        self.to_real = Generator(config, gbuffer=config.gbuffer)
        self.to_synthetic = Generator(config, gbuffer=False)
        self.judge_real = Discriminator(config)
        self.judge_synthetic = Discriminator(config)
        if heads is not None:
            self.heads = heads
