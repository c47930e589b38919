"""Scene sampling: ``sample(recipe, index) -> SceneSpec``, pure and order-independent.

The seed of scene *i* is a hash of (recipe seed, i). Objects, camera, lights and world each draw
from their own child stream of that seed, so changing how the camera is sampled never moves the
objects. No global RNG and no clock are used anywhere.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from collections import Counter

import numpy as np

from sceneforge.errors import UserError

from .assets import asset_mesh
from .distributions import draw
from .placement import Body, Layout, Rect, Region
from .recipe import HSV, MAX_INSTANCES, Bin, Light, Material, ObjectGroup, Recipe, Support
from .spec import (
    AssetRef,
    CameraSpec,
    GroundSpec,
    LightSpec,
    MaterialSpec,
    ObjectSpec,
    PropSpec,
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
    objects_rng, lights_rng, world_rng, supports_rng = (_stream(seed, key) for key in ((0,), (1,), (2,), (4,)))
    camera_rng = _stream(seed, (3, frame_in_scene))
    width, height = recipe.render.resolution
    objects, props = _sample_objects(recipe, scene_index, objects_rng, supports_rng)
    return SceneSpec(
        index=index,
        scene_index=scene_index,
        seed=seed,
        camera=_sample_camera(recipe, width, height, camera_rng),
        objects=objects,
        props=props,
        lights=[_sample_light(light, lights_rng) for light in recipe.lights],
        ground=None if recipe.ground is None else GroundSpec(
            size=recipe.ground.size, material=_sample_material(recipe.ground.material, world_rng)
        ),
        background_color=_sample_color(recipe.background.color, world_rng),
        background_strength=max(0.0, float(draw(recipe.background.strength, world_rng))),
        render=RenderSpec(
            **recipe.render.model_dump(exclude={"resolution"}),
            cycles_seed=int(camera_rng.integers(0, 2**31)),
        ),
    )


def _stream(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    """An independent random stream of a scene seed: objects (0), lights (1), world (2), camera of
    frame f (3, f), supports (4)."""
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


def _sample_objects(
    recipe: Recipe, scene_index: int, rng: np.random.Generator, supports_rng: np.random.Generator
) -> tuple[list[ObjectSpec], list[PropSpec]]:
    """The scene's labeled objects and its props (support parts, then distractors), at rest."""
    layout = Layout(recipe.placement.min_gap)
    props, surfaces = _build_supports(recipe, scene_index, layout, supports_rng)
    physics = recipe.placement.physics
    attempts = physics.attempts if physics else 1
    for _ in range(attempts):
        layout.clear_loose()
        placed = _scatter(recipe, scene_index, layout, surfaces, rng)
        if physics is None or (problem := layout.settle(physics.seconds)) is None:
            break
    else:
        group_index = next(g for g, body, _, _ in placed if body == problem[0])
        raise UserError(
            f"{recipe.where('placement', 'physics')}: scene {scene_index}: in each of {attempts} drops an "
            f"object did not come to rest on its support (last: a '{recipe.objects[group_index].category}' "
            f"{problem[1]}); raise placement.physics.seconds, lower drop_height or place fewer objects"
        )
    category_ids = {name: i + 1 for i, name in enumerate(recipe.categories)}
    objects = []
    for group_index, body, asset, material in placed:
        group, pose = recipe.objects[group_index], _matrix(layout.bodies[body].pose)
        if group.distractor:
            props.append(PropSpec(name=group.category, asset=asset, world_from_object=pose, material=material))
        else:
            objects.append(ObjectSpec(
                instance_id=len(objects) + 1, category_id=category_ids[group.category], category=group.category,
                asset=asset, world_from_object=pose, material=material,
            ))
    return objects, props


def _build_supports(
    recipe: Recipe, scene_index: int, layout: Layout, rng: np.random.Generator
) -> tuple[list[PropSpec], dict[str, list[Rect]]]:
    """Add the supports' parts to the layout; returns them as props, and the surfaces objects can
    stand on by name (the ground's is ``placement.area``)."""
    width, depth = recipe.placement.area
    surfaces = {"ground": [Rect(np.eye(4), (width / 2, depth / 2), whole=False)]}
    props = []
    for i, support in enumerate(recipe.supports):
        size = np.array([float(draw(v, rng)) for v in support.size])
        x, y = (float(draw(v, rng)) for v in support.position)
        yaw = math.radians(float(draw(support.yaw_deg, rng)))
        material = _sample_material(support.material, rng)
        world_from_support = _pose(_yaw(yaw), (x, y, 0.0))
        parts, tops = _support_parts(support, size)
        if parts is None:
            raise UserError(
                f"{recipe.where('supports', i, 'size')}: scene {scene_index}: drew {size.round(4).tolist()}; "
                f"too small for boards {support.thickness:g} m thick"
            )
        first = len(layout.bodies)
        posed = []
        for extents, bottom_centre in parts:
            asset = AssetRef.primitive_asset("box", {"extents": tuple(float(e) for e in extents)})
            pose = world_from_support @ _pose(np.eye(3), bottom_centre)
            posed.append((asset_mesh(asset), pose))
            props.append(PropSpec(name=support.name, asset=asset, world_from_object=_matrix(pose), material=material))
        if not layout.add_fixed(posed):
            raise UserError(
                f"{recipe.where('supports', i)}: scene {scene_index}: '{support.name}' overlaps another support; "
                "move it (position) or make it smaller"
            )
        region = Region(world_from_support, (size[0] / 2, size[1] / 2))
        surfaces[support.name] = [
            Rect(world_from_support @ _pose(np.eye(3), (0.0, 0.0, top)), half, part=first + part, region=region)
            for part, top, half in tops
        ]
    return props, surfaces


def _support_parts(support: Support, size: np.ndarray) -> tuple[list | None, list]:
    """A support as boxes in its own frame (origin at its footprint's centre on the ground):
    ([(extents, bottom centre)], [(part index, top height, half size) of each surface]), or
    (None, []) when its boards do not fit in ``size``."""
    (width, depth, height), t = size, support.thickness
    if isinstance(support, Bin):
        if min(width, depth) <= 2 * t or height <= t:
            return None, []
        inner = (width - 2 * t, depth - 2 * t)
        parts = [
            ((width, depth, t), (0.0, 0.0, 0.0)),  # the floor, then the four walls standing on it
            ((t, depth, height - t), (-(width - t) / 2, 0.0, t)),
            ((t, depth, height - t), ((width - t) / 2, 0.0, t)),
            ((inner[0], t, height - t), (0.0, -(depth - t) / 2, t)),
            ((inner[0], t, height - t), (0.0, (depth - t) / 2, t)),
        ]
        return parts, [(0, t, (inner[0] / 2, inner[1] / 2))]
    if width <= 2 * t or height < t * support.boards:
        return None, []
    inner = width - 2 * t
    parts = [((t, depth, height), (-(width - t) / 2, 0.0, 0.0)), ((t, depth, height), ((width - t) / 2, 0.0, 0.0))]
    step = (height - t) / (support.boards - 1) if support.boards > 1 else 0.0
    bottoms = [k * step for k in range(support.boards)] if support.boards > 1 else [height - t]
    parts += [((inner, depth, t), (0.0, 0.0, z)) for z in bottoms]
    return parts, [(2 + k, z + t, (inner / 2, depth / 2)) for k, z in enumerate(bottoms)]


def _scatter(
    recipe: Recipe, scene_index: int, layout: Layout, surfaces: dict[str, list[Rect]], rng: np.random.Generator
) -> list[tuple[int, int, AssetRef, MaterialSpec]]:
    """Stand every object on its surface; returns (group index, body index, asset, material) of each."""
    placement = recipe.placement
    drop_height = placement.physics.drop_height if placement.physics else 0.0
    by_category: dict[str, list[int]] = {}  # body indices of the objects placed so far, per category
    placed = []
    for group_index, group in enumerate(recipe.objects):
        count = int(draw(group.count, rng))
        if count < 0:
            raise UserError(f"{recipe.where('objects', group_index, 'count')}: drew {count}; counts must be >= 0")
        options: list[Rect] | list[int] = surfaces.get(group.on) or by_category.get(group.on, [])
        if count and not options:
            raise UserError(
                f"{recipe.where('objects', group_index, 'on')}: scene {scene_index}: there is no '{group.on}' "
                "object to stand on (its group drew a count of 0)"
            )
        for k in range(count):
            asset = _sample_asset(group, group_index, rng)
            mesh = asset_mesh(asset)
            material = _sample_material(group.material, rng)
            candidate = Body(mesh, np.eye(4), fixed=False)
            failures: Counter[str] = Counter()
            for _ in range(placement.max_tries):
                surface = options[int(rng.integers(len(options)))]
                body, why = layout.try_place(candidate, _sample_rotation(placement.rotation, rng), surface, rng, drop_height)
                if body is not None:
                    break
                failures[why] += 1
            else:
                extent = mesh.extents
                raise UserError(
                    f"{recipe.where('objects', group_index, 'count')}: scene {scene_index}: no room for "
                    f"'{group.category}' {k + 1} of {count} on {group.on} after {placement.max_tries} tries "
                    f"(placement.max_tries): {', '.join(f'{n} {why}' for why, n in failures.most_common())}; "
                    f"the object is {extent[0]:.3g} x {extent[1]:.3g} x {extent[2]:.3g} m. Place fewer or smaller "
                    "objects, or give them a larger surface or a smaller placement.min_gap"
                )
            placed.append((group_index, body, asset, material))
            by_category.setdefault(group.category, []).append(body)
            if len(placed) > MAX_INSTANCES:
                raise UserError(f"objects: more than {MAX_INSTANCES} objects in scene {scene_index}")
    return placed


def _sample_asset(group: ObjectGroup, group_index: int, rng: np.random.Generator) -> AssetRef:
    params: dict = {}
    for name, value in group.asset:
        if name == "primitive":
            continue
        drawn = tuple(float(draw(v, rng)) for v in value) if isinstance(value, tuple) else float(draw(value, rng))
        if min(np.atleast_1d(drawn)) <= 0:
            raise UserError(f"objects[{group_index}].asset.{name}: drew {drawn}; dimensions must be > 0")
        params[name] = drawn
    return AssetRef.primitive_asset(group.asset.primitive, params)


def _sample_rotation(mode: str, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 rotation: about +Z only (``yaw``), or uniform over all orientations (``so3``)."""
    if mode == "yaw":
        return _yaw(rng.uniform(0.0, 2 * math.pi))
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)  # a uniform unit quaternion
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _yaw(angle: float) -> np.ndarray:
    """The 3x3 rotation by ``angle`` (radians) about +Z."""
    return np.array([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])


def _pose(rotation: np.ndarray, translation) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


def _sample_material(material: Material, rng: np.random.Generator) -> MaterialSpec:
    return MaterialSpec(
        base_color=_sample_color(material.color, rng),
        roughness=_unit(draw(material.roughness, rng)),
        metallic=_unit(draw(material.metallic, rng)),
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
