"""Measures of how real a refined image set looks and whether its labels still hold.

None of them needs downloaded weights except FID/KID, which run only on an Inception file the
user supplies. Meaning, units and defaults of every number: docs/refiner.md.

- ``sliced_wasserstein``: multi-scale sliced Wasserstein distance between 7x7 neighbourhoods of
  the Laplacian pyramids of two image sets (Karras et al. 2018), per level.
- ``two_sample_accuracy``: held-out accuracy of a small CNN trained from scratch to tell the two
  sets apart (0.5 = indistinguishable).
- ``edge_agreement``, ``label_validity``: do image edges still follow the instance boundaries, and
  is the luminance structure of the render kept?
- ``frechet_distance``, ``kernel_distance``: FID and KID on features; ``frechet_and_kernel_distance``
  computes them with the FID Inception network from a user's safetensors file.

Images are float tensors N x 3 x H x W in [0, 1], on any device; large sets are processed in
chunks of CHUNK images. Every random choice comes from a ``torch.Generator`` seeded by the
``seed`` argument: the same inputs and seed give the same number (on a GPU, up to the
nondeterminism of its convolutions in the two-sample training).
"""

from __future__ import annotations

from pathlib import Path

import kornia
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import instance_boundaries

PATCH = 7  # neighbourhood size of the SWD descriptors, as in Karras et al. 2018
CHUNK = 64  # images per pyramid batch and per Inception batch: bounds the memory of large sets
MAX_WEIGHTS_BYTES = 512 << 20  # the FID Inception weights are 92 MB as float32


# --- sliced Wasserstein distance ---------------------------------------------------------------

def sliced_wasserstein(
    a: Tensor, b: Tensor, *, levels: int = 4, patches_per_image: int = 128, projections: int = 512, seed: int = 0,
) -> list[float]:
    """Sliced Wasserstein distance x 1e3 per Laplacian level, finest first (the last is the low-pass image).

    ``a`` and ``b`` may differ in image count and size. Both sets' descriptors are normalised per
    colour channel with the statistics of the two sets pooled with equal weight, so global colour and
    contrast shifts count (the paper normalises each set by its own statistics, which hides them).
    """
    generator = torch.Generator().manual_seed(seed)
    descriptors_a = _pyramid_descriptors(a, levels, patches_per_image, generator)
    descriptors_b = _pyramid_descriptors(b, levels, patches_per_image, generator)
    distances = []
    for da, db in zip(descriptors_a, descriptors_b):
        da, db = _normalise_pooled(da, db)
        distances.append(1e3 * _sliced_w1(da, db, projections, generator))
    return distances


def _pyramid_descriptors(images: Tensor, levels: int, per_image: int, generator: torch.Generator) -> list[Tensor]:
    """Random 7x7x3 neighbourhoods of every Laplacian level: one (N * per_image) x 3 x 7 x 7 tensor per level."""
    _check_images(images, "images")
    if levels < 1:
        raise ValueError(f"SWD: levels must be at least 1, got {levels}")
    stride = 1 << (levels - 1)
    height, width = (side - side % stride for side in images.shape[-2:])  # even sizes on every level
    if min(height, width) // stride < PATCH:
        raise UserError(f"images of {images.shape[-2]}x{images.shape[-1]} px are too small for {levels} pyramid "
                        f"levels with {PATCH}x{PATCH} patches: the short side needs {PATCH * stride} px")
    per_level: list[list[Tensor]] = [[] for _ in range(levels)]
    with torch.no_grad():
        for chunk in images[..., :height, :width].split(CHUNK):
            for level, band in enumerate(_laplacian_pyramid(chunk.float(), levels)):
                index = torch.arange(len(band)).repeat_interleave(per_image)
                per_level[level].append(_random_crops(band, index, PATCH, generator))
    return [torch.cat(parts) for parts in per_level]


def _laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:
    # kornia's build_laplacian_pyramid reflect-pads any size that is not a power of two up to the
    # next one (up to 4x the pixels); the caller crops to a multiple of 2^(levels-1) instead.
    bands, gaussian = [], images
    for _ in range(levels - 1):
        smaller = kornia.geometry.transform.pyrdown(gaussian)
        bands.append(gaussian - kornia.geometry.transform.pyrup(smaller))
        gaussian = smaller
    return [*bands, gaussian]


def _normalise_pooled(da: Tensor, db: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten descriptors after normalising each channel by the equal-weight mixture of both sets."""
    mean_a, mean_b = (d.mean(dim=(0, 2, 3), keepdim=True) for d in (da, db))
    var_a, var_b = (d.var(dim=(0, 2, 3), keepdim=True, unbiased=False) for d in (da, db))
    mean = (mean_a + mean_b) / 2
    std = ((var_a + var_b) / 2 + ((mean_a - mean_b) / 2) ** 2).sqrt().clamp_min(1e-8)
    return ((da - mean) / std).flatten(1), ((db - mean) / std).flatten(1)


def _sliced_w1(da: Tensor, db: Tensor, projections: int, generator: torch.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projected samples."""
    directions = torch.randn(da.shape[1], projections, generator=generator).to(da.device)
    directions /= directions.norm(dim=0, keepdim=True)
    # Compare quantiles on a common grid, so the two sets may hold different numbers of samples.
    count = max(len(da), len(db))
    grid = (torch.arange(count, device=da.device) + 0.5) / count
    pick_a, pick_b = (grid * len(da)).long(), (grid * len(db)).long()
    total = 0.0
    for block in directions.split(128, dim=1):  # bounds the sorted copies to N x 128
        sorted_a = (da @ block).sort(dim=0).values[pick_a]
        sorted_b = (db @ block).sort(dim=0).values[pick_b]
        total += (sorted_a - sorted_b).abs().mean(dim=0).sum().item()
    return total / projections


def _random_crops(images: Tensor, index: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """One size x size crop of ``images[i]`` for each ``i`` in ``index``, at a random position."""
    height, width = images.shape[-2:]
    top = (torch.rand(len(index), generator=generator) * (height - size + 1)).long()
    left = (torch.rand(len(index), generator=generator) * (width - size + 1)).long()
    steps = torch.arange(size)
    rows = (top[:, None] + steps)[:, :, None]
    cols = (left[:, None] + steps)[:, None, :]
    device = images.device
    pixels = images.permute(0, 2, 3, 1)[index[:, None, None].to(device), rows.to(device), cols.to(device)]
    return pixels.permute(0, 3, 1, 2)


# --- classifier two-sample test ----------------------------------------------------------------

def two_sample_accuracy(
    a: Tensor, b: Tensor, *, steps: int = 300, crop: int = 64, batch_size: int = 32, eval_crops: int = 8, seed: int = 0,
) -> float:
    """Balanced held-out accuracy of a small CNN trained from scratch to tell ``a`` from ``b``.

    Each set is split in half at random; the CNN trains on random ``crop`` x ``crop`` crops of the
    first halves (same crop size for both sets, so image size tells nothing) and classifies each
    held-out image by its mean probability over ``eval_crops`` crops. About 0.5 means the sets
    look alike at this scale; near 1.0 means they are easy to tell apart.
    """
    for name, images in (("a", a), ("b", b)):
        _check_images(images, name)
        if len(images) < 4:
            raise UserError(f"two-sample test: set {name} has {len(images)} images; "
                            "it needs at least 4 (half to train, half to test)")
    generator = torch.Generator().manual_seed(seed)
    crop = min(crop, *a.shape[-2:], *b.shape[-2:])
    train, test = zip(*(_halves(images, generator) for images in (a, b)))
    model = _two_sample_cnn(generator).to(a.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    half = batch_size // 2
    labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(a.device)
    with torch.enable_grad():
        for _ in range(steps):
            picks = [torch.randint(len(images), (half,), generator=generator) for images in train]
            batch = torch.cat([_random_crops(images, pick, crop, generator) for images, pick in zip(train, picks)])
            loss = F.binary_cross_entropy_with_logits(model(batch.float()).squeeze(1), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    correct = []
    with torch.no_grad():
        for label, images in enumerate(test):
            index = torch.arange(len(images)).repeat_interleave(eval_crops)
            logits = torch.cat([model(c.float()) for c in _random_crops(images, index, crop, generator).split(256)])
            probability = torch.sigmoid(logits).view(len(images), eval_crops).mean(dim=1)
            correct.append(((probability > 0.5) == bool(label)).float().mean().item())
    return sum(correct) / 2


def _halves(images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    order = torch.randperm(len(images), generator=generator).to(images.device)
    return images[order[: len(images) // 2]], images[order[len(images) // 2:]]


def _two_sample_cnn(generator: torch.Generator) -> nn.Module:
    """Three strided convolutions and a global average: sees colour, noise and texture, not layout."""
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 1),
    )
    for layer in model:
        if isinstance(layer, nn.Conv2d | nn.Linear):  # re-initialised from the seed, not the global RNG
            nn.init.kaiming_uniform_(layer.weight, a=0.2, generator=generator)
            nn.init.zeros_(layer.bias)
    return model


# --- label validity ------------------------------------------------------------------------------

def edge_agreement(rgb: Tensor, instance: Tensor) -> float:
    """Fraction of instance-boundary pixels within 1 px of a Canny edge of the image's luminance.

    ``instance``: N x H x W integer ids (0 = background). Boundary pixels are those with a
    4-neighbour of another id, on both sides of the boundary. Canny uses kornia's defaults
    (5x5 Gaussian, sigma 1, thresholds 0.1 and 0.2 on the unnormalised Sobel magnitude: a
    luminance step of about 0.08 is a strong edge).
    """
    _check_images(rgb, "rgb")
    if instance.shape != (rgb.shape[0], *rgb.shape[-2:]):
        raise ValueError(f"instance maps of shape {tuple(instance.shape)} do not match "
                         f"images of shape {tuple(rgb.shape)}")
    matched = boundaries = 0
    with torch.no_grad():
        for images, ids in zip(rgb.split(CHUNK), instance.split(CHUNK)):
            boundary = torch.from_numpy(instance_boundaries(ids.cpu().numpy())).to(ids.device)
            edges = kornia.filters.canny(images.float())[1]
            near_edge = F.max_pool2d(edges, 3, stride=1, padding=1).squeeze(1).to(boundary.device) > 0
            matched += (near_edge & boundary).sum().item()
            boundaries += boundary.sum().item()
    if not boundaries:
        raise UserError("edge agreement: the instance maps have no boundaries (a single id everywhere)")
    return matched / boundaries


def structure_ssim(raw: Tensor, refined: Tensor) -> float:
    """Mean SSIM structure term (local correlation of luminance, 11x11 Gaussian window, sigma 1.5).

    Only the structure term of Wang et al. 2004, ``(cov + C3) / (std_raw * std_refined + C3)``
    with ``C3 = 0.03**2 / 2``: it ignores local brightness and contrast changes (what a refiner
    should be free to alter) and drops when edges blur, move or vanish.
    """
    _check_images(raw, "raw")
    if raw.shape != refined.shape:
        raise ValueError(f"raw images {tuple(raw.shape)} and refined images {tuple(refined.shape)} differ in shape")
    with torch.no_grad():
        total = sum(_structure_map(x, y).sum().item() for x, y in zip(raw.split(CHUNK), refined.split(CHUNK)))
    return total / (len(raw) * raw.shape[-2] * raw.shape[-1])


def _structure_map(raw: Tensor, refined: Tensor) -> Tensor:
    c3 = 0.03**2 / 2
    x, y = (kornia.color.rgb_to_grayscale(images.float()) for images in (raw, refined))
    mean_x, mean_y = _local_mean(x), _local_mean(y)
    var_x = (_local_mean(x * x) - mean_x**2).clamp_min(0)
    var_y = (_local_mean(y * y) - mean_y**2).clamp_min(0)
    covariance = _local_mean(x * y) - mean_x * mean_y
    return (covariance + c3) / ((var_x * var_y).sqrt() + c3)


def _local_mean(images: Tensor) -> Tensor:
    return kornia.filters.gaussian_blur2d(images, 11, (1.5, 1.5))  # SSIM's window


def label_validity(raw: Tensor, refined: Tensor, instance: Tensor) -> dict[str, float]:
    """Edge agreement of the render and of its refinement with the instance boundaries, and structure SSIM.

    ``edge_agreement_ratio`` is refined / raw (1.0: the refined edges follow the labels as well as
    the render's; NaN when the render has no edge on any boundary).
    """
    raw_agreement = edge_agreement(raw, instance)
    refined_agreement = edge_agreement(refined, instance)
    return {
        "edge_agreement_raw": raw_agreement,
        "edge_agreement_refined": refined_agreement,
        "edge_agreement_ratio": refined_agreement / raw_agreement if raw_agreement > 0 else float("nan"),
        "structure_ssim": structure_ssim(raw, refined),
    }


LOWPASS_SIGMA = 1.5  # px: removes sensor noise, a lens blur and fine texture, keeps object outlines
BOUNDARY_BAND = 2  # px either side of an instance boundary


def lowpass_luminance(images: Tensor, sigma: float = LOWPASS_SIGMA) -> Tensor:
    """Luminance (N x 1 x H x W) blurred with a Gaussian of ``sigma`` px: the band-limited image in
    which object outlines are compared, blind to the noise, blur and texture a sensor adds."""
    size = 2 * int(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(kornia.color.rgb_to_grayscale(images), size, (sigma, sigma))


def contrast_structure_map(x: Tensor, y: Tensor) -> Tensor:
    """SSIM without its luminance term, ``(2 cov + C2) / (var_x + var_y + C2)``, per pixel (11 x 11
    Gaussian window, sigma 1.5, ``C2 = 0.03**2``): 1 where ``y`` has ``x``'s local structure at a
    similar contrast; it falls when an edge moves or is erased (which the structure term alone,
    ``structure_ssim``, misses: a flat patch correlates with anything) or appears in a flat region."""
    c2 = 0.03**2
    mean_x, mean_y = _local_mean(x), _local_mean(y)
    var_x = (_local_mean(x * x) - mean_x**2).clamp_min(0)
    var_y = (_local_mean(y * y) - mean_y**2).clamp_min(0)
    covariance = _local_mean(x * y) - mean_x * mean_y
    return (2 * covariance + c2) / (var_x + var_y + c2)


def boundary_band(instance: Tensor, radius: int = BOUNDARY_BAND) -> Tensor:
    """N x H x W bool: pixels within ``radius`` px (chessboard) of an instance boundary."""
    boundary = torch.from_numpy(instance_boundaries(instance.cpu().numpy())).to(instance.device)
    return F.max_pool2d(boundary[:, None].float(), 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0


def boundary_structure(raw: Tensor, refined: Tensor, instance: Tensor, *, sigma: float = LOWPASS_SIGMA) -> dict[str, float]:
    """Whether object outlines stayed put, measured apart from fine-scale change: on the low-passed
    luminance (``lowpass_luminance``), so the noise, blur and texture a refiner may add everywhere
    do not count.

    - ``boundary_edge_recall``: of the render's low-pass Canny edge pixels in the boundary band
      (``boundary_band``), the share with a refined low-pass edge within 1 px (edges erased or moved);
    - ``boundary_edge_precision``: of the refined image's low-pass edge pixels in the band, the
      share within 1 px of a render edge (edges added or moved);
    - ``boundary_cs`` / ``interior_cs``: mean ``contrast_structure_map`` of the low-passed
      luminances in the band / everywhere else (informative: the interior may change).
    """
    _check_images(raw, "raw")
    if raw.shape != refined.shape or instance.shape != (raw.shape[0], *raw.shape[-2:]):
        raise ValueError(f"shapes differ: raw {tuple(raw.shape)}, refined {tuple(refined.shape)}, "
                         f"instance {tuple(instance.shape)}")
    sums = dict.fromkeys(("recalled", "edges_raw", "precise", "edges_refined", "cs_band", "band", "cs_rest", "rest"), 0.0)
    with torch.no_grad():
        for x, y, ids in zip(raw.split(CHUNK), refined.split(CHUNK), instance.split(CHUNK)):
            band = boundary_band(ids).to(x.device)
            low_x, low_y = lowpass_luminance(x.float(), sigma), lowpass_luminance(y.float(), sigma)
            edges_x, edges_y = (kornia.filters.canny(low)[1][:, 0] > 0 for low in (low_x, low_y))
            near_x, near_y = (F.max_pool2d(e[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0 for e in (edges_x, edges_y))
            cs = contrast_structure_map(low_x, low_y)[:, 0]
            sums["recalled"] += (edges_x & band & near_y).sum().item()
            sums["edges_raw"] += (edges_x & band).sum().item()
            sums["precise"] += (edges_y & band & near_x).sum().item()
            sums["edges_refined"] += (edges_y & band).sum().item()
            sums["cs_band"] += cs[band].sum().item()
            sums["band"] += band.sum().item()
            sums["cs_rest"] += cs[~band].sum().item()
            sums["rest"] += (~band).sum().item()
    ratio = lambda a, b: sums[a] / sums[b] if sums[b] else float("nan")  # noqa: E731
    return {"boundary_edge_recall": ratio("recalled", "edges_raw"),
            "boundary_edge_precision": ratio("precise", "edges_refined"),
            "boundary_cs": ratio("cs_band", "band"), "interior_cs": ratio("cs_rest", "rest")}


# --- FID and KID ---------------------------------------------------------------------------------

def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x D each), in float64.

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``. With ``R`` the
    triangular factor of the centred features (``R^T R = S``), the last trace is the nuclear norm of
    ``R_a R_b^T``: no matrix square root, exact for singular covariances (fewer samples than
    dimensions), and a min(N, D)-sized problem.
    """
    fa, fb = features_a.double(), features_b.to(features_a.device).double()
    for name, f in (("a", fa), ("b", fb)):
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"Fréchet distance: features {name} must be N x D with N >= 2, got {tuple(f.shape)}")
    root_a, root_b = (torch.linalg.qr(f - f.mean(dim=0), mode="r").R / (len(f) - 1) ** 0.5 for f in (fa, fb))
    cross = torch.linalg.matrix_norm(root_a @ root_b.T, ord="nuc")
    mean_term = (fa.mean(dim=0) - fb.mean(dim=0)).square().sum()
    return (mean_term + root_a.square().sum() + root_b.square().sum() - 2 * cross).item()


def kernel_distance(features_a: Tensor, features_b: Tensor, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``, averaged over random subsets.

    Each subset draws ``min(subset_size, N_a, N_b)`` samples without replacement from each set
    (Binkowski et al. 2018). The estimate is unbiased: about 0 (possibly negative) for one distribution.
    """
    fa, fb = features_a.double(), features_b.to(features_a.device).double()
    size = min(subset_size, len(fa), len(fb))
    if size < 2:
        raise ValueError("kernel distance: each feature set needs at least 2 samples")
    generator = torch.Generator().manual_seed(seed)
    dimension = fa.shape[1]
    estimates = []
    for _ in range(subsets):
        x = fa[torch.randperm(len(fa), generator=generator)[:size].to(fa.device)]
        y = fb[torch.randperm(len(fb), generator=generator)[:size].to(fb.device)]
        k_xx, k_yy, k_xy = ((p @ q.T / dimension + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (size * (size - 1))
        estimates.append((within - 2 * k_xy.mean()).item())
    return sum(estimates) / subsets


def frechet_and_kernel_distance(
    a: Tensor, b: Tensor, inception_weights: Path, *, batch_size: int = CHUNK, seed: int = 0,
) -> dict[str, float]:
    """FID and KID between two image sets with the FID Inception-v3 loaded from ``inception_weights``.

    The file is a safetensors state dict with pytorch-fid's key names (docs/refiner.md
    says how to make one); nothing is downloaded. Returns ``{"fid": ..., "kid": ...}``.
    """
    model = load_inception(inception_weights).to(a.device)
    features_a = inception_features(model, a, batch_size=batch_size)
    features_b = inception_features(model, b, batch_size=batch_size)
    return {"fid": frechet_distance(features_a, features_b), "kid": kernel_distance(features_a, features_b, seed=seed)}


def inception_features(model: nn.Module, images: Tensor, *, batch_size: int = CHUNK) -> Tensor:
    """2048-D pool features (N x 2048) of images in [0, 1], resized to 299 x 299 in batches."""
    _check_images(images, "images")
    with torch.no_grad():
        return torch.cat([model(batch.float()) for batch in images.split(batch_size)])


def load_inception(path: Path) -> FIDInception:
    """The FID Inception-v3 with weights from a safetensors file; a clear UserError for a bad file.

    safetensors holds only a JSON header and raw tensor bytes, so a hostile file cannot run code
    (unlike pickle, which both ``torch.load`` and ``torch.jit.load`` use).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: Inception weights file not found")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes, larger than the {MAX_WEIGHTS_BYTES} "
                        "allowed for Inception weights")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a safetensors file ({exc})") from None
    with torch.device("meta"):  # the file supplies every value; nothing to initialise
        model = FIDInception()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    # pytorch-fid's file also holds the 1008-way classifier, which FID does not use.
    given = {k: v for k, v in tensors.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    if missing or unexpected:
        raise UserError(f"{path}: not the FID Inception-v3 weights with pytorch-fid's key names "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    wrong = [k for k, shape in expected.items() if given[k].shape != shape]
    if wrong:
        raise UserError(f"{path}: tensor {wrong[0]} has shape {tuple(given[wrong[0]].shape)}, "
                        f"expected {tuple(expected[wrong[0]])}")
    state = {k: v.float() for k, v in given.items()}
    counters = [k for k in model.state_dict() if k.endswith("num_batches_tracked")]  # unused in eval mode
    state.update({k: torch.zeros((), dtype=torch.long) for k in counters})
    model.load_state_dict(state, assign=True)
    return model.eval()


class _ConvBN(nn.Sequential):
    """Convolution without bias, batch norm (eps 1e-3, as in the TensorFlow graph), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.relu = nn.ReLU()


def _avg_pool(x: Tensor) -> Tensor:
    # TensorFlow's average pool leaves the padding out of the average.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, column = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of the factorised 7x7
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = _ConvBN(c7, 192, column[0], padding=column[1])
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, column[0], padding=column[1])
        self.branch7x7dbl_3 = _ConvBN(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = _ConvBN(c7, c7, column[0], padding=column[1])
        self.branch7x7dbl_5 = _ConvBN(c7, 192, row[0], padding=row[1])
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        double = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        double = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(double)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_avg_pool(x)),
        ], 1)


class _BlockD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        seven = self.branch7x7x3_2(self.branch7x7x3_1(x))
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(seven)),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class _BlockE(nn.Module):
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool  # the graph's last block pools by max where the paper averages
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(single), self.branch3x3_2b(single),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """Inception-v3 up to its 2048-D average pool, as in the TensorFlow graph that defines FID.

    Module names follow pytorch-fid (and torchvision), so its state dict loads unchanged.
    Input: N x 3 x H x W in [0, 1]; it is resized bilinearly to 299 x 299 and scaled to [-1, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _BlockA(192, 32)
        self.Mixed_5c = _BlockA(256, 64)
        self.Mixed_5d = _BlockA(288, 64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, 128)
        self.Mixed_6c = _BlockC(768, 160)
        self.Mixed_6d = _BlockC(768, 160)
        self.Mixed_6e = _BlockC(768, 192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)

    def forward(self, images: Tensor) -> Tensor:
        x = 2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def _check_images(images: Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"{name}: expected float images N x 3 x H x W in [0, 1], "
                         f"got {images.dtype} {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{name}: no images")
