"""Sequences: motion, optical flow, point tracks and their exports, checked against geometry
computed here independently (reprojection of the rendered depth through the recorded poses, a
camera translating over a plane, an analytic spinning sphere) and against the next frame's render."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sceneforge.floor.errors import UserError
from sceneforge.labels.export import export
from sceneforge.floor.frame import BACKWARD_VALID, FORWARD_VALID
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset, render_specs
from sceneforge.scenes import placement, sampling
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

from .helpers import run_cli, write_recipe

THROWN = """\
seed: 5
count: 6
render: {resolution: [64, 48], samples: 2}
sequence: {frames: 3, fps: 10, physics: true, point_tracks: 64}
camera:
  fov_deg: 50
  look_at: [0, 0, 0.1]
  distance: 1.6
  elevation_deg: 35
  trajectory: {type: orbit, degrees_per_second: 60, shake: {amplitude_deg: 0.5, amplitude_m: 0.005}}
  motion_blur: {exposure_s: 0.02}
placement: {area: [0.6, 0.6], physics: {drop_height: 0.3}}
ground: {size: 6}
objects:
  - category: box
    count: 2
    asset: {primitive: box, extents: [0.15, 0.12, 0.1]}
    material: {color: [0.8, 0.2, 0.1]}
    motion: {velocity: [0.5, 0, 1], angular_velocity_deg: [0, 0, 120]}
  - category: ball
    asset: {primitive: sphere, radius: 0.07}
    material: {color: [0.1, 0.3, 0.9]}
  - category: junk
    distractor: true
    asset: {primitive: cylinder, radius: 0.05, height: 0.1}
    motion: {velocity: [-0.5, 0, 1]}
lights:
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
"""


@pytest.fixture(scope="module")
def thrown(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("thrown")
    recipe = load_recipe(write_recipe(folder, THROWN))
    return recipe, render_dataset(recipe, folder / "out").store


def _rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    vs, us = np.mgrid[0:height, 0:width]
    return np.stack([us, vs, np.ones_like(us)], axis=-1) @ np.linalg.inv(K).T


def _project(K: np.ndarray, world_from_camera: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    camera = (points - world_from_camera[:3, 3]) @ world_from_camera[:3, :3]
    return (camera @ K.T)[:, :2] / camera[:, 2:3], camera[:, 2]


def _interior(instance: np.ndarray) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood shows one id (no silhouette edge)."""
    padded = np.pad(instance, 1, mode="edge")
    same = np.ones(instance.shape, bool)
    for dy in range(3):
        for dx in range(3):
            same &= padded[dy:dy + instance.shape[0], dx:dx + instance.shape[1]] == instance
    return same


def test_forward_flow_is_the_depth_reprojected_through_the_recorded_poses(thrown):
    _, store = thrown
    records = store.records()
    errors, agree, checked = [], 0, 0
    for record, following in zip(records, records[1:]):
        if following["sequence"]["frame"] != record["sequence"]["frame"] + 1:
            continue
        K = np.asarray(record["camera"]["K"])
        depth, instance = store.read_depth(record), store.read_instance(record)
        flow, valid = store.read_flow(record, "flow_forward"), store.read_flow_valid(record) & FORWARD_VALID > 0
        height, width = depth.shape
        points = (_rays(K, height, width) * depth[..., None]).reshape(-1, 3)
        pose, next_pose = (np.asarray(r["camera"]["world_from_camera"]) for r in (record, following))
        world = points @ pose[:3, :3].T + pose[:3, 3]
        moved = world.copy()
        ids = instance.ravel()
        for obj, later in zip(record["objects"], following["objects"]):
            at = ids == obj["instance_id"]
            motion = np.asarray(later["world_from_object"]) @ np.linalg.inv(np.asarray(obj["world_from_object"]))
            moved[at] = world[at] @ motion[:3, :3].T + motion[:3, 3]
        ground = (ids == 0) & (np.abs(world[:, 2]) < 1e-3)  # the static ground; the thrown distractor is left out
        chosen = (_interior(instance).ravel() & np.isfinite(depth.ravel()) & valid.ravel() & ((ids > 0) | ground))
        expected, z = _project(K, next_pose, moved[chosen])
        pixels = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).reshape(-1, 2)[chosen]
        errors.append(np.linalg.norm(flow.reshape(-1, 2)[chosen] - (expected - pixels), axis=1))
        # The point lands on the same object in the next frame's own render, at the depth it has there.
        landing = np.round(expected).astype(int)
        next_depth, next_instance = store.read_depth(following), store.read_instance(following)
        same = next_instance[landing[:, 1], landing[:, 0]] == ids[chosen]
        near = np.abs(next_depth[landing[:, 1], landing[:, 0]] - z) < 0.03 * z
        agree += int((same & near).sum())
        checked += len(z)
    errors = np.concatenate(errors)
    assert checked > 2000
    assert np.median(errors) <= 0.01 and np.percentile(errors, 99) < 0.05
    assert agree / checked > 0.95


def test_backward_flow_inverts_forward_flow(thrown):
    _, store = thrown
    records = store.records()
    first, second = records[0], records[1]
    forward = store.read_flow(first, "flow_forward")
    backward = store.read_flow(second, "flow_backward")
    valid = (store.read_flow_valid(first) & FORWARD_VALID > 0) & _interior(store.read_instance(first))
    vs, us = np.nonzero(valid)
    target = np.round(np.stack([us, vs], axis=-1) + forward[vs, us]).astype(int)
    back_valid = store.read_flow_valid(second)[target[:, 1], target[:, 0]] & BACKWARD_VALID > 0
    round_trip = forward[vs, us] + backward[target[:, 1], target[:, 0]]
    # Nearest-pixel lookup: the round trip closes to within the flow's change across one pixel.
    assert back_valid.mean() > 0.9
    assert np.median(np.linalg.norm(round_trip[back_valid], axis=1)) < 0.3
    assert not (store.read_flow_valid(first) & BACKWARD_VALID).any()  # no frame before the first
    assert not (store.read_flow_valid(records[2]) & FORWARD_VALID).any()  # nor after the last


def _rendered(tmp_path, text: str) -> DatasetStore:
    return render_dataset(load_recipe(write_recipe(tmp_path, text)), tmp_path / "out").store


def test_flow_of_a_camera_translating_over_a_plane(tmp_path):
    store = _rendered(tmp_path, """\
        count: 2
        render: {resolution: [48, 40], samples: 1}
        sequence: {frames: 2, fps: 10, point_tracks: 0}
        camera:
          look_at: [0, 0, 0]
          distance: 2
          elevation_deg: 90
          trajectory: {type: line, velocity: [0.4, 0.2, 0], look: fixed}
        ground: {size: 20}
        """)
    first, second = store.records()
    K, pose = np.asarray(first["camera"]["K"]), np.asarray(first["camera"]["world_from_camera"])
    step = np.asarray(second["camera"]["world_from_camera"])[:3, 3] - pose[:3, 3]
    np.testing.assert_allclose(step, [0.04, 0.02, 0.0], atol=1e-12)
    # A static point seen from a camera moved by `step`: it moves by -R^T step in the camera frame,
    # at planar depth 2 (the plane faces the camera).
    shift = -(pose[:3, :3].T @ step)
    expected = np.array([K[0, 0] * shift[0] / 2, K[1, 1] * shift[1] / 2])
    flow = store.read_flow(first, "flow_forward")
    valid = store.read_flow_valid(first) & FORWARD_VALID > 0
    assert np.median(np.linalg.norm(flow[valid] - expected, axis=-1)) <= 0.01
    # Valid exactly where the moved point stays in the image (pixels within 0.05 px of the edge left out).
    vs, us = np.mgrid[0:40, 0:48]
    lands_u, lands_v = us + expected[0], vs + expected[1]
    inside = (lands_u >= -0.45) & (lands_u < 47.45) & (lands_v >= -0.45) & (lands_v < 39.45)
    outside = (lands_u < -0.55) | (lands_u >= 47.55) | (lands_v < -0.55) | (lands_v >= 39.55)
    assert valid[inside].all() and not valid[outside].any() and outside.any()


def test_flow_of_a_sphere_spinning_in_place(tmp_path):
    store = _rendered(tmp_path, """\
        count: 2
        render: {resolution: [64, 64], samples: 1}
        sequence: {frames: 2, fps: 10, point_tracks: 0}
        camera: {fov_deg: 40, look_at: [0, 0, 0.3], distance: 1.5, elevation_deg: 20, azimuth_deg: 30}
        ground: null
        placement: {area: [0.01, 0.01]}
        objects:
          - category: ball
            asset: {primitive: sphere, radius: 0.3}
            motion: {angular_velocity_deg: [0, 0, 90]}
        """)
    first = store.records()[0]
    K, pose = np.asarray(first["camera"]["K"]), np.asarray(first["camera"]["world_from_camera"])
    world_from_object = np.asarray(first["objects"][0]["world_from_object"])
    centre = world_from_object[:3, :3] @ first["objects"][0]["bbox3d"]["center_object"] + world_from_object[:3, 3]
    eye = pose[:3, 3]
    directions = (_rays(K, 64, 64) @ pose[:3, :3].T).reshape(-1, 3)
    # Ray-sphere intersection, nearest root.
    a = np.einsum("ij,ij->i", directions, directions)
    b = 2 * directions @ (eye - centre)
    c = np.sum((eye - centre) ** 2) - 0.3**2
    disc = b * b - 4 * a * c
    offset = eye - centre
    miss_distance = np.sqrt(np.sum(offset**2) - (directions @ offset) ** 2 / a)  # of the ray from the centre
    hits = miss_distance < 0.85 * 0.3  # well inside the silhouette, away from the limb
    s = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    surface = eye + s[:, None] * directions
    angle = math.radians(90) / 10
    spin = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    moved = centre + (surface - centre) @ spin.T
    expected, _ = _project(K, pose, moved)
    pixels = np.stack(np.meshgrid(np.arange(64), np.arange(64)), axis=-1).reshape(-1, 2)
    flow = store.read_flow(first, "flow_forward").reshape(-1, 2)
    valid = (store.read_flow_valid(first) & FORWARD_VALID > 0).ravel()
    facing = np.einsum("ij,ij->i", moved - centre, eye - moved) / (0.3 * np.linalg.norm(eye - moved, axis=1))
    front, back = hits & (facing > 0.05), hits & (facing < -0.05)
    assert front.sum() > 500
    error = np.linalg.norm(flow[front] - (expected[front] - pixels[front]), axis=1)
    assert np.median(error) <= 0.01
    assert valid[front].mean() > 0.99
    assert not valid[back].any()  # turned away: hidden by the sphere's own front


def test_point_tracks_follow_the_rendered_surfaces(thrown):
    _, store = thrown
    records = store.records()
    sequences = store.sequence_records()
    assert [s["scene_index"] for s in sequences] == [0, 1]
    for sequence in sequences:
        tracks = store.read_tracks(sequence)
        frames = [records[i] for i in sequence["frames"]]
        n = len(tracks["query_points"])
        assert n == 64 and tracks["tracks"].shape == (n, 3, 2) and tracks["occluded"].shape == (n, 3)
        t, y, x = tracks["query_points"].T
        query = tracks["tracks"][np.arange(n), t.astype(int)]
        np.testing.assert_allclose(query, np.stack([x, y], axis=-1), atol=1e-3)
        assert not tracks["occluded"][np.arange(n), t.astype(int)].any()
        same, seen = 0, 0
        for k, record in enumerate(frames):
            instance = store.read_instance(record)
            xy = tracks["tracks"][:, k]
            inside = (xy[:, 0] >= -0.5) & (xy[:, 0] < 63.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] < 47.5)
            assert tracks["occluded"][~inside, k].all()
            visible = ~tracks["occluded"][:, k]
            px = np.clip(np.round(xy[visible]).astype(int), 0, [63, 47])
            same += int((instance[px[:, 1], px[:, 0]] == tracks["instance_id"][visible]).sum())
            seen += int(visible.sum())
        assert seen > 60 and same / seen > 0.9


def test_a_frame_rendered_alone_is_byte_identical(thrown, tmp_path):
    recipe, store = thrown
    alone = DatasetStore.open_for_writing(tmp_path / "alone", recipe=recipe.model_dump(mode="json"),
                                          recipe_hash=recipe.content_hash(), categories=recipe.categories,
                                          resolution=recipe.render.resolution, requested=1, flow=True)
    sampling._SCENES.clear()
    _, failures = render_specs(alone, [sample(recipe, 4)])
    assert not failures
    mine, theirs = alone.records()[0], store.records()[4]
    for name in ("rgb", "depth", "instance", "flow_forward", "flow_backward", "flow_valid"):
        assert alone.path(mine, name).read_bytes() == store.path(theirs, name).read_bytes(), name


def test_objects_blur_with_their_own_motion(tmp_path):
    text = """\
        count: 3
        render: {resolution: [64, 48], samples: 16, adaptive_threshold: 0}
        sequence: {frames: 3, fps: 10, point_tracks: 0, flow: false}
        camera: {fov_deg: 40, look_at: [0, 0, 0.05], distance: 1.2, elevation_deg: 90}
        placement: {area: [0.01, 0.01]}
        objects:
          - category: box
            asset: {primitive: box, extents: [0.1, 0.1, 0.1]}
            material: {color: [0.9, 0.1, 0.1]}
            motion: {velocity: [3, 0, 0]}
        lights: [{type: sun, energy: 3, elevation_deg: 90}]
        """
    sharp = _rendered(tmp_path, text)
    blurred = render_dataset(load_recipe(write_recipe(tmp_path, text, "blur.yaml"),
                                         {"camera.motion_blur": {"exposure_s": 0.05}}), tmp_path / "blurred").store
    red = [(s.read_rgb(s.records()[1]).astype(int) @ [1, -1, 0]) for s in (sharp, blurred)]  # the middle frame
    extent = [np.count_nonzero((image > 15).any(axis=0)) for image in red]  # image columns the box reaches
    # 0.05 s at 3 m/s is 0.15 m along the motion: 1.5 box widths more; across it, no wider.
    assert extent[1] > extent[0] * 1.4
    assert np.count_nonzero((red[1] > 15).any(axis=1)) <= np.count_nonzero((red[0] > 15).any(axis=1)) + 1


def test_mot_export_scores_perfectly_with_motmetrics(thrown, tmp_path):
    import motmetrics

    _, store = thrown
    dest = export(store, "mot", tmp_path / "mot")
    records = {r["index"]: r for r in store.records()}
    for sequence in store.sequence_records():
        folder = dest / f"sequence-{sequence['scene_index']:06d}"
        assert len(list((folder / "img1").iterdir())) == 3
        gt = motmetrics.io.loadtxt(folder / "gt" / "gt.txt", fmt="mot16")
        accumulator = motmetrics.utils.compare_to_groundtruth(gt, gt, "iou", distth=0.5)
        summary = motmetrics.metrics.create().compute(accumulator, metrics=["mota", "num_switches", "idf1"])
        assert summary["mota"].iloc[0] == 1.0 and summary["idf1"].iloc[0] == 1.0
        expected = sum(o["bbox_xywh"] is not None for i in sequence["frames"] for o in records[i]["objects"])
        assert len(gt) == expected
        first = records[sequence["frames"][0]]["objects"][0]
        if first["bbox_xywh"] is not None:
            x, y, w, h = first["bbox_xywh"]
            assert tuple(gt.loc[(1, first["instance_id"])][["X", "Y", "Width", "Height"]]) == (x, y, w, h)  # motmetrics reads MOT's 1-based pixels as 0-based


def test_sequences_reach_webdataset_the_dataset_and_preview(thrown, tmp_path):
    import imageio.v3 as iio
    import webdataset

    from sceneforge.labels.torch import SceneForgeDataset

    _, store = thrown
    dest = export(store, "webdataset", tmp_path / "wds")
    samples = list(webdataset.WebDataset(str(dest / "shard-000000.tar"), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [f"{s:06d}_{f:06d}" for s in range(2) for f in range(3)]
    assert {"flow_forward.npy", "flow_backward.npy", "flow_valid.npy"} <= set(samples[0])
    first = store.records()[0]  # webdataset's own decoders give back the stored arrays exactly
    np.testing.assert_array_equal(samples[0]["flow_forward.npy"], store.read_flow(first, "flow_forward"))
    np.testing.assert_array_equal(samples[0]["flow_valid.npy"], store.read_flow_valid(first))
    data = SceneForgeDataset(store, passes=("flow_forward", "flow_valid"))
    item = data[4]
    assert item["flow_forward"].shape == (2, 48, 64) and item["flow_valid"].shape == (48, 64)
    assert item["sequence"].tolist() == [1, 1]
    np.testing.assert_array_equal(item["flow_forward"].permute(1, 2, 0).numpy(),
                                  store.read_flow(store.records()[4], "flow_forward"))
    assert data.point_tracks(1)["tracks"].shape == (64, 3, 2)
    coco = export(store, "coco", tmp_path / "coco")  # COCO keeps working, frame by frame
    assert len(json.loads((coco / "annotations.json").read_text())["images"]) == 6
    gif = tmp_path / "seq.gif"
    result = run_cli("preview", store.root, "-o", gif, "--sequence", "1")
    assert result.returncode == 0, result.stderr
    assert iio.imread(gif).shape[0] == 3


def test_split_keeps_a_sequence_together(thrown, tmp_path):
    _, store = thrown
    dest = export(store, "mot", tmp_path / "split", splits={"train": 0.5, "val": 0.5})
    folders = sorted(p.relative_to(dest).as_posix() for p in dest.glob("*/sequence-*"))
    assert len(folders) == 2
    for folder in folders:
        assert len(list((dest / folder / "img1").iterdir())) == 3


def test_any_frame_samples_alone_as_in_order(thrown):
    recipe, _ = thrown
    in_order = [sample(recipe, i) for i in range(6)]
    for i in (5, 1, 3):
        sampling._SCENES.clear()
        assert sample(recipe, i).to_json() == in_order[i].to_json()
    assert in_order[1].sequence.previous.world_from_camera == in_order[0].camera.world_from_camera
    assert in_order[1].sequence.next.objects[0] == in_order[2].objects[0].world_from_object


BAD_MOTION = [
    ("sequence: {frames: 3, fps: 0}\n", "sequence.fps", "greater than 0"),
    ("camera: {trajectory: {type: orbit}}\n", "camera.trajectory", "only in a sequence"),
    ("sequence: {frames: 3}\ncamera: {trajectory: {type: orbit, follow: dragon}}\n",
     "camera.trajectory.follow", "dragon"),
    ("sequence: {frames: 3}\ncamera: {clip_end: 3, trajectory: {type: line, velocity: [0, 60, 0]}}\n",
     "camera.trajectory", "clip range"),
    ("sequence: {frames: 30}\ncamera: {elevation_deg: 60, trajectory: {type: orbit, elevation_deg_per_second: 40}}\n",
     "camera.trajectory.elevation_deg_per_second", "pole"),
    ("sequence: {frames: 3, physics: true}\nobjects:\n  - {category: a, asset: {primitive: sphere, radius: 0.1}, "
     "motion: {path: [[0, 0, 0], [1, 0, 0]]}}\n", "objects[0].motion.path", "cannot be simulated"),
]


@pytest.mark.parametrize("text, field, words", BAD_MOTION)
def test_bad_motion_is_a_located_error(tmp_path, text, field, words):
    path = write_recipe(tmp_path, "count: 3\nrender: {resolution: [32, 24], samples: 1}\n" + text)
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stderr
    assert f"{path}:" in result.stderr and field in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr


def test_a_simulation_that_flies_apart_is_a_located_error(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, THROWN))
    monkeypatch.setattr(placement, "MAX_TRAVEL", 0.01)  # the thrown objects pass it: as if the state blew up
    sampling._SCENES.clear()
    with pytest.raises(UserError, match=r"recipe.yaml:4:\d+: sequence.physics: scene 0: a '(box|junk)' left the simulation"):
        sample(recipe, 0)


def test_verify_finds_damaged_tracks_and_a_rerun_writes_them_again(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, THROWN.replace("count: 6", "count: 3")))
    store = render_dataset(recipe, tmp_path / "out").store
    (record,) = store.sequence_records()
    path = store.root / record["files"]["tracks"]
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    result = run_cli("verify", store.root, "--repair")
    assert result.returncode == 0 and "sequence 0: tracks/000000.npz is damaged" in result.stdout, result.stdout
    assert not store.sequence_records() and not path.exists()
    render_dataset(recipe, tmp_path / "out")
    assert path.read_bytes() == good


def test_following_an_object_that_was_not_drawn_is_a_located_error(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, """\
        count: 3
        sequence: {frames: 3}
        camera: {trajectory: {type: orbit, follow: ball}}
        objects:
          - {category: ball, count: 0, asset: {primitive: sphere, radius: 0.1}}
        """))
    with pytest.raises(UserError, match=r"recipe.yaml:3:\d+: camera.trajectory.follow: scene 0: there is no 'ball'"):
        sample(recipe, 0)
