"""Contact sheets: one row per view (a frame's, or each rig camera's of it) with RGB, depth,
normals, instances (boxes, class names, keypoints and skeletons, dashed amodal outlines), forward
flow (colour wheel) in sequences, disparity in stereo views, the clean RGB and the depth sensor's
depth (holes black) with a sensor model, what glass hides (depth and instances behind) with
``render.behind``, and the refined RGB when there is one; the refiner's
before/after sheet; and a sequence's animation, boxes and track ids drawn on each frame."""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import cv2
import numpy as np

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import FORWARD_VALID, instance_boundaries

from .rle import decode_mask
from .stats import CLIPPED_WARNING
from .store import DatasetStore, frames_of, view_name, view_stem

MIN_TILE_WIDTH = 256  # small renders are enlarged (nearest) so that class names stay legible
AMODAL_DASH = 4  # pixels on, then off, along the dashed amodal outlines
CLIPPED_COLOUR = (255, 0, 0)  # frame and caption of an RGB tile with too many clipped pixels


def contact_sheet(store: DatasetStore, indices: list[int] | None = None, max_frames: int = 6,
                  clipped_threshold: float = CLIPPED_WARNING) -> np.ndarray:
    """An RGB image of the chosen frames (the first ``max_frames`` by default), a row per view; the
    RGB tile of a view with more than ``clipped_threshold`` of its pixels clipped is framed in red
    and says so."""
    frames = frames_of(store.records())
    if indices is None:
        frames = frames[:max_frames]
    else:
        by_index = {views[0]["index"]: views for views in frames}
        if unknown := [i for i in indices if i not in by_index]:
            raise UserError(f"--frames: {store.root} has no finished frame {unknown[0]} "
                            f"(its frames are {min(by_index)} .. {max(by_index)}, {len(by_index)} finished)")
        frames = [by_index[i] for i in indices]
    records = [record for views in frames for record in views]
    rows = [_row(store, record, clipped_threshold) for record in records]
    width = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])


def before_after_sheet(store: DatasetStore, records: list[dict], refined: list[np.ndarray]) -> np.ndarray:
    """One row per frame: render, refined image, and each with the instance outlines drawn,
    so that any object the refiner moved, grew or erased shows against its label."""
    rows = []
    for record, after in zip(records, refined):
        before = store.read_rgb(record)
        scale = max(1, -(-MIN_TILE_WIDTH // before.shape[1]))
        instance = cv2.resize(store.read_instance(record), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        outline = instance_boundaries(instance)
        tiles = []
        for name, image in (("render", before), ("refined", after)):
            big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            edged = big.copy()
            edged[outline] = (255, 0, 255)
            tiles += [(name, big), (f"{name} + labels", edged)]
        for name, tile in tiles:
            cv2.putText(tile, f"{record['index']:06d} {name}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate([tile for _, tile in tiles], axis=1))
    width = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])


def instance_colour(instance_id: int) -> tuple[int, int, int]:
    """A distinct, stable colour per instance id (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((instance_id * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _row(store: DatasetStore, record: dict, clipped_threshold: float) -> np.ndarray:
    rgb = store.read_rgb(record)
    scale = max(1, -(-MIN_TILE_WIDTH // rgb.shape[1]))

    def enlarge(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)

    tiles = [("rgb", rgb), ("depth", depth_colours(store.read_depth(record))),
             ("normals", _normal_colours(store.read_normals(record)))]
    tiles = [(name, enlarge(image)) for name, image in tiles]
    tiles.append(("instances", instance_tile(store, record)))
    if "flow_forward" in record["files"]:
        valid = store.read_flow_valid(record) & FORWARD_VALID > 0
        tiles.append(("flow", enlarge(flow_colours(store.read_flow(record, "flow_forward"), valid))))
    if "disparity" in record["files"]:
        disparity = store.read_disparity(record)
        tiles.append(("disparity", enlarge(depth_colours(np.where(disparity > 0, 1 / disparity, np.inf)))))
    if "rgb_clean" in record["files"]:
        tiles.append(("clean", enlarge(store.read_rgb(record, "rgb_clean"))))
    if "depth_sensor" in record["files"]:
        sensed = store.read_depth_sensor(record)
        tiles.append(("depth sensor", enlarge(depth_colours(np.where(sensed > 0, sensed, np.inf)))))
    if "depth_behind" in record["files"]:
        tiles.append(("depth behind", enlarge(depth_colours(store.read_pass(record, "depth_behind")))))
        tiles.append(("behind", enlarge(_id_colours(rgb, store.read_pass(record, "instance_behind")))))
    if "rgb_refined" in record["files"]:
        tiles.append(("refined", enlarge(store.read_rgb(record, "rgb_refined"))))
    title = view_stem(record["index"], view_name(record))
    for name, tile in tiles:
        cv2.putText(tile, f"{title} {name}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    clipped = record.get("clipped_fraction", 0.0)
    if clipped > clipped_threshold:
        tile = tiles[0][1]
        cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), CLIPPED_COLOUR, 2)
        cv2.putText(tile, f"clipped {clipped:.1%}", (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, CLIPPED_COLOUR, 1, cv2.LINE_AA)
    return np.concatenate([tile for _, tile in tiles], axis=1)


def instance_tile(store: DatasetStore, record: dict) -> np.ndarray:
    """A view's instance tile (as in its contact-sheet row, without a caption): the RGB with each
    visible mask filled in its instance's colour, dashed amodal outlines, boxes with class names,
    keypoints and skeletons; small renders enlarged to at least ``MIN_TILE_WIDTH`` pixels."""
    rgb = store.read_rgb(record)
    scale = max(1, -(-MIN_TILE_WIDTH // rgb.shape[1]))
    instance = cv2.resize(store.read_instance(record), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    overlay = _instance_overlay(cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST),
                                instance, record, scale)
    _draw_keypoints(overlay, record, scale, {c["id"]: c.get("skeleton", []) for c in store.meta["categories"]})
    return overlay


def flow_colours(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The usual flow colour wheel: hue = direction (+x right is red), saturation = speed relative
    to the fastest valid pixel; invalid pixels black."""
    speed = np.linalg.norm(flow, axis=-1)
    fastest = max(float(speed[valid].max()) if valid.any() else 0.0, 1e-6)
    angle = (np.degrees(np.arctan2(flow[..., 1], flow[..., 0])) % 360) / 2  # OpenCV hue: 0..180
    hsv = np.stack([angle, np.clip(speed / fastest, 0, 1) * 255, np.full(speed.shape, 255.0)], axis=-1).astype(np.uint8)
    return np.where(valid[..., None], cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0).astype(np.uint8)


def sequence_frames(store: DatasetStore, scene_index: int, camera: str | None = None) -> list[np.ndarray]:
    """The frames of sequence ``scene_index`` in time order as ``camera`` saw them (None: the
    first of the store's cameras), each with its objects' boxes and track (instance) ids drawn,
    for an animation."""
    camera = store.cameras[0] if camera is None else camera
    records = sorted((r for r in store.records()
                      if r.get("sequence", {}).get("scene_index") == scene_index and view_name(r) == camera),
                     key=lambda r: r["sequence"]["frame"])
    if not records:
        raise UserError(f"--sequence: {store.root} has no finished frames of sequence {scene_index}")
    frames = []
    for record in records:
        rgb = store.read_rgb(record)
        scale = max(1, -(-MIN_TILE_WIDTH // rgb.shape[1]))
        image = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        _draw_boxes(image, record, scale, lambda obj: str(obj["instance_id"]), 0.4)
        cv2.putText(image, f"sequence {scene_index} frame {record['sequence']['frame']}", (4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        frames.append(image)
    return frames


def depth_colours(depth: np.ndarray) -> np.ndarray:
    """Turbo colours of a depth map, near = red, scaled to its 1st..99th percentile; inf black."""
    finite = np.isfinite(depth)
    if not finite.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    near, far = np.percentile(depth[finite], [1, 99])
    scaled = np.clip((np.where(finite, depth, far) - near) / max(far - near, 1e-6), 0, 1)
    colours = cv2.applyColorMap((255 * (1 - scaled)).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where(finite[..., None], colours, 0).astype(np.uint8)


def _id_colours(rgb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The RGB darkened, each nonzero id's pixels filled in its instance colour."""
    palette = np.array([instance_colour(i) for i in range(int(ids.max()) + 1)], np.uint8)
    return np.where(ids[..., None] > 0, palette[ids], rgb // 3).astype(np.uint8)


def _normal_colours(normals: np.ndarray) -> np.ndarray:
    hit = np.linalg.norm(normals, axis=-1, keepdims=True) > 0
    return np.where(hit, (normals * 0.5 + 0.5) * 255, 0).astype(np.uint8)


def _instance_overlay(rgb: np.ndarray, instance: np.ndarray, record: dict, scale: int) -> np.ndarray:
    palette = np.array([(0, 0, 0)] + [instance_colour(i) for i in range(1, int(instance.max()) + 1)], np.uint8)
    overlay = np.where(instance[..., None] > 0, (0.45 * rgb + 0.55 * palette[instance]), 0.35 * rgb).astype(np.uint8)
    _draw_amodal_outlines(overlay, record, scale)
    _draw_boxes(overlay, record, scale, lambda obj: obj["category"], 0.35)
    return overlay


def _draw_amodal_outlines(image: np.ndarray, record: dict, scale: int) -> None:
    """Dash each object's amodal outline (its whole silhouette, enlarged ``scale`` times) in the
    object's colour: where it leaves the filled visible mask, the object is hidden."""
    ys, xs = np.indices(image.shape[:2])
    dashes = (xs + ys) // AMODAL_DASH % 2 == 0
    for obj in record["objects"]:
        if "amodal_mask" not in obj:  # stores written before amodal masks have none
            continue
        amodal = np.kron(decode_mask(obj["amodal_mask"]), np.ones((scale, scale), bool))
        image[amodal & instance_boundaries(amodal) & dashes] = instance_colour(obj["instance_id"])


def _draw_boxes(image: np.ndarray, record: dict, scale: int, caption: Callable[[dict], str], font_scale: float) -> None:
    """Draw each visible object's box (enlarged ``scale`` times) and ``caption(obj)`` above it, in
    the object's colour."""
    for obj in record["objects"]:
        if not obj["visible_pixels"]:
            continue
        x, y, w, h = (v * scale for v in obj["bbox_xywh"])
        colour = instance_colour(obj["instance_id"])
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), colour, 1)
        cv2.putText(image, caption(obj), (x + 2, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, 1,
                    cv2.LINE_AA)


def _draw_keypoints(image: np.ndarray, record: dict, scale: int, skeletons: dict[int, list[list[int]]]) -> None:
    """Draw each visible object's keypoints (enlarged ``scale`` times) in its colour: a filled dot
    when visible, a ring when occluded, skeleton edges between labeled keypoints."""
    for obj in record["objects"]:
        keypoints = obj.get("keypoints") or []
        if not obj["visible_pixels"] or not keypoints:
            continue
        colour = instance_colour(obj["instance_id"])
        # A pixel centre u is at (u + 0.5) * scale - 0.5 in the enlarged image.
        at = [(round((u + 0.5) * scale - 0.5), round((v + 0.5) * scale - 0.5)) for u, v, _ in keypoints]
        for a, b in skeletons.get(obj["category_id"], []):
            if keypoints[a][2] and keypoints[b][2]:
                cv2.line(image, at[a], at[b], colour, 1, cv2.LINE_AA)
        for point, (_, _, flag) in zip(at, keypoints):
            if flag:
                cv2.circle(image, point, 3, colour, -1 if flag == 2 else 1, cv2.LINE_AA)
