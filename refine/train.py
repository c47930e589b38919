"""Unpaired training of the refiner (CycleGAN losses plus a structure loss), with resumable checkpoints."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.labels.torch import image_tensor

from . import checkpoint
from .data import SIGNED, RealPhotos, SyntheticFrames, training_batches
from .device import autocast, pick_device
from .metrics import BOUNDARY_BAND, LOWPASS_SIGMA, contrast_structure_map, lowpass_luminance
from .model import CycleModels, RefinerConfig
from .patchnce import patch_nce, projection_heads
from .temporal import SequencePairs, flow_mask, masked_warp_difference, pair_batches

log = logging.getLogger("sceneforge")

BOUNDARY_CHANNEL = 4  # of the G-buffer


@dataclass(frozen=True)
class TrainOptions:
    """How to train; the defaults are CycleGAN's except where docs/refiner.md says why not."""

    steps: int = 10_000
    size: int = 256  # square crop side, a multiple of 4
    batch: int = 1
    learning_rate: float = 2e-4
    cycle_weight: float = 10.0
    identity_weight: float = 0.0  # times cycle_weight; CycleGAN's 0.5 (the cyclegan preset) held the refiner at the render for some seeds
    structure_weight: float = 1.0
    structure_sigma: float = LOWPASS_SIGMA  # px: the structure loss compares low-passed luminance
    structure_band: int = BOUNDARY_BAND  # px either side of an instance boundary where it applies
    pool_size: int = 50
    checkpoint_every: int = 500
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast on a GPU
    objective: str = "cycle"  # "cycle" (CycleGAN's two generators) or "cut" (one generator, PatchNCE; refine/cut.py)
    nce_weight: float = 0.0  # PatchNCE (refine/patchnce.py): CUT 1 with identity NCE, FastCUT 10 without; the refiner: off
    nce_identity: bool = True  # CUT only
    nce_boundary_share: float = 0.0  # the refiner: share of PatchNCE's patches drawn near instance boundaries
    temporal_weight: float = 0.0  # sequence stores: weight of the flow-warped temporal loss (0: off)
    config: RefinerConfig = field(default_factory=RefinerConfig)

    @classmethod
    def preset(cls, architecture: str, *, channels: int = 64, blocks: int = 9, disc_channels: int = 64,
               **options) -> TrainOptions:
        """``sceneforge`` (the label-preserving refiner), ``cyclegan`` (the published baseline: its
        architecture and no structure loss), ``cut`` or ``fastcut`` (CUT as published: CycleGAN's
        generator and discriminator, PatchNCE instead of the cycle), with the networks' widths and
        the generator's depth."""
        if architecture == "sceneforge":
            config, structure = RefinerConfig(), cls.structure_weight
        elif architecture == "cyclegan":
            config, structure = RefinerConfig.reference(), 0.0
            options = {"identity_weight": 0.5, **options}
        elif architecture in ("cut", "fastcut"):
            config, structure = RefinerConfig.reference(), 0.0
            fast = architecture == "fastcut"
            options = {"objective": "cut", "nce_weight": 10.0 if fast else 1.0, "nce_identity": not fast, **options}
        else:
            raise UserError(f"--architecture: expected sceneforge, cyclegan, cut or fastcut, got {architecture!r}")
        return cls(structure_weight=structure, config=replace(config, channels=channels, blocks=blocks, disc_channels=disc_channels), **options)


@dataclass
class TrainResult:
    """What a ``train`` call did."""

    run: Path
    first_step: int
    last_step: int
    seconds: float
    device: str

    @property
    def steps_per_second(self) -> float:
        return (self.last_step - self.first_step) / self.seconds if self.seconds > 0 else 0.0


class ImagePool:
    """CycleGAN's history of generated images: the discriminator sees old fakes half the time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[Tensor] = []

    def query(self, images: Tensor, rng: np.random.Generator) -> Tensor:
        """Return a batch mixing ``images`` with stored ones, and remember ``images``."""
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif rng.random() < 0.5:
                slot = int(rng.integers(self.size))
                out.append(self.images[slot])
                self.images[slot] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> Tensor | None:
        """The stored images on the CPU, for a checkpoint."""
        return torch.stack(self.images).cpu() if self.images else None


def structure_loss(refined: Tensor, raw: Tensor, boundary: Tensor, sigma: float, band: int) -> Tensor:
    """Mean ``1 - contrast_structure_map`` of the low-passed luminances of the refined and raw
    images (``[-1, 1]``) over the pixels within ``band`` px of an instance boundary: an outline may
    not move, vanish or gain a double, while the noise, blur and texture a sensor adds everywhere,
    and the brightness and contrast, are free (docs/refiner.md, "What the structure loss allows")."""
    low_refined, low_raw = (lowpass_luminance((image + 1) / 2, sigma) for image in (refined, raw))
    weight = boundary_band(boundary, band)
    return ((1 - contrast_structure_map(low_raw, low_refined)) * weight).sum() / weight.sum().clamp_min(1)


def boundary_band(boundary: Tensor, band: int) -> Tensor:
    """1 within ``band`` px of an instance boundary (``boundary``: N x 1 x H x W, 1 on both sides of an id change), else 0."""
    return F.max_pool2d(boundary, 2 * band + 1, stride=1, padding=band)


def train(store_path: Path, real_dir: Path, run: Path, options: TrainOptions, device: str = "auto",
          on_step: Callable[[int], None] | None = None,
          on_start: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train (or resume) a refiner in folder ``run`` until ``options.steps``; checkpoints every
    ``options.checkpoint_every`` steps and at the end, so a killed run resumes where it saved.
    ``on_start(steps, resumed_at)`` is called once the first step is known, ``on_step(step)``
    after each step."""
    if options.size % 4 or options.size < 32:
        raise UserError(f"--size {options.size}: must be a multiple of 4 and at least 32")
    torch_device = pick_device(device)
    synthetic = SyntheticFrames(DatasetStore(store_path))
    if options.size > synthetic.shortest_side:
        raise UserError(f"--size {options.size}: larger than the renders' shorter side ({synthetic.shortest_side} px)")
    real = RealPhotos(real_dir, synthetic.shortest_side)
    run.mkdir(parents=True, exist_ok=True)

    models, optimise_g, optimise_d, channels_last = training_setup(options, torch_device)
    pools = {"real": ImagePool(options.pool_size), "synthetic": ImagePool(options.pool_size)}
    step = 0
    saved = run / checkpoint.FILE_NAME
    if saved.exists():
        state = checkpoint.load(saved, str(torch_device))
        objective = state["options"].get("objective", "cycle")  # checkpoints older than CUT are CycleGANs
        if state["config"] != options.config or objective != options.objective:
            raise UserError(f"{saved}: trained with architecture {state['config']} ({objective}), not "
                            f"{options.config} ({options.objective}); use another run folder")
        if ("heads" in state) != hasattr(models, "heads"):
            raise UserError(f"{saved}: trained {'with' if 'heads' in state else 'without'} PatchNCE (--nce-weight), "
                            "not the other way round; use another run folder")
        checkpoint.load_models(models, state, saved)
        optimise_g.load_state_dict(state["optimise_g"])  # moves the moments to the parameters' device
        optimise_d.load_state_dict(state["optimise_d"])
        for name, pool in pools.items():
            stored = state["pools"].get(name)
            pool.images = list(stored) if stored is not None else []
        step = int(state["step"])
        log.info("%s: resuming at step %d", run, step)

    if on_start:
        on_start(options.steps, min(step, options.steps))
    first_step, started = step, time.perf_counter()
    batches = training_batches(synthetic, real, size=options.size, batch=options.batch, seed=options.seed, first_step=step)
    sequences = (pair_batches(SequencePairs(synthetic), size=options.size, batch=options.batch, seed=options.seed,
                              first_step=step) if options.temporal_weight > 0 else None)
    update = train_step
    if options.objective == "cut":
        from .cut import train_step as update  # cut imports this module
    augment = kornia.augmentation.ColorJiggle(0.1, 0.1, 0.1, 0.02, p=0.5)  # photometric only: never moves pixels
    with (run / "log.jsonl").open("a") as log_file:
        while step < options.steps:
            rgb, aux, photos = next(batches)
            x, a, y = (image_tensor(t, SIGNED, torch_device, channels_last) for t in (rgb, aux, photos))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(np.random.default_rng([options.seed, step, 2]).integers(2**62)))
                y = augment((y + 1) / 2) * 2 - 1
            rng = np.random.default_rng([options.seed, step, 1])
            extra = {}
            if sequences is not None:
                extra["temporal"] = (options.temporal_weight, _temporal_term(models.to_real, next(sequences), torch_device, channels_last))
            losses = update(models, options, x, a, y, pools, rng, optimise_g, optimise_d, torch_device, extra)
            step += 1
            if step % 10 == 0 or step == options.steps:  # reading a loss waits for the GPU: not every step
                log_file.write(json.dumps({"step": step, **{k: v.item() for k, v in losses.items()}}) + "\n")
            if on_step:
                on_step(step)
            if step % options.checkpoint_every == 0 or step == options.steps:
                checkpoint.save(saved, training_state(models, options, step, optimise_g, optimise_d, pools))
    seconds = time.perf_counter() - started
    return TrainResult(run, first_step, step, seconds, str(torch_device))


def training_setup(options: TrainOptions, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.Optimizer, bool]:
    """The networks (CycleGAN's four, or CUT's generator, heads and discriminator; initial weights
    from ``options.seed``) on ``device`` and the Adam optimisers of the generator side and of the
    discriminators; channels_last (returned) with the per-pixel norm, where it is fast (instance
    norm is not)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)  # without touching the caller's RNG
        if options.objective == "cut":
            from .cut import CutModels
            models = CutModels(options.config)
        else:
            models = CycleModels(options.config, projection_heads(options.config) if options.nce_weight > 0 else None)
    channels_last = options.config.channels_last
    models.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    children = list(models.named_children())
    generators = [p for name, module in children if not name.startswith("judge_") for p in module.parameters()]
    judges = [p for name, module in children if name.startswith("judge_") for p in module.parameters()]
    fused = device.type == "cuda"
    optimise_g = torch.optim.Adam(generators, options.learning_rate, betas=(0.5, 0.999), fused=fused)
    optimise_d = torch.optim.Adam(judges, options.learning_rate, betas=(0.5, 0.999), fused=fused)
    return models, optimise_g, optimise_d, channels_last


def train_step(models: CycleModels, options: TrainOptions, x: Tensor, a: Tensor, y: Tensor, pools: dict[str, ImagePool],
          rng: np.random.Generator, optimise_g: torch.optim.Optimizer, optimise_d: torch.optim.Optimizer,
          device: torch.device, extra_g: dict[str, tuple[float, Callable[[], Tensor]]] | None = None) -> dict[str, Tensor]:
    """One CycleGAN update: both generators (with the structure loss, and PatchNCE with the render as
    the anchor when ``options.nce_weight`` > 0), then both discriminators (LSGAN); the losses, detached.
    ``extra_g``: more generator terms, name -> (weight, loss function), logged under their names."""
    to_real, to_synthetic = models.to_real, models.to_synthetic
    judges = (models.judge_real, models.judge_synthetic)
    amp = options.mixed_precision
    for judge in judges:
        judge.requires_grad_(False)
    with autocast(device, amp):
        fake_real = to_real(x, a)
        fake_synthetic = to_synthetic(y)
        adversarial = _lsgan(models.judge_real(fake_real), 1) + _lsgan(models.judge_synthetic(fake_synthetic), 1)
        cycle = F.l1_loss(to_synthetic(fake_real), x) + F.l1_loss(to_real(fake_synthetic), y)
        identity = (F.l1_loss(to_real(y), y) + F.l1_loss(to_synthetic(x), x)) if options.identity_weight else x.new_zeros(())
        structure = structure_loss(fake_real.float(), x.float(), a[:, BOUNDARY_CHANNEL:BOUNDARY_CHANNEL + 1].float(),
                                   options.structure_sigma, options.structure_band)
        loss_g = (adversarial + options.cycle_weight * cycle + options.cycle_weight * options.identity_weight * identity
                  + options.structure_weight * structure)
        extras = {name: term() for name, (_, term) in (extra_g or {}).items()}
        for name, value in extras.items():
            loss_g = loss_g + extra_g[name][0] * value
        if options.nce_weight > 0:  # the render is the anchor; near boundaries where nce_boundary_share says
            near = boundary_band(a[:, BOUNDARY_CHANNEL:BOUNDARY_CHANNEL + 1], options.structure_band)
            extras["nce"] = patch_nce(to_real, models.heads, x, fake_real, rng, near, options.nce_boundary_share)
            loss_g = loss_g + options.nce_weight * extras["nce"]
    optimise_g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimise_g.step()

    for judge in judges:
        judge.requires_grad_(True)
    with autocast(device, amp):
        old_real = pools["real"].query(fake_real, rng)
        old_synthetic = pools["synthetic"].query(fake_synthetic, rng)
        loss_d = 0.5 * (_lsgan(models.judge_real(y), 1) + _lsgan(models.judge_real(old_real), 0)
                        + _lsgan(models.judge_synthetic(x), 1) + _lsgan(models.judge_synthetic(old_synthetic), 0))
    optimise_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimise_d.step()
    return {"adversarial": adversarial.detach(), "cycle": cycle.detach(), "identity": identity.detach(),
            "structure": structure.detach(), "discriminators": loss_d.detach(), **{k: v.detach() for k, v in extras.items()}}


def temporal_loss(generator: nn.Module, rgb: Tensor, aux: Tensor, flow: Tensor, valid: Tensor) -> Tensor:
    """Temporal warping loss of a sequence batch (``rgb``, ``aux``: N frames t, then their N
    frames t + 1; ``flow`` N x 2 x S x S, the renderer's forward flow of frames t; ``valid``
    N x S x S its validity): the mean absolute difference, over the pixels whose flow is valid and
    stays in the crop, between the refinement (refined - render) of frame t and that of frame
    t + 1 warped back along the flow. Only what the refiner adds is penalised: the renders' own
    changes (shading, speculars) between frames are not."""
    change = generator(rgb, aux).float() - rgb.float()
    now, later = change.chunk(2)
    return masked_warp_difference(now, later, flow, flow_mask(flow, valid))


def _temporal_term(generator: nn.Module, batch: tuple[np.ndarray, ...], device: torch.device,
                   channels_last: bool) -> Callable[[], Tensor]:
    """``temporal_loss`` of one ``pair_batches`` batch, as a generator term of a training step."""
    rgb, aux, flow, valid = batch
    x, a = (image_tensor(t, SIGNED, device, channels_last) for t in (rgb, aux))
    f = torch.from_numpy(flow).to(device).permute(0, 3, 1, 2)
    v = torch.from_numpy(valid).to(device)
    return lambda: temporal_loss(generator, x, a, f, v)


def _lsgan(scores: Tensor, target: float) -> Tensor:
    return (scores.float() - target).square().mean()


def training_state(models: CycleModels, options: TrainOptions, step: int, optimise_g: torch.optim.Optimizer,
                   optimise_d: torch.optim.Optimizer, pools: dict[str, ImagePool]) -> dict:
    """Everything a checkpoint holds (plain values and tensors only)."""
    return {
        "config": options.config.to_dict(),
        "options": {f.name: getattr(options, f.name) for f in fields(options) if f.name != "config"},
        "step": step,
        **{name: {k: v.detach().cpu() for k, v in module.state_dict().items()} for name, module in models.named_children()},
        "optimise_g": optimise_g.state_dict(),
        "optimise_d": optimise_d.state_dict(),
        "pools": {name: pool.state() for name, pool in pools.items()},
    }
