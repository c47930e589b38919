"""Scene sampling: pure, deterministic, order-independent, and physically sensible."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.distributions import Choice, LogUniform, Normal, RandInt, Uniform
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import look_at, sample, scene_seed
from sceneforge.scenes.spec import SPEC_FORMAT, ExposureSpec, SceneSpec

from .helpers import ROOT


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(ROOT / "examples" / "tabletop.yaml")


def test_same_index_gives_identical_bytes(recipe):
    assert sample(recipe, 5).to_json() == sample(recipe, 5).to_json()


def test_order_independent(recipe):
    forward = [sample(recipe, i).to_json() for i in range(6)]
    backward = [sample(recipe, i).to_json() for i in reversed(range(6))][::-1]
    assert forward == backward
    assert len(set(forward)) == 6


def test_spec_round_trips_through_json(recipe):
    spec = sample(recipe, 2)
    assert SceneSpec.from_json(spec.to_json()) == spec


def test_a_format_1_spec_is_read_with_its_lights_in_the_one_axis_convention(recipe):
    """Format 1 posed lights as Blender does (shining along local -Z); format 2 as cameras are."""
    document = json.loads(sample(recipe, 0).to_json())
    blender_sun = [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]]  # shines down
    document["format"] = "sceneforge.scenespec/1"
    document["lights"] = [{**document["lights"][0], "world_from_light": blender_sun}]
    document["render"]["cycles_seed"] = document["render"].pop("noise_seed")
    spec = SceneSpec.from_json(json.dumps(document))
    pose = np.asarray(spec.lights[0].world_from_light)
    np.testing.assert_array_equal(pose[:3, 2], [0, 0, -1])  # +Z, where it shines, is straight down
    np.testing.assert_array_equal(pose[:3, 3], [0.5, 0, 3])
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert spec.format == SPEC_FORMAT and spec.render.noise_seed == document["render"]["cycles_seed"]


def test_a_format_2_spec_is_read_as_a_still(recipe):
    """Format 2 had no sequences: its specs read unchanged, as stills."""
    document = json.loads(sample(recipe, 0).to_json())
    del document["sequence"]
    document["format"] = "sceneforge.scenespec/2"
    spec = SceneSpec.from_json(json.dumps(document))
    assert spec.format == SPEC_FORMAT and spec.sequence is None
    assert spec == sample(recipe, 0)


def test_a_format_3_spec_is_read_as_one_ideal_pinhole_camera(recipe):
    """Format 3 had no rigs, lenses, exposure, sensors or keypoints: their defaults read it (an
    ideal pinhole developed at EV 0 in the Standard view, as format 3 frames were)."""
    document = json.loads(sample(recipe, 0).to_json())
    for field in ("name", "stereo_baseline", "lens", "exposure", "sensor", "depth_sensor"):
        document["camera"].pop(field, None)
    for obj in document["objects"]:
        obj.pop("keypoints")
    document.pop("rig")
    document["format"] = "sceneforge.scenespec/3"
    spec, current = SceneSpec.from_json(json.dumps(document)), sample(recipe, 0)
    assert spec.format == SPEC_FORMAT and all(obj.keypoints == {} for obj in spec.objects)
    assert spec.camera.exposure == ExposureSpec()
    assert spec == current.model_copy(update={
        "objects": [o.model_copy(update={"keypoints": {}}) for o in current.objects],
        "camera": current.camera.model_copy(update={"exposure": ExposureSpec()}),
    })


def test_a_format_4_spec_reads_with_its_materials_unchanged_and_no_behind_pass(recipe):
    """Format 4 had no material randomisation, transparency or behind pass: absent, they are None
    (the asset's own values) and off, which is what format 4 frames were rendered with."""
    current = sample(recipe, 0)
    document = json.loads(current.to_json())
    for obj in document["objects"]:
        for field in ("roughness_scale", "hue_shift_deg", "transmission", "ior", "alpha", "alpha_mode",
                      "alpha_cutoff", "opacity_texture"):
            del obj["material"][field]
    del document["render"]["behind"]
    document["format"] = "sceneforge.scenespec/4"
    spec = SceneSpec.from_json(json.dumps(document))
    assert spec.format == SPEC_FORMAT and spec == current and not spec.render.behind


@pytest.mark.parametrize("found", ["sceneforge.scenespec/9", None])
def test_a_spec_of_an_unknown_format_is_refused_not_misread(recipe, found):
    document = json.loads(sample(recipe, 0).to_json())
    document["format"] = found
    with pytest.raises(ValueError, match=f"unsupported SceneSpec format {found!r}"):
        SceneSpec.from_json(json.dumps(document))


def test_seed_depends_on_recipe_seed_and_index():
    seeds = {scene_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**63 for s in seeds)


def test_no_global_rng_is_used_or_changed(recipe):
    np_state, py_state = np.random.get_state(), random.getstate()
    first = sample(recipe, 3).to_json()
    np.random.seed(123)
    random.seed(123)
    assert sample(recipe, 3).to_json() == first  # a reseeded global RNG changes nothing
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.mark.parametrize("rotation", ["yaw", "so3"])
def test_objects_stand_on_the_ground_at_positions_inside_the_area(recipe, rotation):
    """(That no two meshes intersect is tested in test_placement.py.)"""
    recipe = recipe.model_copy(update={"placement": recipe.placement.model_copy(update={"rotation": rotation})})
    half = np.asarray(recipe.placement.area) / 2
    for index in range(30):
        for obj in sample(recipe, index).objects:
            pose = np.asarray(obj.world_from_object)
            vertices = asset_mesh(obj.asset).vertices @ pose[:3, :3].T + pose[:3, 3]
            assert vertices[:, 2].min() == pytest.approx(0.0, abs=1e-9)
            assert np.all(np.abs(pose[:2, 3]) <= half)


def test_camera_looks_at_target_with_opencv_axes(recipe):
    spec = sample(recipe, 0)
    pose = np.asarray(spec.camera.world_from_camera)
    target = np.array([0, 0, 0.05])
    forward = target - pose[:3, 3]
    assert np.allclose(pose[:3, 2], forward / np.linalg.norm(forward))
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3))
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)
    assert pose[2, 1] < 0  # image "down" points down in the world
    assert np.asarray(spec.camera.K)[0, 2] == (spec.camera.width - 1) / 2


def test_look_at_straight_down_is_well_defined():
    pose = look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3))
    assert np.allclose(pose[:3, 2], [0, 0, -1]) and np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3))


@pytest.mark.parametrize(
    ("dist", "mean", "std"),
    [
        (Uniform(uniform=(2.0, 4.0)), 3.0, 2 / math.sqrt(12)),
        (Normal(normal=(1.0, 0.5)), 1.0, 0.5),
        (RandInt(randint=(1, 6)), 3.5, math.sqrt(35 / 12)),
        (Choice(choice=[0.0, 1.0], weights=[3, 1]), 0.25, math.sqrt(0.25 * 0.75)),
        (LogUniform(loguniform=(1.0, math.e**2)), (math.e**2 - 1) / 2, None),
    ],
)
def test_distribution_statistics(dist, mean, std):
    rng = np.random.default_rng(0)
    values = np.array([dist.draw(rng) for _ in range(20000)])
    assert values.mean() == pytest.approx(mean, rel=0.03)
    if std is not None:
        assert values.std() == pytest.approx(std, rel=0.03)


def test_normal_clip_bounds_values():
    rng = np.random.default_rng(1)
    values = [Normal(normal=(0.0, 1.0), clip=(-0.5, 0.5)).draw(rng) for _ in range(2000)]
    assert min(values) == -0.5 and max(values) == 0.5


def test_so3_rotations_are_uniform_and_yaw_keeps_objects_upright(recipe):
    roomy = recipe.placement.model_copy(update={"rotation": "so3", "area": (2.0, 2.0)})
    so3 = recipe.model_copy(update={"placement": roomy})
    rotations = np.array([np.asarray(o.world_from_object)[:3, :3] for i in range(400) for o in sample(so3, i).objects])
    assert len(rotations) > 1000
    assert np.allclose(np.einsum("nij,nkj->nik", rotations, rotations), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    assert np.abs(rotations.mean(axis=0)).max() < 0.06  # E[R] = 0 for the uniform distribution on SO(3)
    upright = [np.asarray(o.world_from_object)[:3, 2] for i in range(20) for o in sample(recipe, i).objects]
    assert np.allclose(upright, [0.0, 0.0, 1.0])
