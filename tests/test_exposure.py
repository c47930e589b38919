"""Exposure and tone: EV scaling, auto-exposure targets, Blender's own view transforms, the
clipped-pixel fraction in records, stats and preview, and located recipe errors."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sceneforge.floor.colour import clipped_fraction, linear_to_srgb8, mean_luminance, srgb_to_linear
from sceneforge.labels.stats import CLIPPED_WARNING
from sceneforge.render.develop import develop, expose, ocio_config_path, view_transform
from sceneforge.scenes.recipe import Recipe, load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import ExposureSpec

from .helpers import ROOT, run_cli, write_recipe

HDRI = ROOT / "examples" / "assets" / "hdri" / "studio_small_03_256.hdr"
VIEWS = ("standard", "filmic", "agx")
# The smallest linear value the Standard view writes as 255: its sRGB encoding rounds up to 255.
STANDARD_WHITE = float(srgb_to_linear(254.5 / 255))


def synthetic(seed: int, shape=(60, 80)) -> np.ndarray:
    """A linear image with a long tail of highlights (up to ~50), like a render with a bright sky."""
    rng = np.random.default_rng(seed)
    base = rng.random((*shape, 3)) ** 3 * 2.0
    base[rng.random(shape) < 0.2] *= 25.0
    return base.astype(np.float32)


def test_ev_scales_linear_values_exactly():
    linear = synthetic(0)
    for ev in (-2.0, -0.5, 0.0, 1.0, 3.25):
        rgb, used = develop(linear, ExposureSpec(ev=ev))
        assert used == ev
        assert np.array_equal(rgb, linear_to_srgb8(linear.astype(np.float64) * 2.0 ** ev))
    assert np.array_equal(expose(linear, -2.0), linear * np.float32(0.25))
    # The default spec is the old pipeline: Standard view at EV 0.
    assert np.array_equal(develop(linear, ExposureSpec())[0], linear_to_srgb8(linear))


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("target", [0.0, 0.01, 0.1])
def test_auto_exposure_clips_at_most_the_target_and_is_the_brightest_that_does(view, target):
    linear = synthetic(1)
    rgb, ev = develop(linear, ExposureSpec(view_transform=view, auto="clipped", target=target))
    assert clipped_fraction(rgb) <= target
    brighter, _ = develop(linear, ExposureSpec(view_transform=view, ev=ev + 1 / 128))
    assert clipped_fraction(brighter) > target


@pytest.mark.parametrize("target", [0.0, 0.02, 0.25])
def test_standard_auto_exposure_matches_the_highlight_quantile(target):
    # Under the Standard view a pixel clips once its brightest channel times 2^ev reaches
    # STANDARD_WHITE; the answer is set by the (k+1)-th brightest pixel, k = floor(target * N).
    linear = synthetic(2)
    brightest = np.sort(linear.max(axis=-1).ravel())[::-1]
    k = int(np.floor(target * brightest.size))
    expected = np.log2(STANDARD_WHITE / brightest[k])
    _, ev = develop(linear, ExposureSpec(auto="clipped", target=target))
    assert expected - 1 / 128 <= ev <= expected


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("target", [0.2, 0.45, 0.7])
def test_auto_exposure_meets_a_mean_luminance(view, target):
    linear = synthetic(3, shape=(300, 400))  # large enough to be metered on a subset of pixels
    rgb, _ = develop(linear, ExposureSpec(view_transform=view, auto="mean", target=target))
    luminance = (rgb.astype(np.float64) @ [0.2126, 0.7152, 0.0722]).mean() / 255
    assert abs(luminance - target) < 0.005


def test_auto_exposure_stays_within_its_ev_range():
    black = np.zeros((8, 8, 3), np.float32)
    assert develop(black, ExposureSpec(auto="mean", target=0.5, min_ev=-3, max_ev=4))[1] == 4
    blinding = np.full((8, 8, 3), 1e6, np.float32)
    assert develop(blinding, ExposureSpec(auto="clipped", target=0.01, min_ev=-3, max_ev=4))[1] == -3
    dim = np.full((8, 8, 3), 0.01, np.float32)  # clip protection never brightens beyond max_ev
    assert develop(dim, ExposureSpec(auto="clipped", target=0.01, max_ev=0))[1] == 0


BLENDER_VIEWS = """
import sys, numpy as np, bpy
linear = np.load(sys.argv[1])
height, width, _ = linear.shape
image = bpy.data.images.new("linear", width, height, float_buffer=True, alpha=False)
pixels = np.ones((height, width, 4), np.float32)
pixels[..., :3] = linear[::-1]  # Blender's rows run bottom to top
image.pixels.foreach_set(pixels.ravel())
scene = bpy.context.scene
scene.render.dither_intensity = 0
settings = scene.render.image_settings
settings.file_format, settings.color_depth, settings.color_mode = "PNG", "8", "RGB"
for view in sys.argv[2:]:
    scene.view_settings.view_transform = view
    scene.view_settings.look, scene.view_settings.exposure, scene.view_settings.gamma = "None", 0.0, 1.0
    image.save_render(f"{sys.argv[1]}.{view}.png", scene=scene)
"""


def test_view_transforms_equal_blenders_own(tmp_path):
    # Blender itself writes the PNG of the same linear values through its views (save_render).
    rng = np.random.default_rng(4)
    ramp = np.geomspace(1e-4, 300.0, 64 * 16, dtype=np.float32)
    grey = np.repeat(ramp[:, None], 3, axis=1)
    colours = (rng.random((64 * 16, 3)) ** 2 * rng.choice([0.1, 1, 10, 100], (64 * 16, 1))).astype(np.float32)
    linear = np.concatenate([grey, colours]).reshape(32, 64, 3)
    np.save(tmp_path / "linear.npy", linear)
    names = {"standard": "Standard", "filmic": "Filmic", "agx": "AgX"}
    subprocess.run([sys.executable, "-c", BLENDER_VIEWS, str(tmp_path / "linear.npy"), *names.values()],
                   check=True, capture_output=True, timeout=300)
    assert ocio_config_path().is_file()
    for view, blender_name in names.items():
        blender = cv2.imread(str(tmp_path / f"linear.npy.{blender_name}.png"))[..., ::-1].astype(int)
        ours = view_transform(linear, view).astype(int)
        assert np.abs(ours - blender).max() <= 1, view
        assert len(np.unique(ours)) > 100  # the ramp spans the whole 8-bit range


def test_recipe_exposure_defaults_to_clip_protection_and_draws_ev(tmp_path):
    spec = sample(load_recipe(write_recipe(tmp_path, "count: 2\n")), 0)
    assert spec.camera.exposure == ExposureSpec(auto="clipped", target=0.01, max_ev=0.0)
    recipe = load_recipe(write_recipe(tmp_path, """\
        count: 8
        camera: {exposure: {ev: {uniform: [-1.5, 0.5]}, view_transform: agx}}
        """))
    exposures = [sample(recipe, i).camera.exposure for i in range(8)]
    again = Recipe.model_validate(json.loads(json.dumps(recipe.model_dump(mode="json"))))  # as dataset.json keeps it
    assert again.camera.exposure == recipe.camera.exposure and again.camera.exposure.auto is None
    assert all(e.auto is None and e.view_transform == "agx" and -1.5 <= e.ev <= 0.5 for e in exposures)
    assert len({e.ev for e in exposures}) == 8
    assert [sample(recipe, i).camera.exposure for i in range(8)] == exposures  # the same every time
    recipe = load_recipe(write_recipe(tmp_path, "camera: {exposure: {auto: {mean: {uniform: [0.3, 0.5]}, min_ev: -4}}}\n"))
    exposure = sample(recipe, 3).camera.exposure
    assert exposure.auto == "mean" and 0.3 <= exposure.target <= 0.5 and exposure.min_ev == -4


@pytest.mark.parametrize("exposure, line, col, message", [
    ("{ev: 30}", 3, 18, "must lie in [-20, 20]"),
    ("{ev: {uniform: [-1, 25]}}", 3, 18, "must lie in [-20, 20]"),
    ("{view_transform: aces}", 3, 30, "'standard', 'filmic' or 'agx'"),
    ("{auto: {clipped: 0.8}}", 3, 30, "must lie in [0, 0.5]"),
    ("{auto: {mean: 0}}", 3, 27, "must lie in [0.01, 0.99]"),
    ("{auto: {clipped: 0.01, mean: 0.4}}", 3, 20, "give one target"),
    ("{auto: {mean: 0.4, min_ev: 2, max_ev: 1}}", 3, 20, "min_ev (2) must not exceed max_ev (1)"),
    ("{ev: 1, auto: {mean: 0.4}}", 3, 13, "give ev or auto, not both"),
])
def test_bad_exposure_is_a_located_error(tmp_path, exposure, line, col, message):
    path = write_recipe(tmp_path, f"count: 1\ncamera:\n  exposure: {exposure}\n")
    result = run_cli("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:{line}:{col}" in result.stderr and "camera.exposure" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


OVER_BRIGHT = f"""\
    seed: 3
    count: 2
    render: {{resolution: [48, 32], samples: 2}}
    camera: {{distance: 1.5, elevation_deg: 35, EXPOSURE}}
    objects: [{{category: box, count: 2, asset: {{primitive: box, extents: [0.2, 0.2, 0.2]}}, material: {{color: [0.9, 0.9, 0.9]}}}}]
    lights: [{{type: sun, energy: 12, elevation_deg: 60}}]
    background: {{hdri: {HDRI}, strength: 3}}
    """


@pytest.fixture(scope="module")
def over_bright(tmp_path_factory):
    """An HDRI and sun scene far too bright for EV 0, rendered with and without auto-exposure."""
    folder = tmp_path_factory.mktemp("over_bright")
    runs = {}
    for name, exposure in (("fixed", "exposure: {ev: 0}"), ("auto", "exposure: {}"),
                           ("mean", "exposure: {auto: {mean: 0.35}, view_transform: filmic}")):
        recipe = write_recipe(folder, OVER_BRIGHT.replace("EXPOSURE", exposure), f"{name}.yaml")
        result = run_cli("render", recipe, "-o", folder / name, "--quiet")
        assert result.returncode == 0, result.stderr
        runs[name] = (folder / name, result)
    return runs


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]


def read_rgb(out, record) -> np.ndarray:
    return cv2.imread(str(out / record["files"]["rgb"]))[..., ::-1]


def test_render_records_the_ev_view_and_clipped_fraction(over_bright):
    out, result = over_bright["fixed"]
    for record in records(out):
        rgb = read_rgb(out, record)
        assert record["clipped_fraction"] == pytest.approx(np.any(rgb == 255, axis=-1).mean(), abs=1e-6)
        assert record["clipped_fraction"] > 0.3 and record["exposure_ev"] == 0 and record["view_transform"] == "standard"
    assert "warning: 2 of 2 frame(s) have more than 2.0% of their pixels clipped" in result.stderr
    out, result = over_bright["auto"]  # the default darkens until at most 1 % clips
    for record in records(out):
        assert record["clipped_fraction"] <= 0.01 and record["exposure_ev"] < -0.5
        assert np.any(read_rgb(out, record) == 255, axis=-1).mean() <= 0.01
    assert "warning" not in result.stderr
    out, _ = over_bright["mean"]
    for record in records(out):
        assert abs(mean_luminance(read_rgb(out, record)) - 0.35) < 0.01 and record["view_transform"] == "filmic"


def test_stats_and_preview_report_clipped_frames(over_bright, tmp_path):
    out, _ = over_bright["fixed"]
    worst = max(r["clipped_fraction"] for r in records(out))
    result = run_cli("stats", out, "--plots", tmp_path / "plots")
    assert result.returncode == 0 and "2 frame(s) above 2.0%" in result.stdout, result.stdout
    assert f"max {worst:.2%}" in result.stdout and "warning: 2 of 2 frame(s)" in result.stderr
    assert (tmp_path / "plots" / "clipped.png").is_file()
    relaxed = run_cli("stats", out, "--plots", tmp_path / "plots", "--clipped-threshold", str(worst))
    assert "0 frame(s) above" in relaxed.stdout and ": none" in relaxed.stdout and "warning" not in relaxed.stderr
    sheet = tmp_path / "sheet.png"
    result = run_cli("preview", out, "-o", sheet, "--frames", "1")
    assert result.returncode == 0 and "warning: 1 of 1 frame(s)" in result.stderr and " 1 (" in result.stderr
    marked = cv2.imread(str(sheet))[..., ::-1]
    assert np.array_equal(marked[0, 0], [255, 0, 0])  # the RGB tile is framed in red
    calm = run_cli("preview", out, "-o", tmp_path / "calm.png", "--frames", "1", "--clipped-threshold", "1")
    assert "warning" not in calm.stderr and not np.array_equal(cv2.imread(str(tmp_path / "calm.png"))[0, 0, ::-1], [255, 0, 0])
    out, _ = over_bright["auto"]
    assert "warning" not in run_cli("stats", out, "--plots", tmp_path / "plots").stderr


def test_cli_threshold_is_the_stats_threshold():
    from sceneforge.cli import CLIPPED_THRESHOLD

    assert CLIPPED_THRESHOLD == CLIPPED_WARNING


def test_a_sequence_keeps_one_drawn_ev(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, """\
        count: 6
        sequence: {frames: 3, fps: 10}
        camera: {exposure: {ev: {uniform: [-2, 2]}}}
        """))
    evs = [sample(recipe, i).camera.exposure.ev for i in range(6)]
    assert evs[0] == evs[1] == evs[2] and evs[3] == evs[4] == evs[5] and evs[0] != evs[3]
