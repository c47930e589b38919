"""Scene sampling: ``sample(recipe, index) -> SceneSpec``, pure and order-independent.

The seed of scene *i* is a hash of (recipe seed, i). Objects, camera, lights and world each draw
from their own child stream of that seed, so changing how the camera is sampled never moves the
objects. No global RNG and no clock are used anywhere.
"""

from __future__ import annotations

import colorsys
import hashlib
import math

import numpy as np

from sceneforge.errors import UserError

from .assets import asset_mesh
from .distributions import draw
from .recipe import HSV, MAX_INSTANCES, LibraryAsset, Light, Material, ObjectGroup, Recipe
from .spec import (
    AssetRef,
    CameraSpec,
    GroundSpec,
    LightSpec,
    MaterialSpec,
    ObjectSpec,
    RenderSpec,
    SceneSpec,
)

# OpenCV camera axes (x right, y down, z forward) -> Blender's (x right, y up, z backward).
CV_TO_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])


def scene_seed(recipe_seed: int, index: int) -> int:
    """The 63-bit seed of scene ``index``, a hash of the recipe seed and the index."""
    digest = hashlib.blake2b(f"{recipe_seed}/{index}".encode(), digest_size=8, person=b"sceneforge").digest()
    return int.from_bytes(digest, "little") >> 1


def sample(recipe: Recipe, index: int) -> SceneSpec:
    """Frame ``index``: the same recipe and index always give the same spec.

    With ``camera.frames_per_scene = n``, frames ``k*n .. k*n+n-1`` show scene ``k`` from
    ``n`` camera poses: they share objects, lights and world, and differ in camera and noise.
    """
    scene_index, frame_in_scene = divmod(index, recipe.camera.frames_per_scene)
    seed = scene_seed(recipe.seed, scene_index)
    objects_rng, lights_rng, world_rng = (_stream(seed, key) for key in ((0,), (1,), (2,)))
    camera_rng = _stream(seed, (3, frame_in_scene))
    width, height = recipe.render.resolution
    return SceneSpec(
        index=index,
        scene_index=scene_index,
        seed=seed,
        camera=_sample_camera(recipe, width, height, camera_rng),
        objects=_sample_objects(recipe, scene_index, objects_rng),
        lights=[_sample_light(light, lights_rng) for light in recipe.lights],
        ground=None if recipe.ground is None else GroundSpec(
            size=recipe.ground.size, material=_sample_material(recipe.ground.material, "ground.material", world_rng)
        ),
        background_color=_sample_color(recipe.background.color, world_rng),
        background_strength=max(0.0, float(draw(recipe.background.strength, world_rng))),
        render=RenderSpec(
            **recipe.render.model_dump(exclude={"resolution"}),
            cycles_seed=int(camera_rng.integers(0, 2**31)),
        ),
    )


def _stream(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    """An independent random stream of a scene seed: objects (0), lights (1), world (2), camera of frame f (3, f)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """world_from_camera (4x4, OpenCV axes) of a camera at ``eye`` looking at ``target``, +Z up.

    Looking straight down or up, image "up" is world +Y.
    """
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, [0.0, 1.0, 0.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def _on_sphere(center: np.ndarray, distance: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return center + distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


def _sample_camera(recipe: Recipe, width: int, height: int, rng: np.random.Generator) -> CameraSpec:
    cam = recipe.camera
    target = np.array([draw(v, rng) for v in cam.look_at], dtype=float)
    distance = float(draw(cam.distance, rng))
    if distance <= 0:
        raise UserError(f"camera.distance: drew {distance:g}; the camera distance must be > 0")
    eye = _on_sphere(target, distance, draw(cam.elevation_deg, rng), draw(cam.azimuth_deg, rng))
    if cam.intrinsics is None:
        focal = (width / 2) / math.tan(math.radians(cam.fov_deg) / 2)
        # OpenCV convention: integer pixel coordinates are pixel centres, so the centre is (W-1)/2.
        fx, fy, cx, cy = focal, focal, (width - 1) / 2, (height - 1) / 2
    else:
        fx, fy, cx, cy = cam.intrinsics.fx, cam.intrinsics.fy, cam.intrinsics.cx, cam.intrinsics.cy
    K = ((fx, 0.0, cx), (0.0, fy, cy), (0.0, 0.0, 1.0))
    return CameraSpec(
        K=K, world_from_camera=_matrix(look_at(eye, target)), width=width, height=height,
        clip_start=cam.clip_start, clip_end=cam.clip_end,
    )


def _sample_objects(recipe: Recipe, scene_index: int, rng: np.random.Generator) -> list[ObjectSpec]:
    category_ids = {name: i + 1 for i, name in enumerate(recipe.categories)}
    placed: list[tuple[float, float, float]] = []  # (x, y, footprint radius)
    objects: list[ObjectSpec] = []
    library = recipe.library
    for group_index, group in enumerate(recipe.objects):
        count = int(draw(group.count, rng))
        if count < 0:
            raise UserError(f"objects[{group_index}].count: drew {count}; counts must be >= 0")
        for _ in range(count):
            asset = _sample_asset(group, group_index, library, rng)
            rotation = _sample_rotation(recipe.placement.rotation, rng)
            turned = asset_mesh(asset).vertices @ rotation.T
            radius = float(np.max(np.linalg.norm(turned[:, :2], axis=1)))  # footprint seen from above
            x, y = _place(recipe, scene_index, group, radius, placed, rng)
            pose = np.eye(4)
            pose[:3, :3] = rotation
            pose[:3, 3] = (x, y, -turned[:, 2].min())  # resting on the ground
            objects.append(ObjectSpec(
                instance_id=len(objects) + 1,
                category_id=category_ids[group.category],
                category=group.category,
                asset=asset,
                world_from_object=_matrix(pose),
                material=_sample_material(group.material, f"objects[{group_index}].material", rng),
            ))
            if len(objects) > MAX_INSTANCES:
                raise UserError(f"objects: more than {MAX_INSTANCES} objects in scene {scene_index}")
    return objects


def _sample_asset(
    group: ObjectGroup, group_index: int, library: dict[str, tuple[AssetRef, ...]], rng: np.random.Generator,
) -> AssetRef:
    if isinstance(group.asset, LibraryAsset):
        choices = library.get(group.asset.library)
        if not choices:
            raise UserError(f"objects[{group_index}].asset.library: no loaded assets of category "
                            f"{group.asset.library!r} (a recipe with assets must come from load_recipe)")
        return choices[int(rng.integers(len(choices)))]
    params: dict = {}
    for name, value in group.asset:
        if name == "primitive":
            continue
        drawn = tuple(float(draw(v, rng)) for v in value) if isinstance(value, tuple) else float(draw(value, rng))
        if min(np.atleast_1d(drawn)) <= 0:
            raise UserError(f"objects[{group_index}].asset.{name}: drew {drawn}; dimensions must be > 0")
        params[name] = drawn
    return AssetRef.primitive_asset(group.asset.primitive, params)


def _place(
    recipe: Recipe, scene_index: int, group: ObjectGroup, radius: float,
    placed: list[tuple[float, float, float]], rng: np.random.Generator,
) -> tuple[float, float]:
    """A ground position whose footprint circle keeps ``min_gap`` from every placed one."""
    half_w, half_d = (a / 2 for a in recipe.placement.area)
    gap = recipe.placement.min_gap
    for _ in range(recipe.placement.max_tries):
        x, y = float(rng.uniform(-half_w, half_w)), float(rng.uniform(-half_d, half_d))
        if all(math.hypot(x - px, y - py) >= radius + pr + gap for px, py, pr in placed):
            placed.append((x, y, radius))
            return x, y
    raise UserError(
        f"placement: scene {scene_index}: no free spot for object {len(placed) + 1} ('{group.category}') "
        f"after {recipe.placement.max_tries} tries in a {recipe.placement.area[0]:g} x "
        f"{recipe.placement.area[1]:g} m area; enlarge placement.area, lower placement.min_gap "
        "or place fewer objects"
    )


def _sample_rotation(mode: str, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 rotation: about +Z only (``yaw``), or uniform over all orientations (``so3``)."""
    if mode == "yaw":
        yaw = rng.uniform(0.0, 2 * math.pi)
        return np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)  # a uniform unit quaternion
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _sample_material(material: Material, where: str, rng: np.random.Generator) -> MaterialSpec:
    """The changes a material makes to an asset's own; fields left out stay None (kept)."""
    texture = None
    if material.texture_folder is not None:
        if not material._textures:
            raise UserError(f"{where}.texture_folder: not listed (a recipe with textures must come from load_recipe)")
        texture = material._textures[int(rng.integers(len(material._textures)))]
    return MaterialSpec(
        base_color=None if material.color is None else _sample_color(material.color, rng),
        roughness=None if material.roughness is None else _unit(draw(material.roughness, rng)),
        metallic=None if material.metallic is None else _unit(draw(material.metallic, rng)),
        specular=None if material.specular is None else _unit(draw(material.specular, rng)),
        texture=texture,
        texture_size=material.texture_size,
    )


def _sample_light(light: Light, rng: np.random.Generator) -> LightSpec:
    position = _on_sphere(
        np.zeros(3), float(draw(light.distance, rng)), draw(light.elevation_deg, rng), draw(light.azimuth_deg, rng)
    )
    return LightSpec(
        type=light.type,
        energy=max(0.0, float(draw(light.energy, rng))),
        color=_sample_color(light.color, rng),
        world_from_light=_matrix(look_at(position, np.zeros(3)) @ CV_TO_BLENDER),
        size=light.size,
    )


def _sample_color(color: tuple | HSV, rng: np.random.Generator) -> tuple[float, float, float]:
    """Linear RGB; HSV colours are taken as sRGB-encoded, as colour pickers show them."""
    if isinstance(color, HSV):
        h, s, v = (float(draw(c, rng)) for c in color.hsv)
        srgb = colorsys.hsv_to_rgb(h % 1.0, _unit(s), _unit(v))
        return tuple(_srgb_to_linear(c) for c in srgb)  # type: ignore[return-value]
    return tuple(_unit(draw(c, rng)) for c in color)  # type: ignore[return-value]


def _srgb_to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def _matrix(m: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in m)
