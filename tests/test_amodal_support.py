"""Amodal masks of objects standing on the ground, against analytic sphere silhouettes, and which
rays the labels cast for them: none for an object that nothing hides (its instance mask is its
whole silhouette), some for one that another object partly hides.

The camera stands at (0, -2, 0.6) looking down at (0, 0, 0.15). Sphere FREE stands alone on the
ground at the right; sphere NEAR, in front on the left, hides part of sphere FAR behind it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sceneforge.floor.frame import Passes
from sceneforge.labels import annotate
from sceneforge.labels.rle import decode_mask
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_specs
from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.recipe import RenderSettings
from sceneforge.scenes.sampling import look_at
from sceneforge.scenes.spec import AssetRef, CameraSpec, GroundSpec, LightSpec, MaterialSpec, ObjectSpec, RenderSpec, SceneSpec

from .test_amodal import boundary_band, iou

W, H = 64, 48
F = (W / 2) / math.tan(math.radians(20))
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
WORLD_FROM_CAMERA = look_at(np.array([0.0, -2.0, 0.6]), np.array([0.0, 0.0, 0.15]))
CAMERA_FROM_WORLD = np.linalg.inv(WORLD_FROM_CAMERA)
GREY = MaterialSpec(base_color=(0.6, 0.6, 0.6), roughness=0.5, metallic=0.0)
FREE, FAR, NEAR = 1, 2, 3
# Sphere centres and radii (world, metres) by instance id; each rests on the ground (z = 0).
SPHERES = {FREE: ((0.45, 0.0, 0.15), 0.15), FAR: ((-0.2, 0.25, 0.2), 0.2), NEAR: ((-0.2, -0.15, 0.1), 0.1)}


def spec() -> SceneSpec:
    camera = CameraSpec(K=tuple(map(tuple, K)), world_from_camera=tuple(map(tuple, WORLD_FROM_CAMERA)),
                        width=W, height=H, clip_start=0.01, clip_end=100.0)
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, np.diag([1.0, -1, -1, 1]))),
                    size=0.5)
    objects = []
    for instance_id, (centre, radius) in SPHERES.items():
        pose = np.eye(4)
        pose[:3, 3] = np.asarray(centre) - [0, 0, radius]  # primitives stand on their origin
        objects.append(ObjectSpec(instance_id=instance_id, category_id=1, category="ball",
                                  asset=AssetRef.primitive_asset("sphere", {"radius": radius}),
                                  world_from_object=tuple(map(tuple, pose)), material=GREY))
    settings = RenderSettings(samples=2).model_dump(exclude={"resolution"})
    return SceneSpec(index=0, scene_index=0, seed=0, camera=camera, objects=objects, lights=[sun],
                     ground=GroundSpec(size=20.0, material=GREY), background_color=(0.1, 0.1, 0.1),
                     background_strength=1.0, render=RenderSpec(**settings, noise_seed=0))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    store = DatasetStore.open_for_writing(tmp_path_factory.mktemp("support") / "out", recipe={}, recipe_hash="support",
                                          categories=["ball"], resolution=(W, H), requested=1)
    render_specs(store, [spec()])
    record = store.records()[0]
    return store, record, {o["instance_id"]: o for o in record["objects"]}


def analytic_disc(centre_world, radius: float) -> np.ndarray:
    """H x W bool: the pixels whose centre ray meets the sphere, from its centre and radius through K."""
    c = CAMERA_FROM_WORLD[:3, :3] @ np.asarray(centre_world) + CAMERA_FROM_WORLD[:3, 3]
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    dc, dd = d @ c, np.einsum("hwi,hwi->hw", d, d)
    return (dc**2 - dd * (c @ c - radius**2) >= 0) & (dc > 0)


def test_amodal_masks_on_the_ground_are_the_analytic_silhouettes(rendered):
    _, _, objects = rendered
    for instance_id, (centre, radius) in SPHERES.items():
        amodal, truth = decode_mask(objects[instance_id]["amodal_mask"]), analytic_disc(centre, radius)
        assert iou(amodal, truth) >= 0.95, instance_id
        assert not (amodal ^ truth)[~boundary_band(truth)].any(), instance_id
        assert objects[instance_id]["truncation"] == 0.0


def test_an_object_nothing_hides_has_its_visible_mask_as_amodal_mask(rendered):
    store, record, objects = rendered
    free = objects[FREE]
    assert np.array_equal(decode_mask(free["amodal_mask"]), store.read_instance(record) == FREE)
    assert free["visibility"] == 1.0 and free["visible_pixels"] == free["unoccluded_pixels"] > 50


def test_a_partly_hidden_object_keeps_its_hidden_part(rendered):
    store, record, objects = rendered
    instance = store.read_instance(record)
    far = decode_mask(objects[FAR]["amodal_mask"])
    hidden = far & (instance != FAR)
    assert hidden.sum() >= 10 and np.all(instance[hidden] == NEAR)
    assert objects[FAR]["visibility"] < 0.9


def test_rays_are_cast_only_where_something_nearer_may_hide_an_object(rendered, monkeypatch):
    store, record, _ = rendered
    scene = spec()
    passes = Passes(rgb=store.read_rgb(record), depth=store.read_depth(record), normals=None,
                    instance=store.read_instance(record))
    cast = {}
    first_hit_depth = annotate.first_hit_depth

    def counted(mesh, camera_from_object, rays):
        depth = first_hit_depth(mesh, camera_from_object, rays)
        cast.setdefault(id(mesh), []).append(len(rays))
        return depth

    monkeypatch.setattr(annotate, "first_hit_depth", counted)
    records = {r["instance_id"]: r for r in annotate.object_records(scene, passes)}
    meshes = {obj.instance_id: id(asset_mesh(obj.asset)) for obj in scene.objects}
    # Neither the ground before them nor anything else hides FREE or NEAR: no ray; FAR: only the
    # pixels NEAR covers within its box, far fewer than its silhouette.
    assert set(cast) == {meshes[FAR]}
    assert 0 < sum(cast[meshes[FAR]]) < records[FAR]["unoccluded_pixels"]
    assert iou(decode_mask(records[FAR]["amodal_mask"]), analytic_disc(*SPHERES[FAR])) >= 0.95
