"""CUT and FastCUT (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image
Translation"): one generator, one discriminator, and a patchwise contrastive loss (PatchNCE)
that keeps each output patch closer to the input patch at the same place than to the input's
other patches.

The generator is CycleGAN's ResNet generator (``model.Generator``) and its encoder is the first
half of it: features are taken from the RGB input, both downsampling convolutions and the first
and fifth residual blocks. A two-layer MLP per layer projects ``PATCHES`` sampled locations to
unit vectors; the loss is a cross entropy over (positive, negatives) similarities divided by
``TEMPERATURE``. The positive of an output patch is the input's patch at the same place (the
render is the anchor); its negatives are the input's other sampled patches of the same image.
CUT adds the same loss between a real photo and the generator's output for it (identity NCE);
FastCUT drops that and weights the NCE loss 10. The discriminator is the PatchGAN with LSGAN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import autocast
from .model import Discriminator, Generator, RefinerConfig
from .train import TrainOptions, _lsgan

PATCHES = 256  # sampled locations per layer and image
TEMPERATURE = 0.07
HEAD_WIDTH = 256  # the projection MLP's hidden and output width
FEATURE_BLOCKS = (1, 5)  # residual blocks whose output is an NCE layer (the fifth, or the last one when there are fewer)


def encoder_taps(config: RefinerConfig) -> tuple[list[int], list[int]]:
    """Indices into ``Generator.body`` after which features are taken (the RGB input comes
    first, without an index), and the channel count of every NCE layer, the RGB input included."""
    c = config.channels
    # body: pad, conv7, norm, relu (0-3), down1 conv, norm, relu (4-6), down2 (7-9), residual blocks (10 ...)
    blocks = sorted({10 + min(b, config.blocks) - 1 for b in FEATURE_BLOCKS})
    return [6, 9, *blocks], [3, 2 * c, 4 * c, *[4 * c] * len(blocks)]


class ProjectionHead(nn.Module):
    """The MLP of one NCE layer: Linear, ReLU, Linear, then unit length."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(channels, HEAD_WIDTH), nn.ReLU(True), nn.Linear(HEAD_WIDTH, HEAD_WIDTH))

    def forward(self, patches: Tensor) -> Tensor:
        """N x P x C features -> N x P x HEAD_WIDTH unit vectors."""
        return F.normalize(self.body(patches), dim=-1)


class CutModels(nn.Module):
    """CUT's networks: the refining generator ``to_real``, its projection ``heads`` and the
    discriminator ``judge_real``. Only ``to_real`` is needed to apply a checkpoint."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        if config.gbuffer or config.residual:
            raise ValueError("CUT uses CycleGAN's generator: RGB in, image out (RefinerConfig.reference())")
        self.config = config
        self.taps, channels = encoder_taps(config)
        self.to_real = Generator(config, gbuffer=False)
        self.heads = nn.ModuleList(ProjectionHead(c) for c in channels)
        self.judge_real = Discriminator(config)

    def encode(self, rgb: Tensor) -> list[Tensor]:
        """The NCE layers' features of ``rgb`` (N x 3 x H x W in [-1, 1]) through the generator's encoder."""
        features, x = [rgb], rgb
        for index, layer in enumerate(self.to_real.body[:self.taps[-1] + 1]):
            x = layer(x)
            if index in self.taps:
                features.append(x)
        return features

    def patch_nce(self, source: Tensor, output: Tensor, rng: np.random.Generator) -> Tensor:
        """PatchNCE between ``source`` images and the generator's ``output`` for them, averaged
        over the layers: per layer the same ``PATCHES`` random locations (from ``rng``) in both."""
        total = source.new_zeros((), dtype=torch.float32)
        keys, queries = self.encode(source), self.encode(output)
        for head, key, query in zip(self.heads, keys, queries):
            locations = key.shape[2] * key.shape[3]
            chosen = torch.from_numpy(rng.permutation(locations)[:PATCHES]).to(key.device)
            k = head(_patches(key, chosen).float()).detach()  # the render's patches: targets, not trained through
            q = head(_patches(query, chosen).float())
            total = total + nce_loss(q, k)
        return total / len(self.heads)


def _patches(features: Tensor, chosen: Tensor) -> Tensor:
    """N x C x H x W features at flat locations ``chosen`` -> N x P x C."""
    return features.flatten(2)[:, :, chosen].transpose(1, 2)


def nce_loss(query: Tensor, key: Tensor) -> Tensor:
    """InfoNCE of N x P x D unit vectors: query ``i`` against key ``i`` (positive) and the other
    keys of the same image (negatives), at ``TEMPERATURE``; mean over images and patches."""
    positive = (query * key).sum(-1, keepdim=True)
    negative = query @ key.transpose(1, 2)
    itself = torch.eye(key.shape[1], dtype=torch.bool, device=key.device)
    negative = negative.masked_fill(itself, float("-inf"))  # the positive is not its own negative
    logits = torch.cat([positive, negative], dim=-1) / TEMPERATURE
    target = torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.flatten(0, 1), target)


def train_step(models: CutModels, options: TrainOptions, x: Tensor, a: Tensor, y: Tensor, pools: dict,
               rng: np.random.Generator, optimise_g: torch.optim.Optimizer, optimise_d: torch.optim.Optimizer,
               device: torch.device, extra_g: dict[str, tuple[float, Callable[[], Tensor]]] | None = None) -> dict[str, Tensor]:
    """One CUT update (``train.train_step``'s signature; no image pool, no G-buffer): the
    discriminator on photos against fresh fakes (LSGAN), then the generator and the heads on
    LSGAN + ``options.nce_weight`` x PatchNCE (with identity NCE on the photos when
    ``options.nce_identity``: the mean of both). ``extra_g``: more weighted generator terms."""
    generator, judge = models.to_real, models.judge_real
    amp = options.mixed_precision
    with autocast(device, amp):
        both = generator(torch.cat([x, y]) if options.nce_identity else x)
    fake = both[:x.shape[0]]

    judge.requires_grad_(True)
    with autocast(device, amp):
        loss_d = 0.5 * (_lsgan(judge(y), 1) + _lsgan(judge(fake.detach()), 0))
    optimise_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimise_d.step()

    judge.requires_grad_(False)
    with autocast(device, amp):
        adversarial = _lsgan(judge(fake), 1)
        nce = models.patch_nce(x, fake, rng)
        losses = {"adversarial": adversarial, "nce": nce}
        if options.nce_identity:
            losses["nce_identity"] = models.patch_nce(y, both[x.shape[0]:], rng)
            nce = 0.5 * (nce + losses["nce_identity"])
        loss_g = adversarial + options.nce_weight * nce
        for name, (weight, term) in (extra_g or {}).items():
            losses[name] = term()
            loss_g = loss_g + weight * losses[name]
    optimise_g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimise_g.step()
    judge.requires_grad_(True)
    return {**{k: v.detach() for k, v in losses.items()}, "discriminators": loss_d.detach()}
