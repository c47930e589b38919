"""The image and depth sensor models, measured against their formulas on synthetic images, and
in a tiny render: the clean image is the render without a sensor, the same seed gives the same bytes."""

from __future__ import annotations

import io
import math
import tarfile

import cv2
import numpy as np
import pytest

from sceneforge.floor.colour import linear_to_srgb8
from sceneforge.floor.errors import UserError
from sceneforge.labels.depth_sensor import HOLE, hole_mask, measured_depth
from sceneforge.labels.export import export
from sceneforge.labels.preview import contact_sheet
from sceneforge.pipeline import render_dataset
from sceneforge.render.sensor import apply_sensor, jpeg, sensed_image, vignetting_factor
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
from sceneforge.scenes.spec import CameraSpec, DepthSensorSpec, LensSpec, SensorSpec

from .helpers import run_cli, write_recipe

CLEAN = SensorSpec(full_well=None, read_noise=0.0, gain=1.0, blur_sigma_px=0.0, vignetting=0.0,
                   chromatic_aberration_px=0.0, jpeg_quality=None, seed=1)
EXACT_DEPTH = DepthSensorSpec(min_m=0.01, max_m=100.0, noise=0.0, baseline_m=0.075, disparity_step_px=None,
                              edge_threshold_px=0.5, edge_band_px=0, dark_threshold=0.0, grazing_deg=None,
                              specular_metallic=None, seed=1)


def intrinsics(width: int, height: int, f: float) -> np.ndarray:
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])


def camera_of(K: np.ndarray, image: np.ndarray) -> CameraSpec:
    """A pinhole camera of matrix K, the size of ``image``, at the origin."""
    height, width = image.shape[:2]
    return CameraSpec(K=np.asarray(K).tolist(), world_from_camera=np.eye(4).tolist(), width=width, height=height,
                      clip_start=0.01, clip_end=100.0)


def camera(width: int, height: int, f: float) -> CameraSpec:
    return camera_of(intrinsics(width, height, f), np.zeros((height, width)))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


# --- the image sensor ---------------------------------------------------------------------------

@pytest.mark.parametrize(("full_well", "read_noise", "gain"), [(1000.0, 5.0, 1.0), (20000.0, 3.0, 8.0)])
def test_noise_variance_against_signal_fits_the_poisson_gaussian_model(full_well, read_noise, gain):
    sensor = CLEAN.model_copy(update={"full_well": full_well, "read_noise": read_noise, "gain": gain})
    levels = np.array([0.02, 0.1, 0.25, 0.5, 0.75, 0.9])
    variances = [apply_sensor(np.full((128, 128, 3), x, np.float32), sensor, camera(128, 128, 100), rng(i)).var()
                 for i, x in enumerate(levels)]
    slope, intercept = np.polyfit(levels, variances, 1)
    per_electron = gain / full_well  # linear units per electron
    assert slope == pytest.approx(per_electron, rel=0.03)
    assert intercept == pytest.approx((read_noise * per_electron) ** 2, rel=0.25, abs=2e-3 * per_electron)
    means = [apply_sensor(np.full((64, 64, 3), x, np.float32), sensor, camera(64, 64, 50), rng(9)).mean()
             for x in levels]
    np.testing.assert_allclose(means, levels, atol=4 * math.sqrt(per_electron / (64 * 64 * 3)))  # unbiased


@pytest.mark.parametrize("sigma", [0.8, 1.5, 3.0])
def test_blur_sigma_is_the_spread_of_an_edge(sigma):
    image = np.zeros((40, 80, 3), np.float32)
    image[:, 40:] = 1.0
    blurred = apply_sensor(image, CLEAN.model_copy(update={"blur_sigma_px": sigma}), camera(80, 40, 60), rng())
    profile = blurred[20, :, 1].astype(np.float64)
    line_spread = np.diff(profile)  # the edge's derivative: the blur kernel, centred between pixels 39 and 40
    x = np.arange(len(line_spread)) + 0.5
    mean = np.sum(x * line_spread) / line_spread.sum()
    measured = math.sqrt(np.sum((x - mean) ** 2 * line_spread) / line_spread.sum())
    assert mean == pytest.approx(39.5, abs=1e-3)
    assert measured == pytest.approx(sigma, rel=0.03)


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_vignetting_corner_over_centre_is_the_cos4_law(strength):
    width, height, f = 81, 61, 50.0
    image = apply_sensor(np.ones((height, width, 3), np.float32), CLEAN.model_copy(update={"vignetting": strength}),
                         camera(width, height, f), rng())
    theta = math.atan(math.hypot(40, 30) / f)  # the corner pixel centre's angle off the axis
    assert image[30, 40, 0] == pytest.approx(1.0)
    assert image[0, 0, 0] / image[30, 40, 0] == pytest.approx(1 - strength + strength * math.cos(theta) ** 4, rel=1e-5)
    assert image[0, 0, 0] == pytest.approx(image[60, 80, 0]) and image[0, 80, 0] == pytest.approx(image[60, 0, 0])


def blob_centroid(channel: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[: channel.shape[0], : channel.shape[1]]
    return np.array([np.sum(xs * channel), np.sum(ys * channel)]) / channel.sum()


@pytest.mark.parametrize("shift", [1.5, -2.0])
def test_chromatic_aberration_moves_red_out_and_blue_in_by_the_corner_amount(shift):
    width, height = 121, 81
    K = intrinsics(width, height, 80)
    centre = np.array([60.0, 40.0])
    corner_radius = math.hypot(60, 40)
    for point in ([112.0, 73.0], [8.0, 7.0], [100.0, 66.0], [20.0, 15.0], [60.0, 40.0]):  # near corners, between, centre
        ys, xs = np.mgrid[:height, :width]
        spot = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * 1.5**2)).astype(np.float32)
        image = apply_sensor(np.repeat(spot[..., None], 3, axis=-1),
                             CLEAN.model_copy(update={"chromatic_aberration_px": shift}), camera(width, height, 80), rng())
        radial = np.asarray(point) - centre
        expected = shift * radial / corner_radius
        np.testing.assert_allclose(blob_centroid(image[..., 1]), point, atol=1e-3)
        np.testing.assert_allclose(blob_centroid(image[..., 0]) - point, expected, atol=0.03)
        np.testing.assert_allclose(blob_centroid(image[..., 2]) - point, -expected, atol=0.03)


def test_jpeg_quality_orders_file_size_and_error():
    ys, xs = np.mgrid[:96, :128]
    image = linear_to_srgb8(np.stack([(np.sin(xs / 5.0) + 1) / 2, (np.cos(ys / 7.0) + 1) / 2,
                                      rng(1).uniform(0, 1, (96, 128))], axis=-1))
    sizes, errors = [], []
    for quality in (10, 30, 50, 70, 90):
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = jpeg(image, quality)
        assert ok and decoded.shape == image.shape and decoded.dtype == np.uint8
        sizes.append(len(data))
        errors.append(np.abs(decoded.astype(int) - image).mean())
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert errors == sorted(errors, reverse=True)


def test_sensed_image_keeps_the_clean_image_and_repeats_with_its_seed():
    linear = rng(2).uniform(0, 1, (32, 48, 3)).astype(np.float32)
    K = intrinsics(48, 32, 40)
    plain = CameraSpec(K=K.tolist(), world_from_camera=np.eye(4).tolist(), width=48, height=32, clip_start=0.01,
                       clip_end=10)
    assert sensed_image(linear, plain, linear_to_srgb8)[1] is None
    sensor = SensorSpec(full_well=2000.0, read_noise=3.0, gain=2.0, blur_sigma_px=0.7, vignetting=0.4,
                        chromatic_aberration_px=0.8, jpeg_quality=80, seed=123)
    camera = plain.model_copy(update={"sensor": sensor})
    rgb, clean = sensed_image(linear, camera, linear_to_srgb8)
    np.testing.assert_array_equal(clean, linear_to_srgb8(linear))
    assert not np.array_equal(rgb, clean)
    np.testing.assert_array_equal(rgb, sensed_image(linear, camera, linear_to_srgb8)[0])
    other = camera.model_copy(update={"sensor": sensor.model_copy(update={"seed": 124})})
    assert not np.array_equal(rgb, sensed_image(linear, other, linear_to_srgb8)[0])


# --- the depth sensor ---------------------------------------------------------------------------

def test_depth_noise_grows_with_depth_squared():
    a = 0.004
    sensor = EXACT_DEPTH.model_copy(update={"noise": a})
    depths = np.array([0.5, 1.0, 2.0, 4.0])
    K = intrinsics(128, 128, 100)
    stds = []
    for i, z in enumerate(depths):
        plane = np.full((128, 128), z, np.float32)
        measured = measured_depth(plane, K, sensor, hole_mask(plane, camera_of(K, plane), sensor), rng(i))
        assert not (measured == HOLE).any()
        stds.append(np.std(measured.astype(np.float64) - z))
    exponent, log_a = np.polyfit(np.log(depths), np.log(stds), 1)
    assert exponent == pytest.approx(2.0, abs=0.03)
    assert math.exp(log_a) == pytest.approx(a, rel=0.03)


def test_holes_at_a_step_edge_and_on_a_dark_patch():
    depth = np.full((40, 60), 1.0, np.float32)
    depth[:, 30:] = 1.3  # 0.3 m between columns 29 and 30: fx B (1/1 - 1/1.3) = 0.87 px of disparity
    depth[:, 45:] = 1.32  # 2 cm more: 0.04 px, below the 0.5 px threshold
    depth[:3, :] = np.inf  # no hit at the top
    K = intrinsics(60, 40, 50)
    for band, columns in ((1, [29, 30]), (3, [27, 28, 29, 30, 31, 32])):
        holes = hole_mask(depth, camera_of(K, depth), EXACT_DEPTH.model_copy(update={"edge_band_px": band}))
        rows = holes[10:30]
        assert rows[:, columns].all()
        assert not np.delete(rows, columns, axis=1).any()
        assert holes[:3].all(), "a ray that hits nothing measures nothing"
    # A plane 0.4 m from the camera centre, slanted 80 degrees: depth changes by up to 9 % per
    # pixel, its disparity by at most baseline / 0.4 m = 0.19 px per pixel: no edge.
    n = np.array([math.sin(math.radians(80)), 0.0, -math.cos(math.radians(80))])
    us, vs = np.meshgrid(np.arange(60), np.arange(40))
    rays = np.stack([us, vs, np.ones(us.shape)], axis=-1) @ np.linalg.inv(K).T
    slanted = (-0.4 / (rays @ n)).astype(np.float32)
    slanted[slanted <= 0] = np.inf
    with np.errstate(invalid="ignore"):  # inf - inf beyond the horizon
        assert np.nanmax(np.abs(np.diff(slanted, axis=1)) / slanted[:, 1:]) > 0.05
    assert not hole_mask(slanted, camera_of(K, slanted), EXACT_DEPTH.model_copy(update={"edge_band_px": 3}))[np.isfinite(slanted)].any()
    luminance = np.full(depth.shape, 0.3)
    luminance[15:25, 5:15] = 0.004
    holes = hole_mask(depth, camera_of(K, depth), EXACT_DEPTH.model_copy(update={"dark_threshold": 0.01}), luminance=luminance)
    assert holes[15:25, 5:15].all()
    assert holes[3:].sum() == 100


def test_holes_at_grazing_incidence_follow_the_angle_to_the_normal():
    K = intrinsics(41, 41, 40)
    depth = np.full((41, 41), 2.0, np.float32)
    normals = np.zeros((41, 41, 3), np.float32)
    for tilt, row in ((0.0, slice(0, 10)), (70.0, slice(10, 20)), (85.0, slice(20, 41))):
        t = math.radians(tilt)
        normals[row] = (math.sin(t), 0.0, -math.cos(t))  # turned about the image's y axis
    holes = hole_mask(depth, camera_of(K, depth), EXACT_DEPTH.model_copy(update={"grazing_deg": 80.0}), normals=normals)
    us, vs = np.meshgrid(np.arange(41), np.arange(41))
    rays = np.stack([(us - 20) / 40, (vs - 20) / 40, np.ones(us.shape)], axis=-1)
    angle = np.degrees(np.arccos(-np.sum(normals * rays, axis=-1) / np.linalg.norm(rays, axis=-1)))
    np.testing.assert_array_equal(holes, angle > 80.0)
    assert holes[20:].mean() > 0.5 and not holes[:10].any()  # the tilted plane loses its half turned away


def test_quantisation_steps_follow_the_disparity_formula():
    f, baseline, step = 100.0, 0.05, 0.25
    sensor = EXACT_DEPTH.model_copy(update={"disparity_step_px": step, "baseline_m": baseline})
    depth = np.linspace(0.8, 3.0, 4000, dtype=np.float32)[None, :]
    K = intrinsics(4000, 1, f)
    measured = measured_depth(depth, K, sensor, hole_mask(depth, camera_of(K, depth), sensor), rng()).astype(np.float64)[0]
    levels = np.unique(measured)
    k = f * baseline / (levels * step)  # the disparity of each level in steps: whole numbers
    np.testing.assert_allclose(k, np.rint(k), atol=1e-4)
    assert np.abs(measured - depth[0]).max() <= 0.5 * step * depth[0].max() ** 2 / (f * baseline) * 1.01
    gaps = np.diff(levels)
    middles = (levels[1:] + levels[:-1]) / 2
    np.testing.assert_allclose(gaps, middles**2 * step / (f * baseline), rtol=0.02)  # dz = z^2 dd / (f B)
    far = measured_depth(np.full((1, 4), 50.0, np.float32), K, sensor.model_copy(update={"max_m": 10.0}),
                         np.zeros((1, 4), bool), rng())
    assert (far == HOLE).all(), "beyond max_m: a hole"


# --- a tiny render ------------------------------------------------------------------------------

SENSOR_RECIPE = """\
seed: 5
count: 2
render: {{resolution: [64, 48], samples: 2}}
camera:
  fov_deg: 50
  look_at: [0, 0, 0.05]
  distance: 0.8
  elevation_deg: 40
  azimuth_deg: {{uniform: [0, 360]}}
{sensors}objects:
  - {{category: box, count: 2, asset: {{primitive: box, extents: [0.15, 0.15, 0.15]}}, material: {{color: [0.6, 0.5, 0.3]}}}}
  - {{category: chrome, asset: {{primitive: sphere, radius: 0.06}}, material: {{metallic: 1, roughness: 0.05}}}}
lights: [{{type: sun, energy: 3}}]
"""
SENSORS = """\
  sensor: {full_well: {uniform: [800, 1500]}, read_noise: 4, blur_sigma_px: 0.6, vignetting: 0.5,
           chromatic_aberration_px: 0.7, jpeg_quality: {randint: [70, 90]}}
  depth_sensor: {noise: 0.003, edge_band_px: 2, grazing_deg: 85, specular_metallic: 0.9}
"""


def test_render_with_sensors_keeps_the_clean_image_and_repeats_byte_for_byte(tmp_path):
    with_sensors = load_recipe(write_recipe(tmp_path, SENSOR_RECIPE.format(sensors=SENSORS), "sensors.yaml"))
    plain = load_recipe(write_recipe(tmp_path, SENSOR_RECIPE.format(sensors=""), "plain.yaml"))
    # The sensors draw from their own stream: nothing else of the frame changes.
    for index in range(2):
        sensed, ideal = sample(with_sensors, index), sample(plain, index)
        assert sensed.model_copy(update={"camera": ideal.camera}) == ideal
        assert sensed.camera.model_copy(update={"sensor": None, "depth_sensor": None}) == ideal.camera
    store = render_dataset(with_sensors, tmp_path / "sensed").store
    again = render_dataset(with_sensors, tmp_path / "again").store
    reference = render_dataset(plain, tmp_path / "plain").store
    assert store.meta["passes"][-2:] == ["rgb_clean", "depth_sensor"]
    for record, repeat, ideal in zip(store.records(), again.records(), reference.records()):
        np.testing.assert_array_equal(store.read_rgb(record, "rgb_clean"), reference.read_rgb(ideal))
        assert "rgb_clean" not in ideal["files"] and "depth_sensor" not in ideal["files"]
        assert np.abs(store.read_rgb(record).astype(int) - store.read_rgb(record, "rgb_clean")).mean() > 1
        for name in ("rgb", "rgb_clean", "depth_sensor"):
            assert store.path(record, name).read_bytes() == again.path(repeat, name).read_bytes()
        # The measured depth against the exact one: holes where the model says, noise within 5 sigma + a step.
        depth, sensed = store.read_depth(record), store.read_depth_sensor(record)
        spec = sample(with_sensors, record["index"]).camera.depth_sensor
        measured = sensed != HOLE
        assert measured.mean() > 0.3
        z = depth[measured]
        step_error = 0.5 * spec.disparity_step_px * z**2 / (record["camera"]["K"][0][0] * spec.baseline_m)
        assert np.all(np.abs(sensed[measured] - z) <= 5 * spec.noise * z**2 + step_error * 1.01)
        instance = store.read_instance(record)
        chrome = next(o["instance_id"] for o in record["objects"] if o["category"] == "chrome")
        assert not measured[instance == chrome].any(), "metallic objects give no depth"
        assert not measured[~np.isfinite(depth)].any()
    # Everywhere a user meets the passes: preview, the Dataset, WebDataset.
    assert contact_sheet(store).shape[1] == 6 * 256  # rgb, depth, normals, instances, clean, depth sensor
    export(store, "webdataset", tmp_path / "wds")
    with tarfile.open(next((tmp_path / "wds").glob("*.tar"))) as tar:
        names = tar.getnames()
        clean_png = tar.extractfile("000000.rgb_clean.png").read()
        sensed = np.load(io.BytesIO(tar.extractfile("000000.depth_sensor.npy").read()), allow_pickle=False)
    assert np.array_equal(sensed, store.read_depth_sensor(store.records()[0])) and sensed.dtype == np.float32
    assert clean_png == store.path(store.records()[0], "rgb_clean").read_bytes()
    export(store, "coco", tmp_path / "coco_clean", rgb="clean")
    from sceneforge.labels.torch import SceneForgeDataset  # torch: only where the Dataset is used

    data = SceneForgeDataset(store, passes=("rgb_clean", "depth_sensor"))
    sample0 = data[0]
    assert sample0["rgb_clean"].shape == (3, 48, 64) and sample0["depth_sensor"].shape == (1, 48, 64)
    clean_data = SceneForgeDataset(store, rgb="clean")
    assert np.allclose(clean_data[0]["image"].numpy(), sample0["rgb_clean"].numpy())


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sensor", "{vignetting: 1.5}", "camera.sensor.vignetting: must lie in [0, 1], this value can be 1.5 .. 1.5"),
    ("sensor", "{jpeg_quality: {randint: [0, 90]}}", "camera.sensor.jpeg_quality: must lie in [1, 100]"),
    ("sensor", "{read_noise: {normal: [2, 1]}}", "camera.sensor.read_noise: must lie in [0, 10000], this value can "
                                                 "be -inf .. inf (clip the normal)"),
    ("sensor", "{full_well: 0}", "camera.sensor.full_well: must lie in [1, 1e+07]"),
    ("sensor", "{shot: 1}", "camera.sensor.shot: unknown key 'shot'"),
    ("depth_sensor", "{min_m: 2, max_m: {uniform: [1, 5]}}", "camera.depth_sensor: min_m (up to 2) must stay below "
                                                             "max_m (from 1)"),
    ("depth_sensor", "{grazing_deg: 95}", "camera.depth_sensor.grazing_deg: must lie in [0, 90]"),
    ("depth_sensor", "{edge_band_px: 1.5}", "camera.depth_sensor.edge_band_px: expected an integer"),
])
def test_bad_sensor_values_are_located_errors(tmp_path, field, value, message):
    path = write_recipe(tmp_path, f"count: 1\ncamera:\n  {field}: {value}\n")
    with pytest.raises(UserError) as error:
        load_recipe(path)
    assert f"{path}:3:" in str(error.value) and message in str(error.value), str(error.value)


def test_a_bad_sensor_value_exits_2_without_a_traceback(tmp_path):
    path = write_recipe(tmp_path, "count: 1\ncamera:\n  sensor:\n    jpeg_quality: 101\n")
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}:4:19: camera.sensor.jpeg_quality: must lie in [1, 100]" in result.stderr, result.stderr


def test_vignetting_follows_each_pixels_ray_through_the_lens():
    lensed = camera(41, 31, 20).model_copy(update={"lens": LensSpec(model="fisheye", coefficients=(0.05, 0.01, 0.0, 0.0))})
    us, vs = np.meshgrid(np.arange(41.0), np.arange(31.0))
    # OpenCV's own inverse of the fisheye model: normalised (x, y) of each pixel centre's ray.
    xy = cv2.fisheye.undistortPoints(np.stack([us, vs], axis=-1).reshape(-1, 1, 2), np.asarray(lensed.K),
                                     np.array([0.05, 0.01, 0.0, 0.0])).reshape(31, 41, 2)
    cos_theta = 1.0 / np.sqrt(1.0 + (xy**2).sum(axis=-1))
    np.testing.assert_allclose(vignetting_factor(lensed, 1.0), cos_theta**4, atol=1e-5)
