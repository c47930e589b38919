"""Camera rigs and stereo pairs: one render and one record per view, disparity against geometry,
views reprojected into each other, resume per view, exports and the Dataset per view, bad rigs."""

from __future__ import annotations

import json
import math
import re
import shutil
import tarfile

import numpy as np
import pytest

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import instance_boundaries
from sceneforge.labels.export import export
from sceneforge.labels.store import DatasetStore, pass_file
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample, sample_views

from .helpers import run_cli, write_recipe

# A stereo pair over a few boxes on the ground (planar faces only, so depth is exact to compare).
STEREO_RECIPE = """\
seed: 5
count: 2
render: {resolution: [64, 48], samples: 1}
camera:
  fov_deg: 60
  look_at: [0, 0, 0.04]
  distance: 0.9
  elevation_deg: {uniform: [50, 70]}
  azimuth_deg: {uniform: [0, 360]}
  stereo: {baseline: {uniform: [0.06, 0.12]}}
ground: {size: 8}
placement: {area: [0.4, 0.4], min_gap: 0.02}
objects:
  - category: box
    count: 3
    asset: {primitive: box, extents: [0.12, 0.1, 0.08]}
"""

# Two cameras of different intrinsics and resolutions, the second turned and shifted on the rig.
RIG_RECIPE = """\
seed: 11
count: 1
render: {resolution: [64, 48], samples: 1}
camera:
  look_at: [0, 0, 0.04]
  distance: 1.0
  elevation_deg: 60
  azimuth_deg: 30
  rig:
    - {name: wide, fov_deg: 70}
    - name: tele
      position: [0.08, -0.02, 0.01]
      rotation_deg: [2, -4, 3]
      intrinsics: {fx: 70, fy: 75, cx: 22.5, cy: 15}
      resolution: [48, 32]
ground: {size: 8}
placement: {area: [0.4, 0.4], min_gap: 0.02}
objects:
  - category: box
    count: 3
    asset: {primitive: box, extents: [0.12, 0.1, 0.08]}
"""


@pytest.fixture(scope="module")
def stereo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stereo")
    recipe = load_recipe(write_recipe(folder, STEREO_RECIPE))
    return recipe, render_dataset(recipe, folder / "out", usd=True).store


def _pixels(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    us, vs = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    return us, vs


def _to_world(record: dict, depth: np.ndarray) -> np.ndarray:
    """World points (H, W, 3) of a view's pixel centres at their planar depth (pinhole through K)."""
    K, pose = np.asarray(record["camera"]["K"]), np.asarray(record["camera"]["world_from_camera"])
    us, vs = _pixels(depth.shape[1], depth.shape[0])
    points = np.stack([(us - K[0, 2]) / K[0, 0] * depth, (vs - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)
    return points @ pose[:3, :3].T + pose[:3, 3]


def _to_image(record: dict, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (..., 2) and planar depth of world points in a view."""
    K, pose = np.asarray(record["camera"]["K"]), np.asarray(record["camera"]["world_from_camera"])
    camera = (world - pose[:3, 3]) @ pose[:3, :3]
    uv = camera[..., :2] / camera[..., 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, camera[..., 2]


def test_stereo_views_have_their_own_records_files_and_rectified_poses(stereo):
    recipe, store = stereo
    records = store.records()
    assert [(r["index"], r["camera"]["name"]) for r in records] == [(0, "left"), (0, "right"), (1, "left"), (1, "right")]
    assert store.meta["cameras"] == [{"name": "left"}, {"name": "right"}]
    assert store.meta["stereo_pairs"] == [{"left": "left", "right": "right"}]
    for left, right in zip(records[::2], records[1::2]):
        assert left["files"]["rgb"] == "rgb/%06d_left.png" % left["index"] == pass_file("rgb", left["index"], "left")
        assert right["files"]["disparity"] == "disparity/%06d_right.exr" % right["index"]
        assert (left["files"]["scene"], right["files"]["usd"]) == ("scenes/%06d_left.json" % left["index"],
                                                                    "scenes/%06d_right.usda" % right["index"])
        baseline = left["camera"]["stereo_baseline"]
        assert 0.06 <= baseline <= 0.12 and right["camera"]["stereo_baseline"] == baseline
        assert left["camera"]["K"] == right["camera"]["K"]
        # The right camera: the left's orientation, `baseline` metres along the left's +x.
        relative = np.linalg.inv(left["camera"]["world_from_camera"]) @ np.asarray(right["camera"]["world_from_camera"])
        np.testing.assert_allclose(relative, [[1, 0, 0, baseline], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-9)
        # Both views see one scene at one instant.
        assert [o["world_from_object"] for o in left["objects"]] == [o["world_from_object"] for o in right["objects"]]


def test_each_view_draws_its_own_noise_but_the_same_sensor_models(tmp_path):
    text = STEREO_RECIPE.replace("  stereo:", "  sensor: {gain: {uniform: [1, 4]}}\n  depth_sensor: {}\n  stereo:")
    left, right = sample_views(load_recipe(write_recipe(tmp_path, text)), 0)
    assert left.render.noise_seed != right.render.noise_seed
    for name in ("sensor", "depth_sensor"):
        own, other = getattr(left.camera, name), getattr(right.camera, name)
        assert own.seed != other.seed
        assert own.model_copy(update={"seed": 0}) == other.model_copy(update={"seed": 0})


def test_disparity_of_a_plane_facing_the_pair_is_fx_baseline_over_its_distance(tmp_path):
    # Looking straight down at the ground from `distance`: every pixel sees the plane at that depth.
    text = STEREO_RECIPE.replace("elevation_deg: {uniform: [50, 70]}", "elevation_deg: 90").replace(
        "look_at: [0, 0, 0.04]", "look_at: [0, 0, 0]").split("placement:")[0] + "objects: []\n"
    store = render_dataset(load_recipe(write_recipe(tmp_path, text)), tmp_path / "out").store
    for record in store.records():
        height = record["camera"]["world_from_camera"][2][3]  # the plane is z = 0, the camera looks down
        assert height == pytest.approx(0.9)
        expected = record["camera"]["K"][0][0] * record["camera"]["stereo_baseline"] / height
        disparity = store.read_disparity(record)
        assert disparity.dtype == np.float32 and disparity.shape == (48, 64)
        np.testing.assert_allclose(disparity, expected, rtol=1e-5)


def test_disparity_is_zero_where_nothing_is_hit(stereo):
    _, store = stereo
    record = store.records()[0]
    depth, disparity = store.read_depth(record), store.read_disparity(record)
    assert np.all(disparity[~np.isfinite(depth)] == 0)
    np.testing.assert_allclose(disparity[np.isfinite(depth)],
                               record["camera"]["K"][0][0] * record["camera"]["stereo_baseline"] / depth[np.isfinite(depth)],
                               rtol=1e-6)


def test_left_pixels_reprojected_through_the_poses_land_on_the_same_instance_in_the_right_view(stereo):
    _, store = stereo
    records = store.records()
    checked = 0
    for left, right in zip(records[::2], records[1::2]):
        depth, disparity = store.read_depth(left), store.read_disparity(left)
        uv, _ = _to_image(right, _to_world(left, depth))
        us, vs = _pixels(64, 48)
        hit = np.isfinite(depth)
        # Rectified: same row; the disparity says where along it (u - d).
        np.testing.assert_allclose(uv[..., 1][hit], vs[hit], atol=1e-6)
        np.testing.assert_allclose(uv[..., 0][hit], (us - disparity)[hit], atol=1e-4)
        # Where the landing pixel sees the same point (its depth agrees), it is the same object.
        ids_left, ids_right, depth_right = store.read_instance(left), store.read_instance(right), store.read_depth(right)
        column = np.rint(uv[..., 0]).astype(int)
        inside = hit & (column >= 0) & (column < 64) & ~instance_boundaries(ids_left)
        rows, cols = np.nonzero(inside)
        landing = column[rows, cols]
        same_point = np.abs(depth_right[rows, landing] - depth[rows, cols]) < 0.002
        interior = ~instance_boundaries(ids_right)[rows, landing]
        keep = same_point & interior
        assert keep.sum() > 0.5 * hit.sum()
        assert np.array_equal(ids_left[rows, cols][keep], ids_right[rows, landing][keep])
        assert (ids_left[rows, cols][keep] > 0).any()
        checked += int(keep.sum())
    assert checked > 1000


def test_rig_cameras_have_their_own_intrinsics_size_and_pose_and_their_depths_agree(tmp_path):
    store = render_dataset(load_recipe(write_recipe(tmp_path, RIG_RECIPE)), tmp_path / "out").store
    wide, tele = store.records()
    assert (wide["camera"]["name"], tele["camera"]["name"]) == ("wide", "tele")
    focal = 32 / math.tan(math.radians(35))
    np.testing.assert_allclose(wide["camera"]["K"], [[focal, 0, 31.5], [0, focal, 23.5], [0, 0, 1]])
    assert tele["camera"]["K"] == [[70, 0, 22.5], [0, 75, 15], [0, 0, 1]]
    assert (wide["camera"]["width"], wide["camera"]["height"], tele["camera"]["width"], tele["camera"]["height"]) == (64, 48, 48, 32)
    for record, size in ((wide, (48, 64)), (tele, (32, 48))):
        for image in (store.read_rgb(record), store.read_depth(record), store.read_instance(record), store.read_normals(record)):
            assert image.shape[:2] == size
    # tele's pose on the rig: rotations about x, y, z (fixed axes, x first), then the offset; wide is the rig.
    ax, ay, az = np.radians([2, -4, 3])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    relative = np.linalg.inv(wide["camera"]["world_from_camera"]) @ np.asarray(tele["camera"]["world_from_camera"])
    np.testing.assert_allclose(relative[:3, :3], rz @ ry @ rx, atol=1e-9)
    np.testing.assert_allclose(relative[:3, 3], [0.08, -0.02, 0.01], atol=1e-9)
    # wide's depth carried into tele agrees with tele's own depth there. Planar faces only: 1/depth
    # is affine in the pixel on each face, so it interpolates exactly between 4 pixels of one face.
    depth = store.read_depth(wide)
    uv, projected = _to_image(tele, _to_world(wide, depth))
    depth_tele, normals, ids = store.read_depth(tele), store.read_normals(tele), store.read_instance(tele)
    u0, v0 = np.floor(uv[..., 0]).astype(int), np.floor(uv[..., 1]).astype(int)
    ok = np.isfinite(depth) & (u0 >= 0) & (u0 < 47) & (v0 >= 0) & (v0 < 31)
    rows, cols = np.nonzero(ok)
    a, b = u0[rows, cols], v0[rows, cols]
    corners = [(b, a), (b, a + 1), (b + 1, a), (b + 1, a + 1)]
    one_face = np.all([np.isfinite(depth_tele[c]) & (ids[c] == ids[corners[0]])
                       & (np.abs(normals[c] - normals[corners[0]]).max(axis=-1) < 1e-3) for c in corners], axis=0)
    fu, fv = uv[rows, cols, 0] - a, uv[rows, cols, 1] - b
    inverse = sum(w / depth_tele[c] for w, c in zip(((1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv), corners))
    seen, mine = 1 / inverse[one_face], projected[rows, cols][one_face]
    agree = np.abs(seen - mine) < 1e-3 * mine
    assert agree.sum() > 500 and agree.mean() > 0.8
    # Where they disagree the point is hidden in tele: tele sees something nearer, never beyond it.
    assert np.all(seen[~agree] < mine[~agree])


def test_resume_renders_only_the_view_whose_file_was_deleted(stereo, tmp_path):
    recipe, rendered = stereo
    out = tmp_path / "out"
    shutil.copytree(rendered.root, out)
    store = DatasetStore(out)
    (out / "rgb" / "000001_right.png").unlink()
    before = {p: p.stat().st_mtime_ns for folder in (*store.meta["passes"], "scenes") for p in (out / folder).glob("*")
              if p.name != "000001_right.png"}
    report = render_dataset(recipe, out)
    assert (report.requested, report.already_done, report.rendered) == (4, 3, 1)
    assert (out / "rgb" / "000001_right.png").is_file()
    changed = sorted(p.name for p, t in before.items() if p.stat().st_mtime_ns != t)
    assert set(changed) <= {f"000001_right{suffix}" for suffix in (".png", ".exr", ".json")}
    assert len(store.records()) == 4 and store.frame_problem(store.records()[3]) is None


def test_verify_checks_each_view(stereo, tmp_path):
    from sceneforge.labels.verify import verify_store

    out = tmp_path / "out"
    shutil.copytree(stereo[1].root, out)
    path = out / "depth" / "000000_right.exr"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    report = verify_store(DatasetStore(out))
    assert report.damaged == ["frame 0 camera right: depth/000000_right.exr is damaged (its CRC-32 differs from the record's)"]
    assert report.intact == 3


def test_exports_hold_one_image_per_view(stereo, tmp_path):
    _, store = stereo
    export(store, "coco", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    names = sorted(image["file_name"] for image in coco["images"])
    assert names == ["000000_left.png", "000000_right.png", "000001_left.png", "000001_right.png"]
    assert len({image["id"] for image in coco["images"]}) == 4
    assert {(i["frame"], i["camera"]) for i in coco["images"]} == {(0, "left"), (0, "right"), (1, "left"), (1, "right")}
    by_image = {image["id"]: image for image in coco["images"]}
    for record in store.records():
        image_id = next(i["id"] for i in coco["images"] if i["file_name"] == f"{record['index']:06d}_{record['camera']['name']}.png")
        boxes = sorted(a["bbox"] for a in coco["annotations"] if a["image_id"] == image_id)
        assert boxes == sorted([float(v) for v in o["bbox_xywh"]] for o in record["objects"] if o["visible_pixels"])
        assert by_image[image_id]["width"] == record["camera"]["width"]

    export(store, "yolo", tmp_path / "yolo", splits={"train": 0.5, "val": 0.5})
    images = sorted(p.relative_to(tmp_path / "yolo" / "images") for p in (tmp_path / "yolo" / "images").glob("*/*"))
    assert sorted(p.name for p in images) == names
    split_of = {p.name[:6]: {q.parts[0] for q in images if q.name[:6] == p.name[:6]} for p in images}
    assert all(len(splits) == 1 for splits in split_of.values())  # a frame's views stay in one split
    for image in images:
        assert (tmp_path / "yolo" / "labels" / image.parent / f"{image.stem}.txt").is_file()

    export(store, "webdataset", tmp_path / "wds")
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar") as tar:
        members = tar.getnames()
    assert {m.split(".")[0] for m in members} == {"000000", "000001"}  # one sample per frame
    for key in ("000000", "000001"):
        for camera in ("left", "right"):
            assert f"{key}.{camera}.rgb.png" in members and f"{key}.{camera}.disparity.npy" in members
            assert f"{key}.{camera}.json" in members


def test_dataset_returns_a_frames_views_together(stereo):
    torch = pytest.importorskip("torch")
    from sceneforge.labels.torch import SceneForgeDataset, collate

    _, store = stereo
    assert len(SceneForgeDataset(store)) == 4  # one sample per view by default
    pairs = SceneForgeDataset(store, passes=("depth", "disparity"), cameras=("left", "right"))
    assert len(pairs) == 2
    sample = pairs[1]
    assert sample["index"] == 1 and set(sample["views"]) == {"left", "right"}
    right = store.records()[3]
    assert sample["views"]["right"]["camera"] == "right"
    assert torch.equal(sample["views"]["right"]["disparity"][0], torch.from_numpy(store.read_disparity(right)))
    batch = collate([pairs[0], pairs[1]])
    assert batch["views"]["left"]["image"].shape == (2, 3, 48, 64)
    assert batch["views"]["right"]["disparity"].shape == (2, 1, 48, 64)
    with pytest.raises(UserError, match="no camera 'middle'"):
        SceneForgeDataset(store, cameras=("left", "middle"))


def test_preview_and_stats_show_every_view(stereo):
    from sceneforge.labels.preview import contact_sheet
    from sceneforge.labels.stats import dataset_stats

    _, store = stereo
    sheet = contact_sheet(store, [1])
    assert sheet.shape[0] == 2 * 48 * 4  # a row per view, 64-pixel-wide tiles enlarged 4 times
    numbers = dataset_stats(store)
    assert numbers["frames"] == 2 and numbers["views"] == {"left": 2, "right": 2}


def test_usd_stage_holds_every_rig_camera(stereo):
    from pxr import Usd, UsdGeom

    from sceneforge.labels.usd_scene import scene_stage

    recipe, _ = stereo
    stage = scene_stage(sample(recipe, 0, "right"))
    assert isinstance(stage, Usd.Stage)
    for name in ("left", "right"):
        assert stage.GetPrimAtPath(f"/World/rig/{name}").IsA(UsdGeom.Camera)
    np.testing.assert_allclose(
        np.asarray(UsdGeom.Xformable(stage.GetPrimAtPath("/World/rig/right")).ComputeLocalToWorldTransform(0)).T,
        np.asarray(UsdGeom.Xformable(stage.GetPrimAtPath("/World/camera")).ComputeLocalToWorldTransform(0)).T)


def test_a_stereo_sequence_has_flow_tracks_and_mot_sequences_per_camera(tmp_path):
    text = STEREO_RECIPE.replace("count: 2", "count: 2\nsequence: {frames: 2, fps: 10, point_tracks: 16}").replace(
        "  stereo:", "  trajectory: {type: orbit, degrees_per_second: 40}\n  stereo:")
    store = render_dataset(load_recipe(write_recipe(tmp_path, text)), tmp_path / "out").store
    records = store.records()
    assert [(r["index"], r["camera"]["name"]) for r in records] == [(0, "left"), (0, "right"), (1, "left"), (1, "right")]
    # Each view's forward flow is its own depth carried to its own camera's next pose (a still scene).
    for now, later in ((records[0], records[2]), (records[1], records[3])):
        assert now["camera"]["name"] == later["camera"]["name"]
        depth = store.read_depth(now)
        flow, valid = store.read_flow(now, "flow_forward"), (store.read_flow_valid(now) & 1) > 0
        uv, _ = _to_image(later, _to_world(now, depth))
        us, vs = _pixels(64, 48)
        expected = np.stack([uv[..., 0] - us, uv[..., 1] - vs], axis=-1)
        assert valid.sum() > 1000
        np.testing.assert_allclose(flow[valid], expected[valid], atol=0.01)
    tracks = {(r["scene_index"], r["camera"]) for r in store.sequence_records()}
    assert tracks == {(0, "left"), (0, "right")}
    assert store.read_tracks(store.sequence_records()[1])["tracks"].shape == (16, 2, 2)
    export(store, "mot", tmp_path / "mot")
    assert sorted(p.name for p in (tmp_path / "mot").iterdir()) == ["sequence-000000_left", "sequence-000000_right"]


def test_sequence_views_carry_their_own_camera_in_the_neighbouring_states(tmp_path):
    text = STEREO_RECIPE.replace("count: 2", "count: 3") + "sequence: {frames: 3, fps: 10, flow: true}\n"
    text = text.replace("  stereo:", "  trajectory: {type: orbit, degrees_per_second: 20}\n  stereo:")
    recipe = load_recipe(write_recipe(tmp_path, text))
    left, right = sample_views(recipe, 1)
    offset = np.linalg.inv(left.camera.world_from_camera) @ np.asarray(right.camera.world_from_camera)
    for state_left, state_right in ((left.sequence.previous, right.sequence.previous), (left.sequence.next, right.sequence.next)):
        np.testing.assert_allclose(np.asarray(state_left.world_from_camera) @ offset, state_right.world_from_camera, atol=1e-12)
    assert not np.allclose(left.sequence.next.world_from_camera, left.camera.world_from_camera)
    assert left.content_key() == right.content_key()  # one built Blender scene serves both views
    with pytest.raises(ValueError, match="several views"):
        sample(recipe, 1)


@pytest.mark.parametrize(("camera", "expected"), [
    ("  stereo: {baseline: 0}\n", r":3:22: camera\.stereo\.baseline: must be > 0"),
    ("  stereo: {baseline: {uniform: [-0.1, 0.1]}}\n", r":3:22: camera\.stereo\.baseline: must be > 0"),
    ("  stereo: {baseline: 0.1, names: [eye, eye]}\n", r":3:34: camera\.stereo\.names: both cameras are named 'eye'"),
    ("  stereo: {baseline: 0.1}\n  rig: [{name: a}]\n", r":3:11: camera\.stereo: give rig or stereo, not both"),
    ("  rig:\n    - {name: a}\n    - {name: a, position: [1, 0, 0]}\n", r":5:14: camera\.rig\[1\]\.name: 'a' is taken"),
    ("  rig:\n    - {name: a}\n    - {name: b, position: [0.0005, 0, 0]}\n",
     r":5:27: camera\.rig\[1\]\.position: cameras 'a' and 'b' are inside each other \(centres less than 1 mm apart\)"),
    ("  rig:\n    - {name: left eye}\n", r":4:14: camera\.rig\[0\]\.name: string should match pattern"),
    ("  rig:\n    - {name: ../x}\n", r":4:14: camera\.rig\[0\]\.name: string should match pattern"),
    ("  intrinsics: {fx: 50, fy: 50, cx: 20, cy: 15}\n  rig:\n    - {name: a, resolution: [20, 10]}\n",
     r":5:29: camera\.rig\[0\]\.resolution: camera\.intrinsics are in pixels of render\.resolution"),
])
def test_bad_rigs_are_errors_at_their_line(tmp_path, camera, expected):
    path = write_recipe(tmp_path, "count: 1\ncamera:\n" + camera)
    with pytest.raises(UserError) as error:
        load_recipe(path)
    assert re.search(re.escape(str(path)) + expected, str(error.value)), str(error.value)


def test_drawn_rig_cameras_inside_each_other_fail_at_the_position_and_the_cli_exits_2(tmp_path):
    path = write_recipe(tmp_path, "count: 1\ncamera:\n  rig:\n    - {name: a}\n"
                                  "    - {name: b, position: [{uniform: [0, 0.0002]}, 0, 0]}\n")
    with pytest.raises(UserError, match=re.escape(str(path)) + r":5:27: camera\.rig\[1\]\.position: scene 0: "
                                        r"cameras 'a' and 'b' are inside each other"):
        sample_views(load_recipe(path), 0)
    result = run_cli("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(re.escape(str(path)) + r":5:27: camera\.rig\[1\]\.position", result.stderr), result.stderr
