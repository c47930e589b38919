"""Vector and rotation distributions, lights, environments and camera poses, sampled without rendering."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.distributions import OnSphere, Uniform, UniformBox, Yaw, draw_rotation, draw_vector
from sceneforge.scenes.raycast import visible_fractions
from sceneforge.scenes.recipe import Recipe, load_recipe, recipe_from_dict
from sceneforge.scenes.sampling import kelvin_to_rgb, sample

from .helpers import ROOT, TINY_RECIPE, write_recipe

HDRI = ROOT / "examples" / "assets" / "hdri" / "studio_small_03_256.hdr"


def draws(dist, n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([draw_vector(dist, rng) for _ in range(n)])


def test_uniform_box_statistics():
    low, high = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 2.0])
    points = draws(UniformBox(uniform_box={"low": low, "high": high}))
    assert np.all((points >= low) & (points <= high))
    assert np.allclose(points.mean(axis=0), (low + high) / 2, atol=0.02)
    assert np.allclose(points.var(axis=0), (high - low) ** 2 / 12, rtol=0.05, atol=1e-12)


@pytest.mark.parametrize("hemisphere", [False, True])
def test_on_sphere_statistics(hemisphere):
    centre = np.array([0.5, -1.0, 0.2])
    points = draws(OnSphere(on_sphere={"radius": 2.0, "center": centre, "hemisphere": hemisphere}))
    offsets = points - centre
    assert np.allclose(np.linalg.norm(offsets, axis=1), 2.0)
    # Uniform on the sphere: each coordinate has variance r^2 / 3; on the upper half E[z] = r / 2.
    assert np.allclose(offsets.var(axis=0)[:2], 4 / 3, rtol=0.05)
    assert np.allclose(offsets.mean(axis=0)[:2], 0.0, atol=0.04)
    if hemisphere:
        assert offsets[:, 2].min() >= 0 and offsets[:, 2].mean() == pytest.approx(1.0, abs=0.03)
    else:
        assert offsets[:, 2].mean() == pytest.approx(0.0, abs=0.04)
        assert offsets[:, 2].var() == pytest.approx(4 / 3, rel=0.05)


def test_component_vectors_draw_each_component():
    points = draws((1.0, Uniform(uniform=(2.0, 4.0)), 0.0), n=5000)
    assert np.all(points[:, 0] == 1.0) and np.all(points[:, 2] == 0.0)
    assert points[:, 1].mean() == pytest.approx(3.0, rel=0.02) and points[:, 1].std() > 0.5


def test_rotations_so3_is_uniform_yaw_keeps_z():
    rng = np.random.default_rng(3)
    so3 = np.array([draw_rotation("so3", rng) for _ in range(5000)])
    assert np.allclose(np.einsum("nij,nkj->nik", so3, so3), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(so3), 1.0)
    assert np.abs(so3.mean(axis=0)).max() < 0.03  # E[R] = 0 for the uniform (Haar) distribution
    yaw = np.array([draw_rotation("yaw", rng) for _ in range(5000)])
    assert np.allclose(yaw[:, :, 2], [0, 0, 1]) and np.abs(yaw[:, :2, :2].mean(axis=0)).max() < 0.03
    turned = draw_rotation(Yaw(yaw_deg=90.0), rng)
    assert np.allclose(turned @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])


def test_kelvin_colours():
    assert min(kelvin_to_rgb(6500)) > 0.9  # daylight is near white
    red, green, blue = kelvin_to_rgb(2000)
    assert red == 1.0 and green < 0.4 and blue < 0.05  # candle light is red-heavy
    ratios = [b / r for r, _, b in map(kelvin_to_rgb, (1700, 3000, 5000, 8000, 20000))]
    assert ratios == sorted(ratios)  # hotter is bluer


LIGHTS = """\
seed: 3
count: 40
lights:
  - type: spot
    count: {randint: [1, 3]}
    energy: 100
    kelvin: {uniform: [2000, 3000]}
    position: {on_sphere: {radius: 2, center: [0, 0, 0.5], hemisphere: true}}
    target: {uniform_box: {low: [-0.1, -0.1, 0], high: [0.1, 0.1, 0]}}
    spot_size_deg: {uniform: [20, 40]}
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
"""


def test_lights_have_counts_positions_aims_and_kelvin_colours(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, LIGHTS))
    counts = set()
    for index in range(recipe.count):
        lights = sample(recipe, index).lights
        spots, sun = lights[:-1], lights[-1]
        counts.add(len(spots))
        assert sun.type == "sun" and sun.color == (1.0, 1.0, 1.0)
        for spot in spots:
            pose = np.asarray(spot.world_from_light)
            position, aim = pose[:3, 3], pose[:3, 2]  # lights shine along their local +Z
            assert aim[2] < 0, "a spot above its target shines down"
            assert np.linalg.norm(position - [0, 0, 0.5]) == pytest.approx(2.0) and position[2] >= 0.5
            # The aim passes through the target box on the ground (z = 0).
            hit = position + aim * (-position[2] / aim[2])
            assert np.all(np.abs(hit[:2]) <= 0.1 + 1e-9)
            assert 20 <= spot.spot_size_deg <= 40
            assert spot.color[0] == 1.0 and spot.color[2] < spot.color[1] < 0.6
    assert counts == {1, 2, 3}


def test_hdri_background_is_resolved_next_to_the_recipe(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "sky.hdr").write_bytes(HDRI.read_bytes())
    text = "background: {hdri: maps/sky.hdr, rotation_deg: {uniform: [0, 360]}, strength: 2}\n"
    recipe = load_recipe(write_recipe(tmp_path, text))
    hdris = [sample(recipe, i).hdri for i in range(20)]
    assert all(h.path == str(tmp_path / "maps" / "sky.hdr") and h.strength == 2.0 for h in hdris)
    angles = [h.rotation_deg for h in hdris]
    assert 0 <= min(angles) and max(angles) <= 360 and len(set(angles)) == 20


CAMERA = TINY_RECIPE.replace(
    "camera: {fov_deg: 55, look_at: [0, 0, 0.05], ",
    "camera: {fov_deg: 55, look_at: LOOK, ",
).replace("count: 3\n", "count: 30\n")


def world_vertices(obj) -> np.ndarray:
    pose = np.asarray(obj.world_from_object)
    return asset_mesh(obj.asset).vertices @ pose[:3, :3].T + pose[:3, 3]


def box_centre(points: np.ndarray) -> np.ndarray:
    return (points.min(axis=0) + points.max(axis=0)) / 2


def aims_at(camera, point: np.ndarray) -> bool:
    pose = np.asarray(camera.world_from_camera)
    towards = point - pose[:3, 3]
    return np.allclose(pose[:3, 2], towards / np.linalg.norm(towards), atol=1e-9)


def test_look_at_scene_center_and_random_object(tmp_path):
    for mode in ("scene_center", "random_object"):
        recipe = load_recipe(write_recipe(tmp_path, CAMERA.replace("LOOK", mode)))
        chosen = set()
        for index in range(recipe.count):
            spec = sample(recipe, index)
            if mode == "scene_center":
                assert aims_at(spec.camera, box_centre(np.concatenate([world_vertices(o) for o in spec.objects])))
            else:
                aimed = [o.instance_id for o in spec.objects if aims_at(spec.camera, box_centre(world_vertices(o)))]
                assert len(aimed) == 1
                chosen.add(aimed[0])
        if mode == "random_object":
            assert len(chosen) >= 3


def test_look_at_all_objects_frames_every_object(tmp_path):
    text = CAMERA.replace("LOOK", "all_objects").replace("distance: {uniform: [0.9, 1.2]}, ", "fit_margin: 1.05, ")
    recipe = load_recipe(write_recipe(tmp_path, text))
    for index in range(recipe.count):
        spec = sample(recipe, index)
        points = np.concatenate([world_vertices(o) for o in spec.objects])
        assert aims_at(spec.camera, box_centre(points))
        camera_from_world = np.linalg.inv(np.asarray(spec.camera.world_from_camera))
        in_camera = points @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
        uv = in_camera @ np.asarray(spec.camera.K).T
        uv = uv[:, :2] / uv[:, 2:]
        assert np.all(uv >= -0.5) and np.all(uv[:, 0] <= 95.5) and np.all(uv[:, 1] <= 71.5)
        # ... from where their bounding sphere just fits the image height (the narrower view), times 1.05.
        radius = np.linalg.norm(points - box_centre(points), axis=1).max()
        half_height = math.atan(36 / (48 / math.tan(math.radians(55 / 2))))
        distance = np.linalg.norm(np.asarray(spec.camera.world_from_camera)[:3, 3] - box_centre(points))
        assert distance == pytest.approx(1.05 * radius / math.sin(half_height))


def test_roll_turns_the_camera_about_its_axis_and_keeps_k(tmp_path):
    base = load_recipe(write_recipe(tmp_path, CAMERA.replace("LOOK", "[0, 0, 0.05]")))
    rolled = load_recipe(write_recipe(tmp_path, CAMERA.replace("LOOK", "[0, 0, 0.05], roll_deg: 25"), "rolled.yaml"))
    jittered = load_recipe(write_recipe(
        tmp_path, CAMERA.replace("LOOK", "[0, 0, 0.05], roll_deg: {uniform: [-10, 10]}"), "jittered.yaml"))
    rolls = []
    for index in range(10):
        plain = sample(base, index).camera
        for recipe in (rolled, jittered):
            camera = sample(recipe, index).camera
            assert camera.K == plain.K
            turn = np.asarray(plain.world_from_camera)[:3, :3].T @ np.asarray(camera.world_from_camera)[:3, :3]
            assert np.allclose(np.asarray(camera.world_from_camera)[:3, 2:], np.asarray(plain.world_from_camera)[:3, 2:])
            angle = math.degrees(math.atan2(turn[1, 0], turn[0, 0]))  # camera x turned towards camera y
            if recipe is rolled:
                assert angle == pytest.approx(25.0)
            else:
                rolls.append(angle)
    assert all(-10 <= a <= 10 for a in rolls) and np.std(rolls) > 2


def test_depth_of_field_focuses_on_the_target_and_motion_draws_a_velocity(tmp_path):
    text = CAMERA.replace("LOOK", "[0, 0, 0.05], dof: {fstop: {uniform: [1.4, 4]}}, "
                          "motion_blur: {exposure_s: 0.02, velocity: {on_sphere: {radius: 0.5}}}")
    recipe = load_recipe(write_recipe(tmp_path, text))
    for index in range(10):
        camera = sample(recipe, index).camera
        pose = np.asarray(camera.world_from_camera)
        assert camera.focus_distance == pytest.approx(np.linalg.norm(pose[:3, 3] - [0, 0, 0.05]))
        assert 1.4 <= camera.fstop <= 4 and camera.exposure_s == 0.02
        assert np.linalg.norm(camera.velocity) == pytest.approx(0.5)


VISIBLE = """\
seed: 5
count: 8
render: {resolution: [64, 48], samples: 1}
camera: {fov_deg: 50, look_at: scene_center, distance: 0.9, elevation_deg: {uniform: [2, 20]}, azimuth_deg: {uniform: [0, 360]},
         visibility: {min_objects: 3, min_fraction: 0.8, max_tries: 100}}
placement: {area: [0.3, 0.3], min_gap: 0.0}
objects:
  - {category: ball, count: 4, asset: {primitive: sphere, radius: 0.05}}
"""


def test_visibility_constraint_resamples_the_camera_only(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, VISIBLE))
    free = recipe.model_copy(update={"camera": recipe.camera.model_copy(update={"visibility": None})})
    unconstrained = [sum(f is not None and f >= 0.8 for f in visible_fractions(sample(free, i).camera, sample(free, i).objects))
                     for i in range(recipe.count)]
    assert min(unconstrained) < 3, "the constraint must matter in this scene"
    for index in range(recipe.count):
        spec = sample(recipe, index)
        assert spec.objects == sample(free, index).objects  # only the camera is drawn again
        fractions = visible_fractions(spec.camera, spec.objects)
        assert sum(f is not None and f >= 0.8 for f in fractions) >= 3


def test_recipes_survive_the_json_round_trip_of_dataset_json(tmp_path):
    """Stores keep recipes as JSON: read back from that JSON (files listed again from the recipe's
    folder), a recipe is the same and samples the same scenes."""
    extra = CAMERA.replace("LOOK", "all_objects, roll_deg: 3, dof: {fstop: 2, focus: 1.5}, "
                           "motion_blur: {velocity: {uniform_box: {low: [0, 0, 0], high: [1, 1, 0]}}}")
    for recipe in (load_recipe(ROOT / "examples" / "studio.yaml"), load_recipe(write_recipe(tmp_path, LIGHTS)),
                   load_recipe(write_recipe(tmp_path, extra, "extra.yaml"))):
        again = recipe_from_dict(json.loads(json.dumps(recipe.model_dump(mode="json"))), base_dir=recipe._base_dir)
        assert again.model_dump() == recipe.model_dump() and sample(again, 1) == sample(recipe, 1)


def test_distractors_hide_objects_in_the_visibility_estimate(tmp_path):
    """A flat distractor stacked on a ball, seen from straight above, covers it entirely."""
    recipe = load_recipe(write_recipe(tmp_path, """\
        render: {resolution: [64, 48]}
        camera: {look_at: [0, 0, 0], distance: 1.5, elevation_deg: 90}
        placement: {area: [0.01, 0.01]}
        objects:
          - {category: ball, asset: {primitive: sphere, radius: 0.05}}
          - {category: lid, distractor: true, place_on: ball, asset: {primitive: box, extents: [0.3, 0.3, 0.01]}}
        """))
    spec = sample(recipe, 0)
    assert len(spec.objects) == 1 and [p.name for p in spec.props] == ["lid"]
    assert visible_fractions(spec.camera, spec.objects) == [1.0]
    assert visible_fractions(spec.camera, spec.objects, spec.props) == [0.0]
