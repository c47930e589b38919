"""Rendered lights, environments and camera effects against what geometry says they must show."""

from __future__ import annotations

import cv2
import numpy as np

from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import ROOT, write_recipe

HDRI = ROOT / "examples" / "assets" / "hdri" / "studio_small_03_256.hdr"


def render(tmp_path, text: str, name: str = "recipe"):
    """The store and its records of a recipe rendered into tmp_path."""
    store = render_dataset(load_recipe(write_recipe(tmp_path, text, f"{name}.yaml")), tmp_path / name).store
    return store, store.records()


def ground_points(record: dict) -> np.ndarray:
    """World points where each pixel's centre ray meets the ground z = 0."""
    K, pose = np.asarray(record["camera"]["K"]), np.asarray(record["camera"]["world_from_camera"])
    u, v = np.meshgrid(np.arange(record["camera"]["width"]), np.arange(record["camera"]["height"]))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T @ pose[:3, :3].T
    return pose[:3, 3] + rays * (-pose[2, 3] / rays[..., 2:])


def test_spot_light_lights_its_cone_only(tmp_path):
    # A 30 degree spot 2 m above the ground lights a disc of radius 2 tan(15 deg) = 0.536 m.
    store, (record,) = render(tmp_path, """\
        count: 1
        render: {resolution: [48, 48], samples: 4}
        camera: {fov_deg: 60, distance: 3, elevation_deg: 90}
        ground: {size: 20}
        background: {color: [0, 0, 0], strength: 0}
        lights: [{type: spot, energy: 300, position: [0.3, 0, 2], target: [0.3, 0, 0], spot_size_deg: 30, spot_blend: 0}]
        """)
    luminance = store.read_rgb(record).astype(float).mean(axis=-1)
    radius = np.linalg.norm(ground_points(record)[..., :2] - [0.3, 0.0], axis=-1)
    inside, outside = luminance[radius < 0.8 * 0.536], luminance[radius > 1.25 * 0.536]
    assert inside.size > 20 and outside.size > 200
    assert inside.min() > 60 and outside.max() < 3


def test_hdri_lights_an_empty_world_and_turns_about_z(tmp_path):
    text = f"""\
        count: 1
        render: {{resolution: [48, 32], samples: 2}}
        ground: null
        background: {{hdri: {HDRI}, rotation_deg: ANGLE}}
        camera: {{elevation_deg: 0, azimuth_deg: AZIMUTH}}
        """
    # Turning the environment by 90 degrees and the camera with it shows the same picture.
    store_a, (a,) = render(tmp_path, text.replace("ANGLE", "0").replace("AZIMUTH", "30"), "a")
    store_b, (b,) = render(tmp_path, text.replace("ANGLE", "90").replace("AZIMUTH", "120"), "b")
    store_c, (c,) = render(tmp_path, text.replace("ANGLE", "0").replace("AZIMUTH", "120"), "c")
    for store, record in ((store_a, a), (store_b, b), (store_c, c)):
        assert store.read_rgb(record).mean() > 5  # the environment shows ...
        assert np.isinf(store.read_depth(record)).all() and not store.read_instance(record).any()  # ... unlabeled
    same = np.abs(store_a.read_rgb(a).astype(int) - store_b.read_rgb(b)).mean()
    different = np.abs(store_a.read_rgb(a).astype(int) - store_c.read_rgb(c)).mean()
    assert same < 3 and different > 10


def test_backdrop_image_shows_behind_the_scene_only(tmp_path):
    backdrop = np.zeros((30, 40, 3), np.uint8)
    backdrop[:, :20] = (40, 200, 90)  # BGR: left half green-ish, right half black
    cv2.imwrite(str(tmp_path / "backdrop.png"), backdrop)
    # The backdrop is exposed with the scene: at EV 0 in the Standard view its pixels come back unchanged.
    store, (record,) = render(tmp_path, """\
        count: 1
        render: {resolution: [48, 36], samples: 2}
        camera: {distance: 0.8, elevation_deg: 20, exposure: {ev: 0}}
        ground: null
        objects: [{category: ball, asset: {primitive: sphere, radius: 0.12}, material: {color: [0.8, 0.1, 0.1]}}]
        placement: {area: [0.01, 0.01]}
        background: {image: backdrop.png, color: [1, 1, 1]}
        """)
    rgb, instance, depth = store.read_rgb(record), store.read_instance(record), store.read_depth(record)
    empty = instance == 0
    assert 0 < empty.mean() < 1 and np.array_equal(np.isinf(depth), empty)
    expected = cv2.resize(backdrop, (48, 36), interpolation=cv2.INTER_AREA)[..., ::-1]
    core = cv2.erode(empty.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # away from anti-aliased edges
    assert np.abs(rgb[core].astype(int) - expected[core]).max() <= 1
    assert rgb[instance == 1, 0].mean() > rgb[instance == 1, 2].mean() + 30  # the lit red ball, not the backdrop


PLANE = """\
count: 1
render: {resolution: [48, 36], samples: 4}
camera: {fov_deg: 60, distance: 1.7, elevation_deg: 35, BLUR}
ground: {size: 60}
lights: [{type: sun, energy: 2}]
"""


def test_motion_blur_moves_the_camera_during_the_exposure(tmp_path):
    # Rising at 1 m/s for 0.4 s, the camera goes from 0.2 m below to 0.2 m above its pose; the
    # second frame of the scene only moves the camera, which must carry its motion along.
    text = PLANE.replace("count: 1", "count: 2").replace(
        "BLUR", "azimuth_deg: {uniform: [0, 360]}, frames_per_scene: 2, motion_blur: {exposure_s: 0.4, velocity: [0, 0, 1]}")
    store, records = render(tmp_path, text)
    assert records[0]["camera"] != records[1]["camera"]
    for record in records:
        depth = store.read_depth(record)
        pose = np.asarray(record["camera"]["world_from_camera"])
        planar = (ground_points(record) - pose[:3, 3]) @ pose[:3, 2]
        height = pose[2, 3]
        low, high = planar * (height - 0.2) / height, planar * (height + 0.2) / height  # depth scales with height
        assert np.all(depth >= low * (1 - 1e-4)) and np.all(depth <= high * (1 + 1e-4))
        assert np.abs(depth / planar - 1).max() > 0.02  # the label rays really saw a moving camera


def test_depth_of_field_blurs_what_is_out_of_focus(tmp_path):
    text = """\
        count: 1
        render: {resolution: [64, 48], samples: 16, adaptive_threshold: 0}
        camera: {fov_deg: 40, distance: 1, elevation_deg: 90, exposure: {ev: 0}, DOF}
        ground: {size: 20, material: {color: [0.05, 0.05, 0.05]}}
        objects: [{category: box, asset: {primitive: box, extents: [0.2, 0.2, 0.05]}, material: {color: [0.9, 0.9, 0.9]}}]
        placement: {area: [0.01, 0.01], rotation: {yaw_deg: 0}}
        lights: [{type: sun, energy: 4, elevation_deg: 90}]
        """
    sharp_store, (sharp,) = render(tmp_path, text.replace(", DOF", ""), "sharp")
    focused_store, (focused,) = render(tmp_path, text.replace("DOF", "dof: {fstop: 0.05}"), "focused")
    blurred_store, (blurred,) = render(tmp_path, text.replace("DOF", "dof: {fstop: 0.05, focus: 0.2}"), "blurred")

    # One fixed EV (the clipping white box would make auto-exposure darken each render differently).
    def edge_strength(store, record) -> float:
        """The steepest step across the box's left and right edges, averaged over its middle rows."""
        profile = store.read_rgb(record).astype(float).mean(axis=-1)[18:30].mean(axis=0)
        return float(np.abs(np.diff(profile)).max())

    assert focused["camera"] == sharp["camera"]  # depth of field leaves K and the pose alone
    sharp_edge = edge_strength(sharp_store, sharp)
    assert sharp_edge > 50
    assert edge_strength(focused_store, focused) > 0.7 * sharp_edge
    assert edge_strength(blurred_store, blurred) < 0.3 * sharp_edge


def test_visibility_constraint_holds_in_the_rendered_labels(tmp_path):
    store, records = render(tmp_path, """\
        seed: 5
        count: 3
        render: {resolution: [64, 48], samples: 1}
        camera: {fov_deg: 50, look_at: scene_center, distance: 0.9, elevation_deg: {uniform: [2, 20]},
                 azimuth_deg: {uniform: [0, 360]}, visibility: {min_objects: 3, min_fraction: 0.8, max_tries: 100}}
        placement: {area: [0.3, 0.3], min_gap: 0.0}
        objects:
          - {category: ball, count: 4, asset: {primitive: sphere, radius: 0.05}}
        """)
    for record in records:
        # The estimate uses a coarser grid than the render: allow a little slack.
        assert sum((o["visibility"] or 0) >= 0.75 for o in record["objects"]) >= 3
