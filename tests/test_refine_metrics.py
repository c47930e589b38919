"""Refiner metrics against inputs whose answer is known: same or shifted distributions, closed-form
Gaussian distances, instance maps painted in their own colours."""

from __future__ import annotations

import math

import kornia
import pytest
import torch
from safetensors.torch import save_file

from sceneforge.floor.errors import UserError
from sceneforge.labels.torch import SceneForgeDataset, collate
from sceneforge.refine import metrics
from sceneforge.refine.metrics import (
    FIDInception,
    edge_agreement,
    frechet_and_kernel_distance,
    frechet_distance,
    kernel_distance,
    label_validity,
    sliced_wasserstein,
    structure_ssim,
    two_sample_accuracy,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny CPU ops on a shared 2-core machine run several times faster without intra-op threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def textures(count: int, size: int, seed: int, tint: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Random textures from one distribution: a base colour near grey, smooth blobs and fine noise."""
    generator = torch.Generator().manual_seed(seed)
    base = 0.5 + 0.1 * (2 * torch.rand(count, 3, 1, 1, generator=generator) - 1)
    blobs = torch.nn.functional.interpolate(torch.rand(count, 3, 8, 8, generator=generator) - 0.5, size=(size, size),
                                            mode="bilinear", align_corners=False)
    noise = 0.05 * torch.randn(count, 3, size, size, generator=generator)
    return (base + 0.3 * blobs + noise + torch.tensor(tint).view(1, 3, 1, 1)).clamp(0, 1)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    return kornia.filters.gaussian_blur2d(images, 2 * math.ceil(3 * sigma) + 1, (sigma, sigma))


# --- sliced Wasserstein ----------------------------------------------------------------------------

SWD_OPTIONS = {"levels": 3, "patches_per_image": 64, "projections": 128}


def test_swd_is_small_within_a_distribution_and_grows_with_colour_shift_and_blur():
    a, b = textures(32, 64, seed=1), textures(32, 64, seed=2)
    same = sliced_wasserstein(a, b, **SWD_OPTIONS)
    assert len(same) == 3
    assert sliced_wasserstein(a, b, **SWD_OPTIONS) == same  # seeded: the same number every time
    # A colour shift moves only the low-pass level (band-pass levels do not see a constant), and
    # the more the shift, the further it moves.
    shifted = [sliced_wasserstein(a, textures(32, 64, seed=2, tint=(s, 0, -s)), **SWD_OPTIONS)
               for s in (0.05, 0.1, 0.2)]
    low_pass = [same[-1]] + [d[-1] for d in shifted]
    assert low_pass == sorted(low_pass) and low_pass[1] > 1.5 * same[-1], low_pass
    assert [d[0] for d in shifted] == pytest.approx([same[0]] * 3, rel=0.02)
    # Blur removes the finest band.
    blurred = sliced_wasserstein(a, blur(b, 1.0), **SWD_OPTIONS)
    assert blurred[0] > 5 * same[0]
    # Sets of other counts and sizes compare too, and stay close for the same kind of texture.
    other = sliced_wasserstein(a, textures(20, 72, seed=3), **SWD_OPTIONS)
    assert sum(other) < sum(blurred) and sum(other) < sum(shifted[-1])


def test_swd_refuses_images_too_small_for_the_pyramid():
    small = textures(4, 40, seed=0)
    with pytest.raises(UserError, match="too small for 4 pyramid levels"):
        sliced_wasserstein(small, small)


# --- two-sample classifier -------------------------------------------------------------------------

def test_two_sample_accuracy_is_chance_for_one_distribution_and_high_for_a_colour_shift():
    a = textures(96, 40, seed=10)
    same = two_sample_accuracy(a, textures(96, 40, seed=20), crop=32)
    shifted = two_sample_accuracy(a, textures(96, 40, seed=30, tint=(0.3, 0, -0.3)), crop=32)
    assert 0.35 <= same <= 0.65
    assert shifted >= 0.9


# --- label validity --------------------------------------------------------------------------------

def painted_instances() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64 x 64 instance maps (two discs and a box on background) and images in their own colours."""
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    instance = torch.zeros(2, 64, 64, dtype=torch.int64)
    instance[0][(x - 22) ** 2 + (y - 24) ** 2 < 12**2] = 1
    instance[0][(x - 42) ** 2 + (y - 40) ** 2 < 10**2] = 2
    instance[1][(x > 10) & (x < 50) & (y > 14) & (y < 36)] = 3
    instance[1][(x - 30) ** 2 + (y - 44) ** 2 < 9**2] = 1
    palette = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.3, 0.2], [0.3, 0.5, 0.9], [0.5, 0.9, 0.4]])
    return palette[instance].permute(0, 3, 1, 2).contiguous(), instance


def test_edges_of_an_image_painted_from_its_instances_agree_and_a_3px_shift_breaks_them():
    rgb, instance = painted_instances()
    assert edge_agreement(rgb, instance) >= 0.95
    # Diagonal shift: every boundary moves by 3 px (beyond the 1 px tolerance), except near corners.
    moved = torch.roll(rgb, shifts=(3, 3), dims=(2, 3))
    assert edge_agreement(moved, instance) < 0.3
    validity = label_validity(rgb, moved, instance)
    assert validity["edge_agreement_raw"] >= 0.95
    assert validity["edge_agreement_ratio"] == pytest.approx(
        validity["edge_agreement_refined"] / validity["edge_agreement_raw"])
    assert validity["edge_agreement_ratio"] < 0.3
    assert validity["structure_ssim"] < 0.85


def test_rendered_frames_have_edges_on_their_instance_boundaries(tiny_store):
    batch = collate(list(SceneForgeDataset(tiny_store, passes=("instance",))))
    image, instance = batch["image"], batch["instance"]
    assert edge_agreement(image, instance) > 0.85
    validity = label_validity(image, torch.roll(image, shifts=(3, 3), dims=(2, 3)), instance)
    assert validity["edge_agreement_ratio"] < 0.8 and validity["structure_ssim"] < 0.9
    # The masks flipped upside down no longer match the picture.
    assert edge_agreement(image, instance.flip(1)) < 0.8


def test_edge_agreement_needs_boundaries_and_matching_shapes():
    rgb, instance = painted_instances()
    with pytest.raises(UserError, match="no boundaries"):
        edge_agreement(rgb, torch.zeros_like(instance))
    with pytest.raises(ValueError, match="do not match"):
        edge_agreement(rgb, instance[:, :32])


def test_structure_ssim_ignores_colour_and_brightness_and_sees_blur():
    images = textures(4, 64, seed=5)
    assert structure_ssim(images, images) == pytest.approx(1.0, abs=1e-6)
    assert structure_ssim(images, 0.7 * images + 0.1) == pytest.approx(1.0, abs=1e-3)
    recoloured = images * torch.tensor([1.1, 0.9, 0.7]).view(1, 3, 1, 1)
    assert structure_ssim(images, recoloured) > 0.98
    assert structure_ssim(images, blur(images, 1.5)) < 0.8


# --- FID and KID -----------------------------------------------------------------------------------

def gaussian(count: int, dim: int, seed: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    return mean + std * torch.randn(count, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    features = gaussian(500, 16, seed=0)
    assert abs(frechet_distance(features, features)) < 1e-9
    # N(0, I) vs N(mu, I): |mu|^2. N(0, I) vs N(0, 4 I): d (1 - 2)^2 = d.
    x = gaussian(20000, 8, seed=1)
    assert frechet_distance(x, gaussian(20000, 8, seed=2, mean=0.5)) == pytest.approx(8 * 0.25, abs=0.05)
    assert frechet_distance(x, gaussian(20000, 8, seed=3, std=2.0)) == pytest.approx(8.0, abs=0.15)


def test_frechet_distance_with_fewer_samples_than_dimensions():
    # Exact here: sample covariances of rank 1, S_a = u u^T and S_b = v v^T, so the cross term is
    # tr((u u^T v v^T u u^T)^1/2) = |u.v|, and the distance |mu_a - mu_b|^2 + |u|^2 + |v|^2 - 2 |u.v|.
    a, b = gaussian(2, 64, seed=6), gaussian(2, 64, seed=7, mean=0.3)
    u, v = (a[0] - a[1]) / math.sqrt(2), (b[0] - b[1]) / math.sqrt(2)
    expected = (a.mean(0) - b.mean(0)).square().sum() + u.square().sum() + v.square().sum() - 2 * (u @ v).abs()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)


def test_kernel_distance_is_unbiased():
    x, y = gaussian(2000, 8, seed=4), gaussian(2000, 8, seed=5)
    # The biased estimate of the same distribution would sit near 2 (E k(x,x) - E k(x,y)) / 500 = 0.03.
    assert abs(kernel_distance(x, y, subsets=20, subset_size=500)) < 0.01
    assert kernel_distance(x, y + 0.5, subsets=20, subset_size=500) > 0.5


def inception_file(path, seed: int = 0, **extra: torch.Tensor):
    """A safetensors state dict with pytorch-fid's keys (and its classifier) and random weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in FIDInception().state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.int64)
        elif key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2 / fan_in)
        else:  # batch norm: identity statistics
            state[key] = torch.ones(shape) if key.endswith(("bn.weight", "running_var")) else torch.zeros(shape)
    state |= {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008), **extra}
    save_file(state, str(path))
    return path


def test_fid_and_kid_run_on_a_user_weights_file(tmp_path):
    weights = inception_file(tmp_path / "inception.safetensors")
    a, b = textures(3, 64, seed=6), textures(2, 64, seed=7, tint=(0.3, 0, -0.3))
    model = metrics.load_inception(weights)
    features_a, features_b = metrics.inception_features(model, a), metrics.inception_features(model, b)
    assert features_a.shape == (3, 2048) and torch.isfinite(features_a).all()
    distances = frechet_and_kernel_distance(a, b, weights)
    assert distances == pytest.approx({"fid": frechet_distance(features_a, features_b),
                                       "kid": kernel_distance(features_a, features_b)})
    assert distances["fid"] > 0


def test_bad_inception_weights_files_are_user_errors(tmp_path):
    a = textures(2, 64, seed=8)
    with pytest.raises(UserError, match="not found"):
        frechet_and_kernel_distance(a, a, tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x80\x04not a safetensors file" * 10)
    with pytest.raises(UserError, match="not a safetensors file"):
        metrics.load_inception(corrupt)
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not the FID Inception-v3 weights"):
        metrics.load_inception(tmp_path / "other.safetensors")
    wrong = inception_file(tmp_path / "wrong.safetensors", **{"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 5, 5)})
    with pytest.raises(UserError, match="Conv2d_1a_3x3.conv.weight has shape"):
        metrics.load_inception(wrong)
