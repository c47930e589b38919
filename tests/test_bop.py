"""The BOP export read back as the BOP format description (bop_toolkit docs/bop_datasets_format.md)
defines it: every file present and parsing, scene_gt_info recomputed from the written masks, the
written models projected through the written poses onto the written masks, depth in its scale,
model diameters; a rig's cameras as BOP camera types, a sequence as one scene, one obj_id per
mesh; a lens and a moved asset file refused."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from sceneforge.labels.export import export
from sceneforge.labels.rle import decode_mask
from sceneforge.labels.store import view_name
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import ROOT, run_cli, write_recipe

# A stereo pair, two views per scene, close enough that some objects leave the image; a torus
# (a hole) and a sphere beside boxes; on a ground that fills the depth image.
RECIPE = """\
seed: 11
count: 4
render: {resolution: [64, 48], samples: 1}
camera:
  fov_deg: 60
  look_at: [0, 0, 0.04]
  distance: {uniform: [0.45, 0.6]}
  elevation_deg: {uniform: [45, 70]}
  azimuth_deg: {uniform: [0, 360]}
  frames_per_scene: 2
  stereo: {baseline: 0.08}
ground: {size: 8}
placement: {area: [0.6, 0.6], min_gap: 0.02}
objects:
  - category: box
    count: 2
    asset: {primitive: box, extents: [0.12, 0.1, 0.08]}
  - category: ball
    asset: {primitive: sphere, radius: 0.05}
  - category: ring
    asset: {primitive: torus, major_radius: 0.07, minor_radius: 0.02}
"""


@pytest.fixture(scope="module")
def bop(tmp_path_factory):
    """The store and its BOP export."""
    folder = tmp_path_factory.mktemp("bop")
    store = render_dataset(load_recipe(write_recipe(folder, RECIPE)), folder / "out").store
    return store, export(store, "bop", folder / "bop")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (x, y, z) and triangles of an ASCII PLY, read from its header as BOP's models are."""
    lines = path.read_text().splitlines()
    assert lines[:2] == ["ply", "format ascii 1.0"]
    end = lines.index("end_header")
    header = lines[:end]
    start = next(i for i, line in enumerate(header) if line.startswith("element vertex"))
    vertices = int(header[start].split()[-1])
    faces = int(next(line for line in header if line.startswith("element face")).split()[-1])
    names = [line.split()[-1] for line in header[start:] if line.startswith("property float")]
    assert names == ["x", "y", "z", "nx", "ny", "nz"]  # BOP: every model has vertex normals
    assert "property list uchar int vertex_indices" in header
    rows = np.array([[float(v) for v in line.split()] for line in lines[end + 1:end + 1 + vertices]])
    tris = np.array([[int(v) for v in line.split()] for line in lines[end + 1 + vertices:end + 1 + vertices + faces]])
    assert (tris[:, 0] == 3).all()
    return rows[:, :3], tris[:, 1:]


def views(store, dest):
    """Each record with its BOP scene folder, camera-type suffix and gt/info/camera entries."""
    for record in store.records():
        camera = view_name(record)
        suffix = f"_{camera}" if camera else ""
        spec = json.loads(store.path(record, "scene").read_text())
        folder = dest / "train_pbr" / f"{spec['scene_index']:06d}"
        im = str(record["index"])
        yield (record, folder, suffix, _json(folder / f"scene_camera{suffix}.json")[im],
               _json(folder / f"scene_gt{suffix}.json")[im], _json(folder / f"scene_gt_info{suffix}.json")[im])


def test_every_file_is_there_and_parses(bop):
    store, dest = bop
    info = _json(dest / "models" / "models_info.json")
    objects = _json(dest / "sceneforge_objects.json")
    assert set(info) == set(objects) == {"1", "2", "3"}  # box, ball, ring: one mesh each
    assert [objects[k]["category"] for k in ("1", "2", "3")] == ["box", "ball", "ring"]
    for obj_id in info:
        vertices, tris = read_ply(dest / "models" / f"obj_{int(obj_id):06d}.ply")
        assert len(vertices) and len(tris)
    camera = _json(dest / "camera.json")
    assert {"fx", "fy", "cx", "cy", "width", "height", "depth_scale"} <= set(camera)
    scenes = sorted(p.name for p in (dest / "train_pbr").iterdir())
    assert scenes == ["000000", "000001"]  # two views per scene, four frames
    checked = 0
    for record, folder, suffix, cam, gts, infos in views(store, dest):
        assert suffix in ("_left", "_right")  # the rig's cameras are BOP camera types
        name = f"{record['index']:06d}"
        assert cv2.imread(str(folder / f"rgb{suffix}" / f"{name}.png")).shape == (48, 64, 3)
        assert cv2.imread(str(folder / f"depth{suffix}" / f"{name}.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
        assert np.allclose(np.reshape(cam["cam_K"], (3, 3)), record["camera"]["K"])
        camera_from_world = np.linalg.inv(record["camera"]["world_from_camera"])
        assert np.allclose(np.reshape(cam["cam_R_w2c"], (3, 3)), camera_from_world[:3, :3])
        assert np.allclose(cam["cam_t_w2c"], camera_from_world[:3, 3] * 1000)
        assert len(gts) == len(infos) == len(record["objects"])
        for gt_idx, (gt, obj) in enumerate(zip(gts, record["objects"])):
            assert objects[str(gt["obj_id"])]["asset"] == obj["asset"]
            assert set(gt) == {"obj_id", "cam_R_m2c", "cam_t_m2c"} and len(gt["cam_R_m2c"]) == 9
            for kind in ("mask", "mask_visib"):
                image = cv2.imread(str(folder / f"{kind}{suffix}" / f"{name}_{gt_idx:06d}.png"), cv2.IMREAD_UNCHANGED)
                assert image.dtype == np.uint8 and set(np.unique(image)) <= {0, 255}
                checked += 1
    assert checked >= 8 * 4 * 2


def test_gt_info_is_what_the_written_masks_say(bop):
    store, dest = bop
    truncated = 0
    for record, folder, suffix, cam, gts, infos in views(store, dest):
        name = f"{record['index']:06d}"
        depth = cv2.imread(str(folder / f"depth{suffix}" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        instance = store.read_instance(record)
        for gt_idx, (info, obj) in enumerate(zip(infos, record["objects"])):
            mask, visib = (cv2.imread(str(folder / f"{kind}{suffix}" / f"{name}_{gt_idx:06d}.png"),
                                      cv2.IMREAD_UNCHANGED) > 0 for kind in ("mask", "mask_visib"))
            assert np.array_equal(visib, instance == obj["instance_id"])
            assert np.array_equal(mask, decode_mask(obj["amodal_mask"]))  # the full silhouette in the image
            assert not (visib & ~mask).any()
            assert info["px_count_visib"] == visib.sum()
            assert info["px_count_valid"] == (mask & (depth > 0)).sum()
            # px_count_all counts the silhouette beyond the image too (bop_toolkit's calc_gt_info).
            assert info["px_count_all"] >= mask.sum()
            assert round(info["px_count_all"] * (1 - obj["truncation"])) == mask.sum()
            truncated += info["px_count_all"] > mask.sum() > 0
            fraction = visib.sum() / info["px_count_all"] if info["px_count_all"] else 0.0
            assert info["visib_fract"] == pytest.approx(fraction)
            if visib.any():
                ys, xs = np.nonzero(visib)  # BOP boxes: x, y, x_max - x, y_max - y of pixel indices
                assert info["bbox_visib"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
                ys, xs = np.nonzero(mask)
                box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
                x, y, w, h = info["bbox_obj"]
                if obj["truncation"] == 0:
                    assert info["bbox_obj"] == box
                else:  # the whole silhouette's box holds the part in the image
                    assert x <= box[0] and y <= box[1] and x + w >= xs.max() and y + h >= ys.max()
                    assert x < 0 or y < 0 or x + w > 63 or y + h > 47
            else:
                assert info["bbox_visib"] == info["bbox_obj"] == [-1, -1, -1, -1]
    assert truncated >= 1, "the recipe puts some object partly outside an image"


def _raster(points: np.ndarray, tris: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies inside some projected triangle (the silhouette of a closed mesh)."""
    mask = np.zeros((height, width), bool)
    us, vs = np.meshgrid(np.arange(width), np.arange(height))
    for a, b, c in points[tris]:
        low = np.maximum(np.floor(np.minimum(np.minimum(a, b), c)).astype(int), 0)
        high = np.minimum(np.ceil(np.maximum(np.maximum(a, b), c)).astype(int), (width - 1, height - 1))
        if (low > high).any():
            continue
        u = us[low[1]:high[1] + 1, low[0]:high[0] + 1]
        v = vs[low[1]:high[1] + 1, low[0]:high[0] + 1]
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) < 1e-12:
            continue
        w0 = ((b[0] - u) * (c[1] - v) - (b[1] - v) * (c[0] - u)) / area
        w1 = ((c[0] - u) * (a[1] - v) - (c[1] - v) * (a[0] - u)) / area
        inside = (w0 >= 0) & (w1 >= 0) & (1 - w0 - w1 >= 0)
        mask[low[1]:high[1] + 1, low[0]:high[0] + 1] |= inside
    return mask


def test_models_projected_through_the_poses_cover_the_masks(bop):
    store, dest = bop
    models = {int(p.stem[4:]): read_ply(p) for p in (dest / "models").glob("obj_*.ply")}
    compared = 0
    for record, folder, suffix, cam, gts, infos in views(store, dest):
        K = np.reshape(cam["cam_K"], (3, 3))
        for gt_idx, gt in enumerate(gts):
            mask = cv2.imread(str(folder / f"mask{suffix}" / f"{record['index']:06d}_{gt_idx:06d}.png"),
                              cv2.IMREAD_UNCHANGED) > 0
            vertices, tris = models[gt["obj_id"]]
            camera_points = vertices @ np.reshape(gt["cam_R_m2c"], (3, 3)).T + gt["cam_t_m2c"]
            assert (camera_points[:, 2] > 0).all()
            projected = camera_points @ K.T
            drawn = _raster(projected[:, :2] / projected[:, 2:], tris, *mask.shape)
            if mask.sum() < 20:
                continue
            assert (drawn & mask).sum() / (drawn | mask).sum() >= 0.99  # exact but for ties at pixel centres
            compared += 1
    assert compared >= 10


def test_depth_png_times_its_scale_is_the_stores_depth(bop):
    store, dest = bop
    for record, folder, suffix, cam, gts, infos in views(store, dest):
        written = cv2.imread(str(folder / f"depth{suffix}" / f"{record['index']:06d}.png"), cv2.IMREAD_UNCHANGED)
        depth_mm = store.read_depth(record).astype(np.float64) * 1000
        assert cam["depth_scale"] == 0.1  # the scene's depths fit in 16 bits of 0.1 mm
        finite = np.isfinite(depth_mm)
        assert finite.all()  # the ground fills the image
        assert np.abs(written * cam["depth_scale"] - depth_mm).max() <= cam["depth_scale"] / 2 + 1e-3


def test_models_info_is_in_millimetres_and_its_diameter_the_largest_vertex_distance(bop):
    store, dest = bop
    info = _json(dest / "models" / "models_info.json")
    for obj_id, entry in info.items():
        vertices, _ = read_ply(dest / "models" / f"obj_{int(obj_id):06d}.ply")
        assert entry["diameter"] == pytest.approx(pdist(vertices).max(), abs=1e-3)
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        assert [entry["min_x"], entry["min_y"], entry["min_z"]] == pytest.approx(low, abs=1e-3)
        assert [entry["size_x"], entry["size_y"], entry["size_z"]] == pytest.approx(high - low, abs=1e-3)
        assert np.allclose((low + high) / 2, 0, atol=1e-3)  # BOP: origin at the 3D box's centre
    assert [info["1"][k] for k in ("size_x", "size_y", "size_z")] == pytest.approx([120, 100, 80], abs=1e-3)
    assert info["2"]["diameter"] == pytest.approx(100, abs=1e-3)  # the ball: 2 x 50 mm


def test_the_cli_exports_bop_and_refuses_a_lens(bop, tmp_path):
    store, _ = bop
    done = run_cli("export", store.root, "--format", "bop", "-o", tmp_path / "cli")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "train_pbr" / "000000" / "scene_gt_left.json").is_file()
    lens = write_recipe(tmp_path, "count: 1\nrender: {resolution: [32, 24], samples: 1}\n"
                                  "camera: {lens: {model: brown_conrady, k1: -0.05}}\n"
                                  "objects: [{category: box, asset: {primitive: box}}]\n")
    out = tmp_path / "lens"
    assert run_cli("render", lens, "-o", out).returncode == 0
    refused = run_cli("export", out, "--format", "bop", "-o", tmp_path / "lens-bop")
    assert refused.returncode == 2
    assert f"{out / 'scenes' / '000000.json'}: camera.lens is brown_conrady: BOP's cam_K" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "lens-bop").exists()


def test_splits_are_bop_split_folders_and_keep_a_frames_views_together(bop, tmp_path):
    store, _ = bop
    dest = export(store, "bop", tmp_path / "split", splits={"train": 0.5, "val": 0.5})
    found = {}
    for split in ("train", "val"):
        for scene in (dest / split).glob("*") if (dest / split).exists() else []:
            for camera in ("left", "right"):
                for im_id in _json(scene / f"scene_gt_{camera}.json"):
                    found.setdefault(int(im_id), set()).add((split, camera))
    assert sorted(found) == [0, 1, 2, 3]
    assert all(len({split for split, _ in views}) == 1 and len(views) == 2 for views in found.values())
    assert (dest / "models" / "models_info.json").is_file() and not (dest / "train_pbr").exists()


def test_a_single_camera_has_no_camera_type_suffix(tiny_store, tmp_path):
    dest = export(tiny_store, "bop", tmp_path / "single")
    for record in tiny_store.records():  # one frame per scene: scene = frame index
        folder = dest / "train_pbr" / f"{record['index']:06d}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "depth", "mask", "mask_visib", "rgb", "scene_camera.json", "scene_gt.json", "scene_gt_info.json"]
        assert list(_json(folder / "scene_gt.json")) == [str(record["index"])]
        image = folder / "rgb" / f"{record['index']:06d}.png"
        assert image.read_bytes() == tiny_store.path(record, "rgb").read_bytes()


def test_a_category_with_two_meshes_gets_two_obj_ids_and_a_moved_uncached_asset_file_is_an_error(tmp_path):
    for name in ("spot_vertexcolor.ply", "spot_triangulated.stl"):
        shutil.copy(ROOT / "examples" / "assets" / "spot" / name, tmp_path / name)
    recipe = write_recipe(tmp_path, """\
        seed: 3
        count: 2
        render: {resolution: [32, 24], samples: 1}
        camera: {distance: 0.8}
        assets: [{category: cow, path: "spot_*", size: 0.16}]
        objects: [{category: cow, count: 3, asset: {library: cow}}]
        """)
    store = render_dataset(load_recipe(recipe), tmp_path / "out").store
    dest = export(store, "bop", tmp_path / "bop")
    objects = _json(dest / "sceneforge_objects.json")
    used = {o["asset"] for r in store.records() for o in r["objects"]}
    assert sorted(e["asset"] for e in objects.values()) == sorted(used) and len(used) == 2
    assert {e["category"] for e in objects.values()} == {"cow"}
    (tmp_path / "spot_triangulated.stl").rename(tmp_path / "moved.stl")
    # The mesh cache still holds the converted mesh by content: the same mesh, so the export works.
    assert run_cli("export", store.root, "--format", "bop", "-o", tmp_path / "cached").returncode == 0
    refused = run_cli("export", store.root, "--format", "bop", "-o", tmp_path / "again",
                      env={"SCENEFORGE_CACHE": str(tmp_path / "empty-cache")})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{store.root / 'scenes'}/0" in refused.stderr  # the scene file that uses it
    assert "the mesh of a cow object (asset " in refused.stderr
    assert f"cannot read {tmp_path / 'spot_triangulated.stl'}" in refused.stderr


def _pose(rotation: list[float], translation: list[float]) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = np.reshape(rotation, (3, 3)), translation
    return pose


def test_a_sequence_is_a_scene_whose_world_poses_agree_across_its_images(tmp_path):
    recipe = write_recipe(tmp_path, """\
        count: 4
        render: {resolution: [32, 24], samples: 1}
        sequence: {frames: 2, fps: 10, point_tracks: 0}
        camera: {look_at: [0, 0, 0], distance: 1.2, elevation_deg: 40,
                 trajectory: {type: orbit, degrees_per_second: 90}}
        objects: [{category: box, count: 2, asset: {primitive: box, extents: [0.2, 0.1, 0.1]}}]
        """)
    store = render_dataset(load_recipe(recipe), tmp_path / "out").store
    dest = export(store, "bop", tmp_path / "bop")
    for scene, im_ids in (("000000", ["0", "1"]), ("000001", ["2", "3"])):
        folder = dest / "train_pbr" / scene
        cameras, gts = _json(folder / "scene_camera.json"), _json(folder / "scene_gt.json")
        assert list(cameras) == list(gts) == im_ids
        world = [[np.linalg.inv(_pose(cameras[i]["cam_R_w2c"], cameras[i]["cam_t_w2c"]))
                  @ _pose(gt["cam_R_m2c"], gt["cam_t_m2c"]) for gt in gts[i]] for i in im_ids]
        assert not np.allclose(cameras[im_ids[0]]["cam_R_w2c"], cameras[im_ids[1]]["cam_R_w2c"])  # the camera orbits
        assert np.allclose(world[0], world[1], atol=1e-3)  # objects standing still: one world pose (mm)


def _turn(axis: list[float], angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about a unit axis."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_symmetries_map_each_written_model_onto_itself_and_no_more(bop):
    _, dest = bop
    info = _json(dest / "models" / "models_info.json")
    models = {obj_id: read_ply(dest / "models" / f"obj_{int(obj_id):06d}.ply")[0] for obj_id in info}
    # The 120 x 100 x 80 mm box: exactly the three half turns about its axes move its corners onto corners.
    box = models["1"]
    turns = [np.reshape(flat, (4, 4)) for flat in info["1"]["symmetries_discrete"]]
    assert len(turns) == 3 and "symmetries_continuous" not in info["1"]
    for turn in turns:
        assert np.allclose(turn[:3, 3], 0) and np.allclose(np.abs(np.diag(turn[:3, :3])).sum(), 3)
        assert cKDTree(box).query(box @ turn[:3, :3].T + turn[:3, 3])[0].max() < 1e-3
    assert cKDTree(box).query(box @ _turn([0, 0, 1], np.pi / 2).T)[0].max() > 5  # 120 vs 100 mm: not a symmetry
    # The ring lies on the analytic torus (70 mm to the tube's middle, 20 mm tube), which every
    # listed turn, and every angle about a continuous axis, maps onto itself.
    def off_torus(points: np.ndarray) -> float:
        return float(np.abs(np.hypot(np.hypot(points[:, 0], points[:, 1]) - 70, points[:, 2]) - 20).max())

    ring = models["3"]
    assert off_torus(ring) < 1e-3
    assert [c["axis"] for c in info["3"]["symmetries_continuous"]] == [[0, 0, 1]]
    for entry in info["3"]["symmetries_continuous"]:
        for angle in (0.3, 1.7, 4.0):
            assert off_torus((ring - entry["offset"]) @ _turn(entry["axis"], angle).T + entry["offset"]) < 1e-3
    for flat in info["3"]["symmetries_discrete"]:
        turn = np.reshape(flat, (4, 4))
        assert off_torus(ring @ turn[:3, :3].T + turn[:3, 3]) < 1e-3
    assert off_torus(ring @ _turn([1, 0, 0], np.pi / 2).T) > 10  # a quarter turn about x is not one
    ball = models["2"]
    for entry in info["2"]["symmetries_continuous"]:
        moved = ball @ _turn(entry["axis"], 1.1).T
        assert np.abs(np.linalg.norm(moved, axis=1) - 50).max() < 1e-3


def test_symmetries_of_a_cube_a_cone_and_files():
    from sceneforge.labels.bop import symmetries
    from sceneforge.scenes.spec import AssetRef

    cube = symmetries(AssetRef.primitive_asset("box", {"extents": (0.1, 0.1, 0.1)}))["symmetries_discrete"]
    corners = np.array(list(itertools.product((-50.0, 50.0), repeat=3)))
    assert len(cube) == 23  # the cube's 24 turns but the identity
    assert len({tuple(np.round(t, 9)) for t in cube}) == 23
    for flat in cube:
        turn = np.reshape(flat, (4, 4))[:3, :3]
        assert cKDTree(corners).query(corners @ turn.T)[0].max() < 1e-9
    square = symmetries(AssetRef.primitive_asset("box", {"extents": (0.1, 0.1, 0.3)}))["symmetries_discrete"]
    assert len(square) == 7  # a square prism: four quarter turns about z, each with or without the flip
    cone = symmetries(AssetRef.primitive_asset("cone", {"radius": 0.1, "height": 0.2}))
    assert cone == {"symmetries_continuous": [{"axis": [0.0, 0.0, 1.0], "offset": [0.0, 0.0, 0.0]}]}  # no flip
    assert symmetries(AssetRef(path="/x.glb", hash="0")) == {}


def test_a_textured_primitive_has_no_symmetries(tmp_path):
    textures = tmp_path / "textures"
    textures.mkdir()
    shutil.copy(ROOT / "examples" / "assets" / "textures" / "objects" / "coffee.jpg", textures)
    recipe = write_recipe(tmp_path, "count: 1\nrender: {resolution: [32, 24], samples: 1}\nground: {size: 8}\n"
                                    "objects: [{category: can, asset: {primitive: cylinder},"
                                    " material: {texture_folder: textures}}]\n")
    store = render_dataset(load_recipe(recipe), tmp_path / "out").store
    info = _json(export(store, "bop", tmp_path / "bop") / "models" / "models_info.json")
    assert "symmetries_continuous" not in info["1"] and "symmetries_discrete" not in info["1"]
