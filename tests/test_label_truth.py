"""Every label against geometry computed here by hand: a cube and a sphere at known poses.

The camera stands at (0, -2, 0.3) looking along +Y, so a cube face at y = -0.1 is exactly
1.9 m away in planar depth, and camera-frame quantities have closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_specs
from sceneforge.scenes.recipe import RenderSettings
from sceneforge.scenes.sampling import look_at
from sceneforge.scenes.spec import (
    AssetRef,
    CameraSpec,
    LightSpec,
    MaterialSpec,
    ObjectSpec,
    RenderSpec,
    SceneSpec,
)

W, H = 160, 120
F = (W / 2) / math.tan(math.radians(15))
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
EYE = np.array([0.0, -2.0, 0.3])
WORLD_FROM_CAMERA = look_at(EYE, np.array([0.0, 0.0, 0.3]))
CAMERA_FROM_WORLD = np.linalg.inv(WORLD_FROM_CAMERA)
RED = MaterialSpec(base_color=(0.8, 0.2, 0.2), roughness=0.5, metallic=0.0)


def cube(instance_id: int, size: float, centre) -> ObjectSpec:
    return _object(instance_id, 1, "box", AssetRef.primitive_asset("box", {"extents": (size,) * 3}), centre, size / 2)


def ball(instance_id: int, radius: float, centre) -> ObjectSpec:
    return _object(instance_id, 2, "ball", AssetRef.primitive_asset("sphere", {"radius": radius}), centre, radius)


def _object(instance_id, category_id, category, asset, centre, half_height) -> ObjectSpec:
    pose = np.eye(4)
    pose[:3, 3] = np.asarray(centre) - [0, 0, half_height]  # primitives stand on their origin
    return ObjectSpec(instance_id=instance_id, category_id=category_id, category=category, asset=asset,
                      world_from_object=tuple(map(tuple, pose)), material=RED)


def scene(index: int, objects: list[ObjectSpec]) -> SceneSpec:
    camera = CameraSpec(K=tuple(map(tuple, K)), world_from_camera=tuple(map(tuple, WORLD_FROM_CAMERA)),
                        width=W, height=H, clip_start=0.01, clip_end=100.0)
    straight_down = np.diag([1.0, -1.0, -1.0, 1.0])  # the light's +Z (where it shines) is world -Z
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, straight_down)), size=0.5)
    settings = RenderSettings(samples=16, albedo=True).model_dump(exclude={"resolution"})
    return SceneSpec(index=index, scene_index=index, seed=index, camera=camera, objects=objects, lights=[sun],
                     ground=None, background_color=(0.1, 0.1, 0.1), background_strength=1.0,
                     render=RenderSpec(**settings, noise_seed=index))


FAR_DEPTH = 2.6  # the occluded cube's front face
FAR_SIZE = 0.2 * FAR_DEPTH / 1.9  # projects to the same size as the near cube
SCENES = [
    scene(0, [cube(1, 0.2, (0.0, 0.0, 0.3)), ball(2, 0.1, (0.3, 0.0, 0.3))]),
    # The far cube's projection starts at the near cube's projected centre: half of it is hidden.
    scene(1, [cube(1, 0.2, (0.0, 0.0, 0.3)), cube(2, FAR_SIZE, (FAR_SIZE / 2, FAR_DEPTH - 2 + FAR_SIZE / 2, 0.3))]),
    # A ball whose projected centre lies on the right image border: half of it is outside.
    scene(2, [ball(1, 0.1, ((W - 0.5 - K[0, 2]) * 1.9 / F, -0.1, 0.3))]),
]


@pytest.fixture(scope="module")
def analytic(tmp_path_factory):
    store = DatasetStore.open_for_writing(
        tmp_path_factory.mktemp("analytic") / "out", recipe={}, recipe_hash="analytic",
        categories=["box", "ball"], resolution=(W, H), requested=len(SCENES), albedo=True,
    )
    render_specs(store, SCENES)
    return store, {r["index"]: r for r in store.records()}


def pixel_rays() -> np.ndarray:
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    return np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # camera frame, z = 1


def sphere_truth(centre_world, radius):
    """Planar depth (inf = miss) and camera-frame unit normals of a sphere along every pixel ray."""
    c = CAMERA_FROM_WORLD[:3, :3] @ centre_world + CAMERA_FROM_WORLD[:3, 3]
    d = pixel_rays()
    dd, dc = np.einsum("hwi,hwi->hw", d, d), d @ c
    disc = dc**2 - dd * (c @ c - radius**2)
    t = np.where(disc >= 0, (dc - np.sqrt(np.maximum(disc, 0))) / dd, np.inf)
    normals = (t[..., None] * d - c) / radius
    return t, normals


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def mask_centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_cube_face_depth_distance_normals_and_mask(analytic):
    store, records = analytic
    record = records[0]
    instance = store.read_instance(record)
    depth, distance, normals = store.read_depth(record), store.read_distance(record), store.read_normals(record)
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    half = F * 0.1 / 1.9
    face = (np.abs(u - K[0, 2]) < half) & (np.abs(v - K[1, 2]) < half)
    cube_mask = instance == 1
    assert iou(cube_mask, face) >= 0.97
    assert np.allclose(depth[face], 1.9, rtol=1e-4)
    assert np.allclose(distance[face], 1.9 * np.linalg.norm(pixel_rays()[face], axis=-1), rtol=1e-4)
    angle = np.degrees(np.arccos(np.clip(normals[face] @ np.array([0, 0, -1.0]), -1, 1)))
    assert angle.max() <= 0.5
    # Depth and instance come from the same pixel-centre ray: background is exactly "no hit".
    assert np.array_equal(np.isinf(depth), instance == 0)
    assert np.all(np.isinf(distance[instance == 0]))


def test_sphere_depth_distance_normals_and_mask(analytic):
    store, records = analytic
    record = records[0]
    t, expected_normals = sphere_truth(np.array([0.3, 0.0, 0.3]), 0.1)
    sphere_mask = store.read_instance(record) == 2
    assert iou(sphere_mask, np.isfinite(t)) >= 0.95
    rays = pixel_rays()
    facing = np.isfinite(t) & sphere_mask
    facing &= -np.einsum("hwi,hwi->hw", expected_normals, rays / np.linalg.norm(rays, axis=-1, keepdims=True)) > 0.3
    depth, distance, normals = store.read_depth(record), store.read_distance(record), store.read_normals(record)
    assert np.abs(depth[facing] - t[facing]).max() <= 1e-3  # the mesh is an icosphere, not a sphere
    assert np.abs(distance[facing] - t[facing] * np.linalg.norm(rays[facing], axis=-1)).max() <= 1e-3
    angle = np.degrees(np.arccos(np.clip(np.einsum("ni,ni->n", normals[facing], expected_normals[facing]), -1, 1)))
    assert np.median(angle) <= 0.5 and angle.max() <= 2.0


def test_projected_centres_and_boxes(analytic):
    store, records = analytic
    record = records[0]
    instance = store.read_instance(record)
    by_id = {o["instance_id"]: o for o in record["objects"]}
    for obj in by_id.values():
        assert np.allclose(obj["center_image"], mask_centroid(instance == obj["instance_id"]), atol=0.5)
    cube_obj = by_id[1]
    assert np.allclose(cube_obj["center_image"], K[:2, 2], atol=1e-9)
    corners = np.array(cube_obj["bbox3d"]["corners_world"])
    assert np.allclose(np.sort(np.unique(corners[:, 0])), [-0.1, 0.1]) and np.allclose(np.unique(corners[:, 2]), [0.2, 0.4])
    assert cube_obj["bbox3d"]["size"] == pytest.approx([0.2, 0.2, 0.2])
    # The front face's projected corners bound the mask, to within the pixel-centre convention.
    front = np.array([p for p, c in zip(cube_obj["bbox3d"]["corners_image"], corners) if c[1] < 0])
    x, y, w, h = cube_obj["bbox_xywh"]
    assert front[:, 0].min() == pytest.approx(x - 0.5, abs=1.0) and front[:, 0].max() == pytest.approx(x + w - 0.5, abs=1.0)
    assert front[:, 1].min() == pytest.approx(y - 0.5, abs=1.0) and front[:, 1].max() == pytest.approx(y + h - 0.5, abs=1.0)
    for obj in by_id.values():
        expected = CAMERA_FROM_WORLD @ np.asarray(obj["world_from_object"])
        assert np.allclose(obj["camera_from_object"], expected)
        assert obj["visibility"] == pytest.approx(1.0, abs=0.02) and obj["truncation"] == 0.0
        lo, hi = obj["depth_range"]
        assert 1.79 <= lo <= hi <= 2.01


def test_half_occluded_cube_has_visibility_one_half(analytic):
    _, records = analytic
    near, far = sorted(records[1]["objects"], key=lambda o: o["instance_id"])
    assert near["visibility"] == pytest.approx(1.0, abs=0.02)
    assert far["visibility"] == pytest.approx(0.5, abs=0.04)
    assert far["unoccluded_pixels"] == pytest.approx(2 * far["visible_pixels"], rel=0.1)


def test_ball_on_the_image_border_is_half_truncated(analytic):
    _, records = analytic
    (obj,) = records[2]["objects"]
    assert obj["truncation"] == pytest.approx(0.5, abs=0.03)
    assert obj["visibility"] == pytest.approx(1.0, abs=0.02)
    assert obj["center_image"][0] == pytest.approx(W - 0.5, abs=1e-6)


def test_albedo_is_the_base_colour(analytic):
    store, records = analytic
    record = records[0]
    albedo = store.read_rgb(record, "albedo")
    interior = np.zeros((H, W), bool)
    interior[int(K[1, 2]) - 3:int(K[1, 2]) + 4, int(K[0, 2]) - 3:int(K[0, 2]) + 4] = True
    expected = [round(255 * (1.055 * c ** (1 / 2.4) - 0.055)) for c in RED.base_color]
    assert np.abs(albedo[interior].astype(int) - expected).max() <= 3
