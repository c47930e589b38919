"""PatchNCE (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation"),
shared by CUT (refine/cut.py) and the SceneForge refiner's optional contrastive term
(``TrainOptions.nce_weight``, docs/refiner.md).

A generator's own encoder (the first half of ``model.Generator``) embeds the source image and the
generator's output for it: features are taken from the RGB input, both downsampling convolutions
and the first and fifth residual blocks. A two-layer MLP per layer projects ``PATCHES`` sampled
locations to unit vectors; the loss is a cross entropy over (positive, negatives) similarities
divided by ``TEMPERATURE``. The positive of an output patch is the source's patch at the same
place (the render is the anchor); its negatives are the source's other sampled patches of the
same image. With a boundary map, a share of the locations is drawn from the pixels near an
instance boundary, so that the constraint falls where the labels live.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import GBUFFER_CHANNELS, Generator, RefinerConfig

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


def projection_heads(config: RefinerConfig) -> nn.ModuleList:
    """One ``ProjectionHead`` per NCE layer of a generator of ``config``."""
    return nn.ModuleList(ProjectionHead(c) for c in encoder_taps(config)[1])


def encode(generator: Generator, rgb: Tensor) -> list[Tensor]:
    """The NCE layers' features of ``rgb`` (N x 3 x H x W in [-1, 1]) through ``generator``'s
    encoder; a G-buffer generator sees the image as it sees a photo (zeros, flag 0), so a render
    and its refinement are compared on their pixels alone."""
    taps = encoder_taps(generator.config)[0]
    x = rgb
    if generator.gbuffer:
        x = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], GBUFFER_CHANNELS, *rgb.shape[2:])], dim=1)
    features = [rgb]
    for index, layer in enumerate(generator.body[:taps[-1] + 1]):
        x = layer(x)
        if index in taps:
            features.append(x)
    return features


def patch_nce(generator: Generator, heads: nn.ModuleList, source: Tensor, output: Tensor, rng: np.random.Generator,
              boundary: Tensor | None = None, boundary_share: float = 0.0) -> Tensor:
    """PatchNCE between ``source`` images and ``generator``'s ``output`` for them, averaged over
    the layers: per layer the same ``PATCHES`` random locations (from ``rng``) in both. Without
    ``boundary`` (N x 1 x H x W, > 0 near an instance boundary) or with ``boundary_share`` 0 the
    locations are uniform and shared by the batch (CUT); otherwise each image draws
    ``boundary_share`` of them from its boundary pixels (at the layer's resolution) and the rest
    from its other pixels."""
    total = source.new_zeros((), dtype=torch.float32)
    keys, queries = encode(generator, source), encode(generator, output)
    for head, key, query in zip(heads, keys, queries):
        if boundary is None or boundary_share <= 0:
            chosen = torch.from_numpy(rng.permutation(key.shape[2] * key.shape[3])[:PATCHES]).to(key.device)
            chosen = chosen.expand(key.shape[0], -1)
        else:
            near = F.adaptive_max_pool2d(boundary.float(), key.shape[2:]).flatten(1) > 0
            chosen = torch.from_numpy(_boundary_locations(near.cpu().numpy(), boundary_share, rng)).to(key.device)
        k = head(_patches(key, chosen).float()).detach()  # the source's patches: targets, not trained through
        q = head(_patches(query, chosen).float())
        total = total + nce_loss(q, k)
    return total / len(heads)


def _boundary_locations(near: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """N x P flat locations, P = min(PATCHES, locations): per image ``share`` of P from the
    locations where ``near`` (N x L) holds (all of them if fewer), the rest from the others."""
    count = min(PATCHES, near.shape[1])
    rows = []
    for mask in near:
        inside, outside = rng.permutation(np.flatnonzero(mask)), rng.permutation(np.flatnonzero(~mask))
        take = min(len(inside), round(share * count))
        rows.append(np.concatenate([inside[:take], outside[:count - take], inside[take:]])[:count])
    return np.stack(rows)


def _patches(features: Tensor, chosen: Tensor) -> Tensor:
    """N x C x H x W features at flat locations ``chosen`` (N x P) -> N x P x C."""
    flat = features.flatten(2)
    return flat.gather(2, chosen[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


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
