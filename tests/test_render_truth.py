"""Rendered labels against geometry computed by hand: a ground plane seen from known poses."""

from __future__ import annotations

import numpy as np
import pytest

from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.spec import SceneSpec

from .helpers import write_recipe

PLANE_RECIPE = """\
seed: 1
count: 2
render: {{resolution: [48, 36], samples: 2}}
camera: {{fov_deg: 60, look_at: [0.1, -0.2, 0], distance: 1.7, elevation_deg: {elevation}, azimuth_deg: {{uniform: [0, 360]}}}}
ground: {{size: 60}}
lights: [{{type: sun, energy: 2}}]
"""


def plane_truth(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Planar depth of the ground z = 0 at every pixel centre, and its normal in the camera frame."""
    K = np.asarray(record["camera"]["K"])
    pose = np.asarray(record["camera"]["world_from_camera"])
    u, v = np.meshgrid(np.arange(record["camera"]["width"]), np.arange(record["camera"]["height"]))
    rays_camera = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # z = 1 per ray
    rays_world = rays_camera @ pose[:3, :3].T
    depth = -pose[2, 3] / rays_world[..., 2]  # ray parameter = planar depth since ray z is 1
    return depth, pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])


@pytest.mark.parametrize(("elevation", "lens"), [
    (90, ""),
    (35, ""),
    (35, "intrinsics: {fx: 40, fy: 52, cx: 20.5, cy: 21}"),  # non-square pixels, off-centre principal point
    (35, "intrinsics: {fx: 45, fy: 36, cx: 26, cy: 15.5}"),
])
def test_plane_depth_and_normals(tmp_path, elevation, lens):
    text = PLANE_RECIPE.format(elevation=elevation)
    if lens:
        text = text.replace("fov_deg: 60, ", lens + ", ")
    recipe = load_recipe(write_recipe(tmp_path, text))
    store = render_dataset(recipe, tmp_path / "out").store
    for record in store.records():
        expected_depth, expected_normal = plane_truth(record)
        depth, normals = store.read_depth(record), store.read_normals(record)
        assert depth.dtype == np.float32 and depth.shape == (36, 48)
        assert np.all(expected_depth > 0), "the plane fills the view"
        assert np.max(np.abs(depth - expected_depth) / expected_depth) <= 1e-4
        angle = np.degrees(np.arccos(np.clip(normals @ expected_normal, -1.0, 1.0)))
        assert angle.max() <= 0.5
        if elevation == 90 and not lens:
            assert np.allclose(expected_normal, [0, 0, -1])
            # Planar, not Euclidean: the corners are much farther along their rays than 1.7 m.
            assert depth[0, 0] == pytest.approx(1.7, rel=1e-4)
        assert not store.read_instance(record).any(), "the ground is not a labeled object"


WALLS_RECIPE = """\
seed: 3
count: 2
render: {resolution: [40, 30], samples: 1}
camera: {fov_deg: 50, look_at: [0, 0, 0.6], distance: 0.5, elevation_deg: 0, azimuth_deg: {choice: [0, 90, 180, 270]}}
ground: {size: 2, walls: {height: 2, material: {color: [0.7, 0.6, 0.5]}}}
lights: [{type: sun, energy: 2}]
"""


def test_walls_stand_on_the_ground_edges_at_their_true_distance(tmp_path):
    store = render_dataset(load_recipe(write_recipe(tmp_path, WALLS_RECIPE)), tmp_path / "out").store
    for record in store.records():
        spec = SceneSpec.from_json(store.path(record, "scene").read_text())
        walls = [p for p in spec.props if p.name == "wall"]
        assert len(walls) == 4
        inner = sorted(abs(np.asarray(p.world_from_object)[i, 3]) - p.asset.params["extents"][i] / 2
                       for p in walls for i in (0, 1) if np.asarray(p.world_from_object)[i, 3] != 0)
        assert inner == pytest.approx([1.0] * 4)  # inner faces on the ground's edges
        # Looking horizontally along an axis from 0.5 m before the centre: the far wall is a plane
        # 1.5 m away, square to the view, so its planar depth is 1.5 at every pixel it fills.
        depth = store.read_depth(record)
        assert np.abs(depth - 1.5).max() <= 1.5e-4
        assert not store.read_instance(record).any(), "walls are not labeled"
