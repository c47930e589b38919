"""BOP export for 6D object pose estimation: the BOP-scenewise layout (docs/formats.md, "BOP").

    DEST/camera.json                 the first image's intrinsics (BOP: for sensor simulation only)
    DEST/sceneforge_objects.json     obj_id -> category, category id, asset hash, model origin
    DEST/models/models_info.json     per obj_id: diameter, min_x/y/z, size_x/y/z (mm), and the
                                     symmetries of untextured primitives
    DEST/models/obj_OBJ_ID.ply       the asset's mesh in millimetres, origin at its 3D box centre
    DEST/SPLIT/SCENE_ID/scene_camera[_CAM].json, scene_gt[_CAM].json, scene_gt_info[_CAM].json,
                        rgb[_CAM]/IM_ID.png, depth[_CAM]/IM_ID.png, mask[_CAM]/IM_ID_GT_IDX.png,
                        mask_visib[_CAM]/IM_ID_GT_IDX.png

A BOP scene is a SceneForge scene (``scene_index``), an image a frame (``im_id`` = frame index);
a rig's cameras are BOP's ``_CAMTYPE`` suffixes of one scene. One obj_id per distinct asset mesh.
``scene_gt_info`` follows bop_toolkit's ``calc_gt_info``: the silhouette counts its part beyond
the image (cast on a canvas three times the image size), boxes are ``[x, y, x_max - x, y_max - y]``
of pixel indices, ``-1`` boxes when nothing is visible; the visible mask is the instance map's.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError

from sceneforge.floor.errors import UserError
from sceneforge.floor.files import link_or_copy
from sceneforge.scenes.assets import AssetError, asset_mesh
from sceneforge.scenes.mesh import Mesh
from sceneforge.scenes.spec import AssetRef, SceneSpec

from .annotate import canvas_silhouette
from .store import DatasetStore, view_name

MM = 1000.0  # millimetres per metre: BOP's models, translations and depth are in mm
# Depth PNG units tried in order (mm per unit): the finest whose 16 bits hold the image's farthest depth.
DEPTH_SCALES = (0.1, 1.0, 10.0, 100.0)
UNSPLIT = "train_pbr"  # BOP's name for photorealistic synthetic training images


def write(store: DatasetStore, groups: dict[str | None, list[dict]], dest: Path, rgb_pass: str) -> None:
    """Write the models and one BOP split folder per split (``train_pbr`` without splits)."""
    records = [record for group in groups.values() for record in group]
    specs = {(r["index"], view_name(r)): _spec(store, r) for r in records}
    objects = _object_ids({store.path(r, "scene"): specs[(r["index"], view_name(r))] for r in records})
    _write_models(objects, dest)
    _write_json(dest / "camera.json", _camera_json(records[0], _depth_scale(store.read_depth(records[0]))))
    for split, records in groups.items():
        scenes: dict[tuple[int, str], list[dict]] = {}
        for record in records:
            spec = specs[(record["index"], view_name(record))]
            scenes.setdefault((spec.scene_index, view_name(record)), []).append(record)
        for (scene_index, camera), views in sorted(scenes.items()):
            folder = dest / (split or UNSPLIT) / f"{scene_index:06d}"
            _write_scene(store, views, specs, objects, folder, f"_{camera}" if camera else "", rgb_pass)


def _spec(store: DatasetStore, record: dict) -> SceneSpec:
    path = store.path(record, "scene")
    try:
        spec = SceneSpec.from_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the frame's scene ({exc})") from None
    if spec.camera.lens is not None:
        raise UserError(f"{path}: camera.lens is {spec.camera.lens.model}: BOP's cam_K describes a pinhole camera "
                        "only; export a store rendered without camera.lens")
    return spec


def _object_ids(specs: dict[Path, SceneSpec]) -> dict[str, dict]:
    """obj_id per asset hash (1-based, ordered by category id then hash), with what identifies it,
    the first scene file (of ``specs``, by path) that names it, and whether any of its objects is textured."""
    assets: dict[str, dict] = {}
    for path, spec in specs.items():
        for obj in spec.objects:
            entry = assets.setdefault(obj.asset.hash, {"category_id": obj.category_id, "category": obj.category,
                                                       "asset": obj.asset, "scene": path, "textured": False})
            # A texture (box-projected on primitives) breaks the shape's symmetries for pose metrics.
            entry["textured"] |= obj.material.texture is not None
    ordered = sorted(assets.items(), key=lambda item: (item[1]["category_id"], item[0]))
    return {asset_hash: {"obj_id": i, **entry} for i, (asset_hash, entry) in enumerate(ordered, start=1)}


def _mesh(entry: dict) -> Mesh:
    """The mesh of an ``_object_ids`` entry; an asset file that cannot be read is a UserError naming
    the scene file that uses it."""
    try:
        return asset_mesh(entry["asset"])
    except (AssetError, OSError) as exc:
        raise UserError(f"{entry['scene']}: the mesh of a {entry['category']} object (asset {entry['asset'].hash}): "
                        f"{exc}") from None


def _model_origin(mesh: Mesh) -> np.ndarray:
    """Where BOP's model origin lies in the asset's frame: the centre of its 3D bounding box (metres)."""
    low, high = mesh.bounds
    return (low + high) / 2


def _write_models(objects: dict[str, dict], dest: Path) -> None:
    (dest / "models").mkdir(parents=True)
    info, side = {}, {}
    for asset_hash, entry in objects.items():
        mesh = _mesh(entry)
        origin = _model_origin(mesh)
        # trimesh writes the PLY (with vertex normals); BOP exports are rare, its import is paid here only.
        model = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        model.apply_translation(-origin)
        model.apply_scale(MM)
        points = np.asarray(model.vertices)
        low, high = points.min(axis=0), points.max(axis=0)
        obj_id = entry["obj_id"]
        info[str(obj_id)] = {"diameter": diameter(points), "min_x": float(low[0]), "min_y": float(low[1]),
                             "min_z": float(low[2]), "size_x": float(high[0] - low[0]),
                             "size_y": float(high[1] - low[1]), "size_z": float(high[2] - low[2]),
                             **({} if entry["textured"] else symmetries(entry["asset"]))}
        side[str(obj_id)] = {"category": entry["category"], "category_id": entry["category_id"], "asset": asset_hash,
                             "origin_in_asset": [float(v) for v in origin]}
        (dest / "models" / f"obj_{obj_id:06d}.ply").write_bytes(model.export(file_type="ply", encoding="ascii",
                                                                            vertex_normal=True))
    _write_json(dest / "models" / "models_info.json", info)
    _write_json(dest / "sceneforge_objects.json", side)


def symmetries(asset: AssetRef) -> dict:
    """BOP's ``symmetries_discrete`` (4x4 row-major, mm) and ``symmetries_continuous`` (axis, offset
    in mm) of a primitive's shape in the model frame (origin at its box centre, where every primitive
    is symmetric); {} for an asset file, whose symmetries SceneForge does not know."""
    flip = np.diag([1.0, -1.0, -1.0])  # half a turn about x: the top becomes the bottom
    about = {axis: {"axis": [float(v) for v in np.eye(3)[k]], "offset": [0.0, 0.0, 0.0]}
             for k, axis in enumerate("xyz")}
    if asset.primitive == "box":
        return {"symmetries_discrete": [_pose(r) for r in _box_rotations(np.asarray(asset.params["extents"]))]}
    if asset.primitive == "sphere":  # every turn; BOP lists axes, so the three principal ones
        return {"symmetries_continuous": [about["x"], about["y"], about["z"]]}
    if asset.primitive == "cone":
        return {"symmetries_continuous": [about["z"]]}
    if asset.primitive in ("cylinder", "capsule", "torus"):
        return {"symmetries_continuous": [about["z"]], "symmetries_discrete": [_pose(flip)]}
    return {}


def _box_rotations(extents: np.ndarray) -> list[np.ndarray]:
    """The turns other than none that map a box of these extents onto itself: the proper signed
    permutations of the axes that only exchange axes of equal length."""
    turns = []
    for order in itertools.permutations(range(3)):
        if not np.allclose(extents[list(order)], extents, rtol=1e-9, atol=0):
            continue
        for signs in itertools.product((1.0, -1.0), repeat=3):
            turn = np.zeros((3, 3))
            turn[range(3), order] = signs
            if np.linalg.det(turn) > 0 and not np.array_equal(turn, np.eye(3)):
                turns.append(turn)
    return turns


def _pose(rotation: np.ndarray) -> list[float]:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    return [float(v) for v in pose.ravel()]


def diameter(points: np.ndarray) -> float:
    """The largest distance between two of the points (it joins two vertices of their convex hull)."""
    try:
        points = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # flat or degenerate: every point
        pass
    best = 0.0
    for start in range(0, len(points), 1024):
        block = points[start:start + 1024]
        best = max(best, float(np.sqrt(((block[:, None] - points[None]) ** 2).sum(-1).max())))
    return best


def _depth_scale(depth: np.ndarray) -> float:
    """The finest of ``DEPTH_SCALES`` whose 16 bits hold the image's farthest finite depth."""
    finite = depth[np.isfinite(depth)]
    farthest = float(finite.max()) * MM if finite.size else 0.0
    return next((s for s in DEPTH_SCALES if round(farthest / s) <= 65535), DEPTH_SCALES[-1])


def _camera_json(record: dict, depth_scale: float) -> dict:
    K = record["camera"]["K"]
    return {"cx": K[0][2], "cy": K[1][2], "fx": K[0][0], "fy": K[1][1], "depth_scale": depth_scale,
            "width": record["camera"]["width"], "height": record["camera"]["height"]}


def _write_scene(store: DatasetStore, views: list[dict], specs: dict, objects: dict[str, dict], folder: Path,
                 suffix: str, rgb_pass: str) -> None:
    for name in ("rgb", "depth", "mask", "mask_visib"):
        (folder / f"{name}{suffix}").mkdir(parents=True)
    cameras, gts, infos = {}, {}, {}
    for record in sorted(views, key=lambda r: r["index"]):
        im_id, spec = record["index"], specs[(record["index"], view_name(record))]
        link_or_copy(store.path(record, rgb_pass), folder / f"rgb{suffix}" / f"{im_id:06d}.png")
        depth = store.read_depth(record)
        scale = _depth_scale(depth)
        with np.errstate(invalid="ignore"):
            units = np.where(np.isfinite(depth), np.round(depth * MM / scale), 0)
        depth_png = np.where(units <= 65535, units, 0).astype(np.uint16)
        _write_png(folder / f"depth{suffix}" / f"{im_id:06d}.png", depth_png)
        world_from_camera = np.asarray(record["camera"]["world_from_camera"])
        camera_from_world = np.linalg.inv(world_from_camera)
        cameras[str(im_id)] = {"cam_K": _flat(record["camera"]["K"]), "depth_scale": scale,
                               "cam_R_w2c": _flat(camera_from_world[:3, :3]),
                               "cam_t_w2c": _flat(camera_from_world[:3, 3] * MM)}
        instance = store.read_instance(record)
        gts[str(im_id)], infos[str(im_id)] = [], []
        for gt_idx, obj in enumerate(record["objects"]):
            entry = objects[obj["asset"]]
            mesh = _mesh(entry)
            camera_from_object = np.asarray(obj["camera_from_object"])
            model_to_camera = camera_from_object.copy()
            model_to_camera[:3, 3] = camera_from_object[:3, :3] @ _model_origin(mesh) + camera_from_object[:3, 3]
            gts[str(im_id)].append({"obj_id": entry["obj_id"], "cam_R_m2c": _flat(model_to_camera[:3, :3]),
                                    "cam_t_m2c": _flat(model_to_camera[:3, 3] * MM)})
            us, vs, _ = canvas_silhouette(mesh, spec.camera, camera_from_object)
            us, vs = us.astype(int), vs.astype(int)
            mask = np.zeros(instance.shape, bool)
            inside = (us >= 0) & (us < mask.shape[1]) & (vs >= 0) & (vs < mask.shape[0])
            mask[vs[inside], us[inside]] = True
            visible = instance == obj["instance_id"]
            name = f"{im_id:06d}_{gt_idx:06d}.png"
            _write_png(folder / f"mask{suffix}" / name, mask.astype(np.uint8) * 255)
            _write_png(folder / f"mask_visib{suffix}" / name, visible.astype(np.uint8) * 255)
            infos[str(im_id)].append(gt_info(us, vs, mask, visible, depth_png))
    _write_json(folder / f"scene_camera{suffix}.json", cameras)
    _write_json(folder / f"scene_gt{suffix}.json", gts)
    _write_json(folder / f"scene_gt_info{suffix}.json", infos)


def gt_info(us: np.ndarray, vs: np.ndarray, mask: np.ndarray, visible: np.ndarray, depth_png: np.ndarray) -> dict:
    """One object's ``scene_gt_info`` entry from its silhouette on the canvas (pixel indices
    ``us, vs``, also beyond the image), its in-image silhouette ``mask``, its visible mask and the
    written depth image, as bop_toolkit's ``calc_gt_info`` defines each field."""
    all_count, visib_count = len(us), int(visible.sum())
    return {
        "bbox_obj": _box(us, vs) if visib_count else [-1, -1, -1, -1],
        "bbox_visib": _box(*np.nonzero(visible)[::-1]) if visib_count else [-1, -1, -1, -1],
        "px_count_all": all_count,
        "px_count_valid": int((depth_png[mask] > 0).sum()),
        "px_count_visib": visib_count,
        "visib_fract": visib_count / all_count if all_count else 0.0,
    }


def _box(xs: np.ndarray, ys: np.ndarray) -> list[int]:
    """bop_toolkit's ``calc_2d_bbox``: ``[x_min, y_min, x_max - x_min, y_max - y_min]`` of pixel indices."""
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0, int(ys.max()) - y0]


def _flat(matrix: np.ndarray | list) -> list[float]:
    return [float(v) for v in np.ravel(matrix)]


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())


def _write_json(path: Path, content: dict) -> None:
    """One key per line, in numeric order where keys are ids (as bop_toolkit's ``save_json`` lays it out)."""
    keys = sorted(content, key=lambda k: (0, int(k)) if k.isdigit() else (1, k))
    lines = [f"  {json.dumps(k)}: {json.dumps(content[k], sort_keys=True, allow_nan=False)}" for k in keys]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
