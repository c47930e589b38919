"""Scene sampling: ``sample_views(recipe, index) -> [SceneSpec]`` (one per camera of a rig) and
``sample(recipe, index, camera) -> SceneSpec``, pure and order-independent.

The seed of scene *i* is a hash of (recipe seed, i). Objects, camera, lights and world each draw
from their own child stream of that seed, so changing how the camera is sampled never moves the
objects. No global RNG and no clock are used anywhere.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from sceneforge.floor.colour import srgb_to_linear
from sceneforge.floor.errors import UserError

from .assets import AssetError, Keypoints, asset_mesh, asset_model, environment_level
from .camera import camera_rays, lens_problem
from .distributions import draw, draw_rotation, draw_vector, rotation_about_z
from .library import LibraryFile
from .motion import camera_track, catmull_rom, held, kinematic_poses, orbit_eyes, path_poses, shake, shaken
from .placement import Body, Layout, Rect, Region
from .raycast import visible_fractions
from .recipe import (
    HSV,
    MAX_INSTANCES,
    Bin,
    Camera,
    Exposure,
    Ground,
    LibraryAsset,
    LookAt,
    Material,
    ObjectGroup,
    Recipe,
    Shelf,
    Support,
    cameras_inside_message,
    cameras_too_close,
    pinhole_matrix,
)
from .spec import (
    LENS_COEFFICIENTS,
    AssetRef,
    CameraSpec,
    DepthSensorSpec,
    ExposureSpec,
    GroundSpec,
    HdriSpec,
    LensSpec,
    LightSpec,
    MaterialSpec,
    MotionState,
    ObjectSpec,
    PropSpec,
    RenderSpec,
    SceneSpec,
    SensorSpec,
    SequenceSpec,
)

if TYPE_CHECKING:
    from .mesh import Mesh

DEFAULT_BACKGROUND = (0.05, 0.05, 0.05)  # linear RGB, when neither a colour nor an HDRI is given


def scene_seed(recipe_seed: int, index: int) -> int:
    """The 63-bit seed of scene ``index``, a hash of the recipe seed and the index."""
    digest = hashlib.blake2b(f"{recipe_seed}/{index}".encode(), digest_size=8, person=b"sceneforge").digest()
    return int.from_bytes(digest, "little") >> 1


def sample(recipe: Recipe, index: int, camera: str | None = None) -> SceneSpec:
    """Frame ``index`` as one camera sees it: the same recipe, index and camera always give the
    same spec.

    ``camera``: None for a recipe with a single camera; with a rig (or stereo pair), the name of
    one of its cameras (a ValueError otherwise; ``sample_views`` gives them all). With
    ``n = recipe.frames_per_scene``, frames ``k*n .. k*n+n-1`` show scene ``k``: they share
    objects, lights and world. Frames of a still scene differ in camera pose and noise; frames of
    a sequence are its instants in time order, with the poses of that instant.
    """
    names = recipe.camera_names
    if camera is None and len(names) > 1:
        raise ValueError(f"this recipe's frames have several views ({', '.join(names)}): name the camera, "
                         "or use sample_views")
    if (camera or "") not in names:
        raise ValueError(f"no camera {camera!r} in this recipe; its cameras: {', '.join(map(repr, names))}")
    return next(view for view in sample_views(recipe, index) if view.camera.name == (camera or ""))


def sample_views(recipe: Recipe, index: int) -> list[SceneSpec]:
    """Every view of frame ``index``, in the rig's camera order (one for a single camera).

    The rig is posed once per frame like a single camera (look-at, visibility, trajectory, shake);
    each view is the same scene at the same instant through its own camera, posed at
    ``rig pose @ the camera's pose on the rig``, with its own intrinsics and resolution.
    """
    frame = _rig_frame(recipe, index)
    if recipe.camera_names == [""]:
        return [frame]
    views = [_view(frame, view, position) for position, view in enumerate(_rig_views(recipe, frame.seed, frame.scene_index))]
    rig = [view.camera for view in views]
    return [view.model_copy(update={"rig": rig}) for view in views]


@dataclass(frozen=True)
class _RigView:
    """One rig camera of a scene, drawn once per scene (so that the rig is rigid over a sequence)."""

    name: str
    rig_from_camera: np.ndarray  # 4x4
    K: np.ndarray
    width: int
    height: int
    stereo_baseline: float | None


def _rig_views(recipe: Recipe, seed: int, scene_index: int) -> list[_RigView]:
    """The rig's cameras of a scene: poses on the rig, intrinsics and resolution (stream (13, 1))."""
    camera, rng = recipe.camera, scene_stream(seed, (13, 1))
    (width, height), K = recipe.render.resolution, np.asarray(recipe.intrinsic_matrix())
    if camera.stereo is not None:
        baseline = float(draw(camera.stereo.baseline, rng))  # > 0: checked when the recipe loads
        left, right = camera.stereo.names
        return [_RigView(left, np.eye(4), K, width, height, baseline),
                _RigView(right, _pose(np.eye(3), (baseline, 0.0, 0.0)), K, width, height, baseline)]
    views = []
    for view in camera.rig:
        position = draw_vector(view.position, rng)
        rx, ry, rz = (math.radians(float(draw(a, rng))) for a in view.rotation_deg)
        rotation = _about("z", rz) @ _about("y", ry) @ _about("x", rx)
        w, h = view.resolution or (width, height)
        own = view.intrinsics is not None or view.fov_deg is not None or (w, h) != (width, height)
        K_view = np.asarray(pinhole_matrix(view.fov_deg or camera.fov_deg, view.intrinsics, w, h)) if own else K
        views.append(_RigView(view.name, _pose(rotation, position), K_view, w, h, None))
    if (pair := cameras_too_close({i: tuple(v.rig_from_camera[:3, 3]) for i, v in enumerate(views)})) is not None:
        raise UserError(f"{recipe.where('camera', 'rig', pair[1], 'position')}: scene {scene_index}: "
                        f"{cameras_inside_message(camera.rig, pair)}")
    return views


def _about(axis: str, angle: float) -> np.ndarray:
    """The rotation by ``angle`` radians about the x, y or z axis."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    return rotation


def _view(frame: SceneSpec, view: _RigView, position: int) -> SceneSpec:
    """The rig's frame as one rig camera sees it: its own pose (also in the neighbouring motion
    states, so that flow is right per view), intrinsics and resolution, and its own noise (render
    and sensors draw the same models but not the same noise in every view: stream (14, index, k))."""
    offset = view.rig_from_camera
    rng = scene_stream(frame.seed, (14, frame.index, position))
    sensors = {name: None if model is None else model.model_copy(update={"seed": int(rng.integers(0, 2**63))})
               for name, model in (("sensor", frame.camera.sensor), ("depth_sensor", frame.camera.depth_sensor))}
    camera = frame.camera.model_copy(update={
        "name": view.name, "K": _matrix(view.K), "width": view.width, "height": view.height,
        "world_from_camera": _matrix(np.asarray(frame.camera.world_from_camera) @ offset),
        "stereo_baseline": view.stereo_baseline, **sensors,
    })
    sequence = frame.sequence
    if sequence is not None:
        moved = {name: None if state is None else state.model_copy(
                     update={"world_from_camera": _matrix(np.asarray(state.world_from_camera) @ offset)})
                 for name, state in (("previous", sequence.previous), ("next", sequence.next))}
        sequence = sequence.model_copy(update=moved)
    render = frame.render.model_copy(update={"noise_seed": int(rng.integers(0, 2**31))})
    return frame.model_copy(update={"camera": camera, "sequence": sequence, "render": render})


def _rig_frame(recipe: Recipe, index: int) -> SceneSpec:
    """Frame ``index`` through the rig itself: a single camera's spec, or the rig's pose and the
    recipe's intrinsics (what the views are placed from)."""
    scene_index, frame = divmod(index, recipe.frames_per_scene)
    scene = _scene(recipe, scene_index)
    camera_rng = scene_stream(scene.seed, (3, frame) if scene.motion is None else (8, frame))
    objects, props, sequence = scene.objects, scene.props, None
    if scene.motion is None:
        camera = _sample_camera(recipe, objects, props, scene.lens, f"scene {scene_index} frame {index}", camera_rng)[0]
    else:
        motion = scene.motion
        camera, objects, props = motion.camera(frame), motion.objects(frame), motion.props(frame)
        sequence = SequenceSpec(frame=frame, frames=motion.frames, fps=motion.fps, time_s=float(motion.times[frame]),
                                previous=motion.state(frame - 1), next=motion.state(frame + 1),
                                flow=recipe.sequence.flow)
    camera = _with_sensors(recipe.camera, camera, scene_stream(scene.seed, (10, frame)))
    # A sequence keeps one drawn exposure for all its frames (auto-exposure still meters each frame).
    exposure_rng = scene_stream(scene.seed, (13, 3, frame if scene.motion is None else 0))
    camera = camera.model_copy(update={"exposure": sample_exposure(recipe.camera.exposure, exposure_rng)})
    return SceneSpec(
        index=index,
        scene_index=scene_index,
        seed=scene.seed,
        camera=camera,
        objects=objects,
        props=props,
        lights=scene.lights,
        ground=scene.ground,
        background_color=scene.background_color,
        background_strength=scene.background_strength,
        hdri=scene.hdri,
        background_image=scene.background_image,
        render=RenderSpec(
            **recipe.render.model_dump(exclude={"resolution"}),
            noise_seed=int(camera_rng.integers(0, 2**31)),
        ),
        sequence=sequence,
    )


@dataclass(frozen=True)
class _Scene:
    """What all frames of one scene share; a sequence's motion too."""

    seed: int
    objects: list[ObjectSpec]  # a sequence's at time 0
    props: list[PropSpec]
    lights: list[LightSpec]
    ground: GroundSpec | None
    background_color: tuple[float, float, float]
    background_strength: float
    hdri: HdriSpec | None
    lens: LensSpec | None
    motion: SequenceMotion | None
    background_image: str | None = None


@dataclass(frozen=True)
class SequenceMotion:
    """The poses of a sequence at each frame time: camera, objects, props (T, 4, 4 each)."""

    fps: float
    times: np.ndarray
    start_camera: CameraSpec
    cameras: np.ndarray
    start_objects: list[ObjectSpec]
    object_poses: list[np.ndarray]
    start_props: list[PropSpec]
    prop_poses: list[np.ndarray]

    @property
    def frames(self) -> int:
        return len(self.times)

    def camera(self, frame: int) -> CameraSpec:
        return self.start_camera.model_copy(update={"world_from_camera": _matrix(self.cameras[frame])})

    def objects(self, frame: int) -> list[ObjectSpec]:
        return [o.model_copy(update={"world_from_object": _matrix(p[frame])}) for o, p in zip(self.start_objects, self.object_poses)]

    def props(self, frame: int) -> list[PropSpec]:
        return [o.model_copy(update={"world_from_object": _matrix(p[frame])}) for o, p in zip(self.start_props, self.prop_poses)]

    def state(self, frame: int) -> MotionState | None:
        """The poses at ``frame``; None outside the sequence."""
        if not 0 <= frame < self.frames:
            return None
        return MotionState(time_s=float(self.times[frame]), world_from_camera=_matrix(self.cameras[frame]),
                           objects=[_matrix(p[frame]) for p in self.object_poses],
                           props=[_matrix(p[frame]) for p in self.prop_poses])


_SCENES: OrderedDict[tuple[int, int], tuple[Recipe, _Scene]] = OrderedDict()
_SCENES_KEPT = 8  # scenes whose frames are being sampled now (a few per worker in flight)


def _scene(recipe: Recipe, scene_index: int) -> _Scene:
    """The shared part of a scene, sampled once for all its frames (kept for the latest few scenes)."""
    key = (id(recipe), scene_index)
    if key in _SCENES and _SCENES[key][0] is recipe:  # the same recipe object, not one with a reused id
        _SCENES.move_to_end(key)
        return _SCENES[key][1]
    scene = _sample_scene(recipe, scene_index)
    _SCENES[key] = (recipe, scene)
    while len(_SCENES) > _SCENES_KEPT:
        _SCENES.popitem(last=False)
    return scene


def _sample_scene(recipe: Recipe, scene_index: int) -> _Scene:
    seed = scene_seed(recipe.seed, scene_index)
    objects_rng, lights_rng, world_rng, supports_rng = (scene_stream(seed, key) for key in ((0,), (1,), (2,), (4,)))
    files = _scene_files(recipe, seed)
    objects, props, layout, movers = _sample_objects(recipe, scene_index, seed, objects_rng, supports_rng, files)
    ground = None if recipe.ground is None else GroundSpec(
        size=recipe.ground.size,
        material=_sample_material(recipe.ground.material, "ground.material", world_rng, scene_stream(seed, (15, 3)),
                                  files),
    )
    background = recipe.background
    background_color = _sample_color(background.color or DEFAULT_BACKGROUND, world_rng)
    strength = max(0.0, float(draw(background.strength, world_rng)))
    hdri = None if background.hdri is None else _sample_hdri(recipe, scene_index, strength, world_rng,
                                                             scene_stream(seed, (16, 0)))
    image = None if background.image is None else _drawn_file(recipe, "image", background._images,
                                                               scene_stream(seed, (16, 1)))
    lens = _sample_lens(recipe, scene_index, scene_stream(seed, (13, 2)))
    motion = None if recipe.sequence is None else _sample_motion(recipe, scene_index, seed, objects, props, lens,
                                                                 layout, movers)
    lights = [spec for i, light in enumerate(recipe.lights) for spec in _sample_lights(recipe, i, lights_rng)]
    return _Scene(seed, objects, props, lights, ground, background_color, strength, hdri, lens, motion, image)


@dataclass(frozen=True)
class _SceneFiles:
    """The files one scene's materials draw from, by id of the recipe Material: the texture
    option drawn for the scene (materials whose texture_folder is a choice), and the opacity
    images of the option drawn with the stream each object wearing the material draws its image from."""

    textures: dict[int, tuple[str, ...]]
    opacities: dict[int, tuple[tuple[str, ...], np.random.Generator]]


def _scene_files(recipe: Recipe, seed: int) -> _SceneFiles:
    """The files drawn for the scene of ``seed`` (streams (16, 3..5, k) of the k-th material)."""
    return _SceneFiles(
        textures={id(material): _drawn_option(material._options, scene_stream(seed, (16, 3, k)))
                  for k, (_, material) in enumerate(recipe.materials()) if len(material._options) > 1},
        opacities={id(material): (_drawn_option(material._opacities, scene_stream(seed, (16, 4, k))),
                                  scene_stream(seed, (16, 5, k)))
                   for k, (_, material) in enumerate(recipe.materials()) if material._opacities},
    )


def _drawn_option(options: tuple[tuple[float, tuple], ...], rng: np.random.Generator) -> tuple:
    """The files of one option of a source (a file, folder or choice), drawn by weight."""
    if len(options) == 1:
        return options[0][1]
    weights = np.array([weight for weight, _ in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][1]


def _drawn_file(recipe: Recipe, field: str, options: tuple[tuple[float, tuple[str, ...]], ...],
                rng: np.random.Generator) -> str:
    """One file of a background source for a scene: an option by weight, then one of its files."""
    if not options:
        raise UserError(f"background.{field}: not listed (a recipe with files must come from load_recipe)")
    files = _drawn_option(options, rng)
    return files[int(rng.integers(len(files)))]


def _sample_hdri(recipe: Recipe, scene_index: int, strength: float, world_rng: np.random.Generator,
                 rng: np.random.Generator) -> HdriSpec:
    """The scene's HDRI (drawn from ``rng``), turned by a rotation from the world stream, its
    strength scaled so that its level is ``hdri_level`` when that is given."""
    background = recipe.background
    path = _drawn_file(recipe, "hdri", background._hdris, rng)
    rotation = float(draw(background.rotation_deg, world_rng))
    if background.hdri_level is not None:
        try:
            measured = environment_level(path)
        except (AssetError, OSError) as exc:
            raise UserError(f"{recipe.where('background', 'hdri')}: scene {scene_index}: {exc}") from None
        if not measured > 0:
            raise UserError(f"{recipe.where('background', 'hdri_level')}: scene {scene_index}: {path} is black in "
                            "its upper half (level 0); it cannot be brought to a level")
        strength *= max(0.0, float(draw(background.hdri_level, rng))) / measured
    return HdriSpec(path=path, rotation_deg=rotation, strength=strength)


def _sample_lens(recipe: Recipe, scene_index: int, rng: np.random.Generator) -> LensSpec | None:
    """The scene's lens (one per scene, as a camera keeps its lens), checked not to fold the image."""
    lens = recipe.camera.lens
    if lens is None:
        return None
    spec = LensSpec(model=lens.model, coefficients=tuple(float(draw(c, rng)) for c in lens.coefficients))
    if (problem := lens_problem(recipe.lens_camera(spec))) is not None:
        drawn = ", ".join(f"{name} = {value:.4g}" for name, value in zip(LENS_COEFFICIENTS[spec.model], spec.coefficients))
        raise UserError(f"{recipe.where('camera', 'lens')}: scene {scene_index} drew {drawn}: {problem}")
    return spec


def _sample_motion(recipe: Recipe, scene_index: int, seed: int, objects: list[ObjectSpec], props: list[PropSpec],
                   lens: LensSpec | None, layout: Layout, movers: list[_Mover]) -> SequenceMotion:
    """Every pose of a sequence: objects by their groups' motion (or the simulation), then the camera."""
    sequence = recipe.sequence
    times = np.arange(sequence.frames) / sequence.fps
    span = float(times[-1])
    motion_rng, trajectory_rng, shake_rng = (scene_stream(seed, key) for key in ((5,), (6,), (7,)))
    body_poses: dict[int, np.ndarray] = {}
    throws: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for mover in movers:
        motion, body = recipe.objects[mover.group].motion, layout.bodies[mover.body]
        if motion is None:
            continue
        if motion.path is not None:
            body_poses[mover.body] = path_poses(body.pose, np.array(motion.path), times, span)
            continue
        velocity = draw_vector(motion.velocity, motion_rng)
        angular = draw_vector(motion.angular_velocity_deg, motion_rng)
        if sequence.physics:
            throws[mover.body] = (velocity, np.radians(angular))
        else:
            centre = body.pose[:3, :3] @ body.mesh.bounds.mean(axis=0) + body.pose[:3, 3]
            body_poses[mover.body] = kinematic_poses(body.pose, centre, times, velocity, angular)
    if sequence.physics:
        simulated, problem = layout.simulate(times, throws)
        if problem is not None:
            group = next(m.group for m in movers if m.body == problem[0])
            raise UserError(f"{recipe.where('sequence', 'physics')}: scene {scene_index}: a "
                            f"'{recipe.objects[group].category}' {problem[1]}; the simulation is unstable: "
                            "lower the objects' velocities or drop heights")
        body_poses.update(simulated)
    def track(kind: str, bodies: list[ObjectSpec] | list[PropSpec]) -> list[np.ndarray]:
        """Poses (T, 4, 4) of each object or prop: its motion's, or where it stands throughout."""
        body_of = {m.index: m.body for m in movers if m.kind == kind}
        return [body_poses[body_of[i]] if body_of.get(i) in body_poses else held(b.world_from_object, times)
                for i, b in enumerate(bodies)]

    object_poses, prop_poses = track("object", objects), track("prop", props)
    start, target = _sample_camera(recipe, objects, props, lens, f"scene {scene_index} frame 0", scene_stream(seed, (3, 0)))
    cameras = _camera_trajectory(recipe, scene_index, start, target, objects, object_poses, times, trajectory_rng, shake_rng)
    return SequenceMotion(sequence.fps, times, start, cameras, objects, object_poses, props, prop_poses)


def _camera_trajectory(recipe: Recipe, scene_index: int, start: CameraSpec, target: np.ndarray,
                       objects: list[ObjectSpec], object_poses: list[np.ndarray], times: np.ndarray,
                       rng: np.random.Generator, shake_rng: np.random.Generator) -> np.ndarray:
    """world_from_camera (T, 4, 4) along the recipe's trajectory from the start pose; still without one."""
    trajectory, pose = recipe.camera.trajectory, np.asarray(start.world_from_camera)
    if trajectory is None:
        return held(pose, times)
    eye, span = pose[:3, 3], float(times[-1])
    roll = look_at(eye, target)[:3, :3].T @ pose[:3, :3]
    if trajectory.type == "orbit":
        eyes, elevation = orbit_eyes(target, eye, times, float(draw(trajectory.degrees_per_second, rng)),
                                     float(draw(trajectory.elevation_deg_per_second, rng)))
        if np.abs(elevation).max() >= 90:
            frame = int(np.argmax(np.abs(elevation) >= 90))
            raise UserError(f"{recipe.where('camera', 'trajectory', 'elevation_deg_per_second')}: scene {scene_index}: "
                            f"the orbit passes over the pole (elevation {elevation[frame]:.1f} deg) at frame {frame}; "
                            "lower the drift")
    elif trajectory.type == "line":
        eyes = eye + times[:, None] * draw_vector(trajectory.velocity, rng)
    else:
        keys = [eye] + [np.asarray(_sample_camera_pose(recipe, objects, rng, start.lens)[0].world_from_camera)[:3, 3]
                        for _ in range(trajectory.keys - 1)]
        eyes = catmull_rom(np.array(keys), times, span)
    if trajectory.follow is not None:
        followed = next((i for i, o in enumerate(objects) if o.category == trajectory.follow), None)
        if followed is None:
            raise UserError(f"{recipe.where('camera', 'trajectory', 'follow')}: scene {scene_index}: there is no "
                            f"'{trajectory.follow}' object to follow (its group drew a count of 0)")
        centre = asset_mesh(objects[followed].asset).bounds.mean(axis=0)
        looks = object_poses[followed][:, :3, :3] @ centre + object_poses[followed][:, :3, 3]
    else:
        looks = None if trajectory.look == "fixed" else np.repeat(target[None], len(times), axis=0)  # (T, 3)
    poses = camera_track(eyes, looks, pose[:3, :3], roll, look_at)
    if trajectory.shake is not None:
        wobble = trajectory.shake
        poses = shaken(poses, shake(times, wobble.amplitude_deg, wobble.frequency_hz, shake_rng),
                       shake(times, wobble.amplitude_m, wobble.frequency_hz, shake_rng))
    if looks is None:
        return poses
    # How far ahead (along the optical axis) the looked-at point is, at each frame.
    ranges = np.einsum("kij,ki->kj", poses[:, :3, :3], looks - poses[:, :3, 3])[:, 2]
    outside = (ranges <= start.clip_start) | (ranges >= start.clip_end)
    if outside.any():
        frame = int(np.argmax(outside))
        raise UserError(f"{recipe.where('camera', 'trajectory')}: scene {scene_index}: at frame {frame} what the camera "
                        f"looks at is {ranges[frame]:.3g} m ahead, outside the clip range [{start.clip_start:g}, "
                        f"{start.clip_end:g}] m; shorten the trajectory or widen camera.clip_start/clip_end")
    return poses


def scene_stream(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    """An independent random stream of a scene seed: objects (0), lights (1), world (2), camera of
    frame f (3, f), supports (4); in a sequence: object motion (5), trajectory (6), shake (7),
    noise of frame f (8, f), point-track queries (9; a rig's camera k: (9, k)); image and depth
    sensors of frame f (10, f); the rig's cameras (13, 1); lens coefficients (13, 2); exposure of
    frame f (13, 3, f), of a sequence (13, 3, 0); rig camera k's noise in frame i (14, i, k);
    material randomisation of placed object k (15, 0, k), of support i (15, 1, i), of the walls
    (15, 2), of the ground (15, 3); the world's files: HDRI and its level (16, 0), backdrop image
    (16, 1), option of ``assets[i].path`` (16, 2, i), option of the k-th material's
    ``texture_folder`` (16, 3, k), option of its ``opacity_texture`` (16, 4, k) and the image each
    object wearing it takes (16, 5, k); the rows arrangement of object group g (17, g)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _with_sensors(recipe_camera: Camera, camera: CameraSpec, rng: np.random.Generator) -> CameraSpec:
    """The frame's camera with its image and depth sensor models drawn (each with its own noise seed,
    so a frame rendered alone gets the same noise)."""
    sensor, depth = recipe_camera.sensor, recipe_camera.depth_sensor
    update: dict = {}
    if sensor is not None:
        update["sensor"] = SensorSpec(
            full_well=None if sensor.full_well is None else float(draw(sensor.full_well, rng)),
            read_noise=float(draw(sensor.read_noise, rng)),
            gain=float(draw(sensor.gain, rng)),
            blur_sigma_px=float(draw(sensor.blur_sigma_px, rng)),
            vignetting=float(draw(sensor.vignetting, rng)),
            chromatic_aberration_px=float(draw(sensor.chromatic_aberration_px, rng)),
            jpeg_quality=None if sensor.jpeg_quality is None else int(draw(sensor.jpeg_quality, rng)),
            seed=int(rng.integers(0, 2**63)),
        )
    if depth is not None:
        update["depth_sensor"] = DepthSensorSpec(
            min_m=float(draw(depth.min_m, rng)),
            max_m=float(draw(depth.max_m, rng)),
            noise=float(draw(depth.noise, rng)),
            baseline_m=float(draw(depth.baseline_m, rng)),
            disparity_step_px=None if depth.disparity_step_px is None else float(draw(depth.disparity_step_px, rng)),
            edge_threshold_px=float(draw(depth.edge_threshold_px, rng)),
            edge_band_px=int(draw(depth.edge_band_px, rng)),
            dark_threshold=float(draw(depth.dark_threshold, rng)),
            grazing_deg=None if depth.grazing_deg is None else float(draw(depth.grazing_deg, rng)),
            specular_metallic=None if depth.specular_metallic is None else float(draw(depth.specular_metallic, rng)),
            seed=int(rng.integers(0, 2**63)),
        )
    return camera.model_copy(update=update) if update else camera


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


def _sample_camera(recipe: Recipe, objects: list[ObjectSpec], props: list[PropSpec], lens: LensSpec | None,
                   where: str, rng: np.random.Generator) -> tuple[CameraSpec, np.ndarray]:
    """A camera pose and the point it looks at, redrawn (up to ``visibility.max_tries`` times)
    until enough objects show."""
    rule = recipe.camera.visibility
    if rule is None:
        return _sample_camera_pose(recipe, objects, rng, lens)
    if rule.min_objects > len(objects):
        raise UserError(
            f"{recipe.where('camera', 'visibility')}: {where} has {len(objects)} object(s), fewer than min_objects = {rule.min_objects}"
        )
    best = 0
    for _ in range(rule.max_tries):
        camera, target = _sample_camera_pose(recipe, objects, rng, lens)
        fractions = visible_fractions(camera, objects, props)
        enough = sum(f is not None and f >= rule.min_fraction for f in fractions)
        if enough >= rule.min_objects:
            return camera, target
        best = max(best, enough)
    raise UserError(
        f"{recipe.where('camera', 'visibility')}: {where}: no camera pose out of {rule.max_tries} shows {rule.min_objects} object(s) "
        f"each at least {rule.min_fraction:.0%} visible (at best {best}); loosen camera.visibility or the camera's "
        "distributions"
    )


def _sample_camera_pose(recipe: Recipe, objects: list[ObjectSpec], rng: np.random.Generator,
                        lens: LensSpec | None) -> tuple[CameraSpec, np.ndarray]:
    cam, (width, height) = recipe.camera, recipe.render.resolution
    at_origin = recipe.lens_camera(lens)
    target, fit_radius = _camera_target(cam.look_at, objects, rng)
    target = target + draw_vector(cam.target_jitter, rng)
    if fit_radius is None:
        distance = float(draw(cam.distance, rng))  # > 0: checked when the recipe loads
    else:
        # The sphere fits when its angular radius is within the narrowest half-angle to an image
        # edge: that of the rays (through the lens) at the edges' points level with the centre.
        (_, _, cx), (_, _, cy), _ = at_origin.K
        edges = camera_rays(at_origin, np.array([-0.5, width - 0.5, cx, cx]), np.array([cy, cy, -0.5, height - 0.5]))
        half_angle = float(np.arctan(np.hypot(edges[:, 0], edges[:, 1])).min())
        distance = float(draw(cam.fit_margin, rng)) * fit_radius / math.sin(half_angle)
        if distance <= 0:
            raise UserError(f"{recipe.where('camera', 'fit_margin')}: the objects to fit have no extent "
                            f"(a distance of {distance:g})")
    eye = _on_sphere(target, distance, draw(cam.elevation_deg, rng), draw(cam.azimuth_deg, rng))
    pose = look_at(eye, target)
    pose[:3, :3] = pose[:3, :3] @ rotation_about_z(math.radians(draw(cam.roll_deg, rng)))
    dof, blur = cam.dof, cam.motion_blur
    focus = None if dof is None else (distance if dof.focus == "target" else float(draw(dof.focus, rng)))
    camera = at_origin.model_copy(update=dict(
        world_from_camera=_matrix(pose),
        fstop=None if dof is None else float(draw(dof.fstop, rng)),
        focus_distance=focus,
        exposure_s=0.0 if blur is None else blur.exposure_s,
        velocity=(0.0, 0.0, 0.0) if blur is None else tuple(map(float, draw_vector(blur.velocity, rng))),
    ))
    return camera, target


def sample_exposure(exposure: Exposure, rng: np.random.Generator) -> ExposureSpec:
    """A camera's exposure: its EV or auto-exposure target drawn from the recipe's distributions."""
    auto = exposure.auto
    if auto is None:
        ev = 0.0 if exposure.ev is None else float(draw(exposure.ev, rng))
        return ExposureSpec(ev=ev, view_transform=exposure.view_transform)
    mode = "clipped" if auto.clipped is not None else "mean"
    target = float(draw(auto.clipped if auto.clipped is not None else auto.mean, rng))
    return ExposureSpec(view_transform=exposure.view_transform, auto=mode, target=target,
                        min_ev=auto.min_ev, max_ev=auto.max_ev)


def _camera_target(look: LookAt, objects: list[ObjectSpec], rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
    """The look-at point, and for ``all_objects`` the radius of the sphere around it to fit in view.

    scene_center and all_objects use the centre of the box around all objects, random_object the
    centre of one object's box; with no objects they look at the world origin.
    """
    if not isinstance(look, str):
        return draw_vector(look, rng), None
    if not objects:
        return np.zeros(3), None
    if look == "random_object":
        objects = [objects[int(rng.integers(len(objects)))]]
    points = np.concatenate([
        asset_mesh(o.asset).vertices @ np.asarray(o.world_from_object)[:3, :3].T + np.asarray(o.world_from_object)[:3, 3]
        for o in objects
    ])
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    radius = float(np.linalg.norm(points - centre, axis=1).max()) if look == "all_objects" else None
    return centre, radius


@dataclass(frozen=True)
class _Mover:
    """A placed object's body in the layout: its group, and where it is in the spec's objects or props."""

    kind: Literal["object", "prop"]
    index: int
    group: int
    body: int


def _sample_objects(
    recipe: Recipe, scene_index: int, seed: int, rng: np.random.Generator, supports_rng: np.random.Generator,
    files: _SceneFiles,
) -> tuple[list[ObjectSpec], list[PropSpec], Layout, list[_Mover]]:
    """The scene's labeled objects and its props (support parts, then distractors), at rest, or
    where a simulated sequence starts (dropped from up to drop_height, not settled); the layout
    holding them, and which body each placed object is."""
    layout = Layout(recipe.placement.min_gap)
    props, surfaces = _build_supports(recipe, scene_index, layout, supports_rng, files)
    physics = recipe.placement.physics
    settle = physics is not None and not (recipe.sequence is not None and recipe.sequence.physics)
    attempts = physics.attempts if settle else 1
    for _ in range(attempts):
        layout.clear_loose()
        placed = _scatter(recipe, scene_index, seed, layout, surfaces, rng, files)
        if not settle or (problem := layout.settle(physics.seconds)) is None:
            break
    else:
        group_index = next(g for g, body, *_ in placed if body == problem[0])
        raise UserError(
            f"{recipe.where('placement', 'physics')}: scene {scene_index}: in each of {attempts} drops an "
            f"object did not come to rest on its support (last: a '{recipe.objects[group_index].category}' "
            f"{problem[1]}); raise placement.physics.seconds, lower drop_height or place fewer objects"
        )
    category_ids = {name: i + 1 for i, name in enumerate(recipe.categories)}
    objects, movers = [], []
    for group_index, body, asset, material, keypoints in placed:
        group, pose = recipe.objects[group_index], _matrix(layout.bodies[body].pose)
        if group.distractor:
            movers.append(_Mover("prop", len(props), group_index, body))
            props.append(PropSpec(name=group.category, asset=asset, world_from_object=pose, material=material))
        else:
            movers.append(_Mover("object", len(objects), group_index, body))
            objects.append(ObjectSpec(
                instance_id=len(objects) + 1, category_id=category_ids[group.category], category=group.category,
                asset=asset, world_from_object=pose, material=material, keypoints=keypoints.as_dict(),
            ))
    return objects, props, layout, movers


def _build_supports(
    recipe: Recipe, scene_index: int, layout: Layout, rng: np.random.Generator, files: _SceneFiles
) -> tuple[list[PropSpec], dict[str, list[Rect]]]:
    """Add the supports' parts to the layout; returns them as props, and the surfaces objects can
    stand on by name (the ground's is ``placement.area``)."""
    width, depth = recipe.placement.area
    surfaces = {"ground": [Rect(np.eye(4), (width / 2, depth / 2), whole=False)]}
    walls_look = scene_stream(scene_seed(recipe.seed, scene_index), (15, 2))
    props = [] if recipe.ground is None or recipe.ground.walls is None else _walls(recipe.ground, layout, rng, walls_look, files)
    for i, support in enumerate(recipe.supports):
        size = np.array([float(draw(v, rng)) for v in support.size])
        x, y = (float(draw(v, rng)) for v in support.position)
        yaw = math.radians(float(draw(support.yaw_deg, rng)))
        material = _sample_material(support.material, f"supports[{i}].material", rng,
                                    scene_stream(scene_seed(recipe.seed, scene_index), (15, 1, i)), files)
        world_from_support = _pose(rotation_about_z(yaw), (x, y, 0.0))
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
        front = -support.thickness / 2 if isinstance(support, Shelf) and support.back else 0.0  # the boards' centre, before the back
        surfaces[support.name] = [
            Rect(world_from_support @ _pose(np.eye(3), (0.0, front, top)), half, part=first + part, region=region)
            for part, top, half in tops
        ]
    return props, surfaces


def _walls(ground: Ground, layout: Layout, rng: np.random.Generator, look_rng: np.random.Generator,
           files: _SceneFiles) -> list[PropSpec]:
    """The four walls of the ground (boxes whose inner faces stand on its edges), added to the layout."""
    walls, half = ground.walls, ground.size / 2
    material = _sample_material(walls.material, "ground.walls.material", rng, look_rng, files)
    t, outer = walls.thickness, ground.size + 2 * walls.thickness
    parts = [((outer, t, walls.height), (0.0, side * (half + t / 2), 0.0)) for side in (-1, 1)]
    parts += [((t, ground.size, walls.height), (side * (half + t / 2), 0.0, 0.0)) for side in (-1, 1)]
    assets = [(AssetRef.primitive_asset("box", {"extents": extents}), _pose(np.eye(3), centre)) for extents, centre in parts]
    layout.add_fixed([(asset_mesh(asset), pose) for asset, pose in assets])
    return [PropSpec(name="wall", asset=asset, world_from_object=_matrix(pose), material=material) for asset, pose in assets]


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
    sides, back = 2 * t * support.sides, t * support.back
    if width <= sides or depth <= back or height < t * support.boards:
        return None, []
    inner, front = (width - sides, depth - back)  # the boards, between the sides and in front of the back
    parts = [((t, depth, height), (side * (width - t) / 2, 0.0, 0.0)) for side in (-1, 1) if support.sides]
    if support.back:
        parts.append(((inner, t, height), (0.0, (depth - t) / 2, 0.0)))
    first = len(parts)
    parts += [((inner, front, t), (0.0, -back / 2, z)) for z in support.board_bottoms(height)]
    return parts, [(first + k, z + t, (inner / 2, front / 2)) for k, z in enumerate(support.board_bottoms(height))]


def _scatter(
    recipe: Recipe, scene_index: int, seed: int, layout: Layout, surfaces: dict[str, list[Rect]],
    rng: np.random.Generator, files: _SceneFiles,
) -> list[tuple[int, int, AssetRef, MaterialSpec, Keypoints]]:
    """Stand every object on its surface; returns (group index, body index, asset, material, keypoints) of each.
    Scattered groups draw from ``rng``; arranged groups draw their assets and materials from it,
    and their arrangement from the stream (17, group index) of the scene ``seed``."""
    placement = recipe.placement
    drop_height = placement.physics.drop_height if placement.physics else 0.0
    by_category: dict[str, list[int]] = {}  # body indices of the objects placed so far, per category
    library = _scene_library(recipe, scene_index)
    placed = []
    for group_index, group in enumerate(recipe.objects):
        count = int(draw(group.count, rng))  # >= 0: checked when the recipe loads
        options: list[Rect] | list[int] = surfaces.get(group.place_on) or by_category.get(group.place_on, [])
        if count and not options:
            raise UserError(
                f"{recipe.where('objects', group_index, 'place_on')}: scene {scene_index}: there is no '{group.place_on}' "
                "object to stand on (its group drew a count of 0)"
            )
        if group.board is not None:
            options = [options[group.board]]  # a shelf's boards, lowest first (checked when the recipe loads)
        if group.arrange is not None:
            drawn = [(*_sample_asset(recipe, group, group_index, library, rng),
                      _sample_material(group.material, f"objects[{group_index}].material", rng,
                                       scene_stream(seed, (15, 0, len(placed) + k)), files)) for k in range(count)]
            bodies = _arrange(recipe, scene_index, group_index, layout, options, [asset_mesh(a) for a, _, _ in drawn],
                              scene_stream(seed, (17, group_index)))
            placed += [(group_index, body, asset, material, keypoints)
                       for body, (asset, keypoints, material) in zip(bodies, drawn)]
            by_category.setdefault(group.category, []).extend(bodies)
            if len(placed) > MAX_INSTANCES:
                raise UserError(f"{recipe.where('objects')}: more than {MAX_INSTANCES} objects in scene {scene_index}")
            continue
        for k in range(count):
            asset, keypoints = _sample_asset(recipe, group, group_index, library, rng)
            mesh = asset_mesh(asset)
            look_rng = scene_stream(seed, (15, 0, len(placed)))
            material = _sample_material(group.material, f"objects[{group_index}].material", rng, look_rng, files)
            candidate = Body(mesh, np.eye(4), fixed=False)
            failures: Counter[str] = Counter()
            for _ in range(placement.max_tries):
                surface = options[int(rng.integers(len(options)))]
                body, why = layout.try_place(candidate, draw_rotation(placement.rotation, rng), surface, rng, drop_height)
                if body is not None:
                    break
                failures[why] += 1
            else:
                extent = mesh.extents
                raise UserError(
                    f"{recipe.where('objects', group_index, 'count')}: scene {scene_index}: no room for "
                    f"'{group.category}' {k + 1} of {count} on {group.place_on} after {placement.max_tries} tries "
                    f"(placement.max_tries): {', '.join(f'{n} {why}' for why, n in failures.most_common())}; "
                    f"the object is {extent[0]:.3g} x {extent[1]:.3g} x {extent[2]:.3g} m. Place fewer or smaller "
                    "objects, or give them a larger surface or a smaller placement.min_gap"
                )
            placed.append((group_index, body, asset, material, keypoints))
            by_category.setdefault(group.category, []).append(body)
            if len(placed) > MAX_INSTANCES:
                raise UserError(f"{recipe.where('objects')}: more than {MAX_INSTANCES} objects in scene {scene_index}")
    return placed


def _arrange(recipe: Recipe, scene_index: int, group_index: int, layout: Layout, rects: list[Rect],
             meshes: list[Mesh], rng: np.random.Generator) -> list[int]:
    """Stand the meshes of an arranged group in rows on ``rects`` (a shelf's boards, lowest first),
    facing each rectangle's front (its -Y side); returns their body indices.

    A row fills from side to side and is centred; the next row stands behind it (``rows`` at most),
    then the next layer on top of the first layer's objects, then the next rectangle. Every draw
    (spacing, facing, jitter) comes from the group's own stream ``rng``."""
    group, min_gap = recipe.objects[group_index], recipe.placement.min_gap
    arrange = group.arrange
    spacing = float(draw(arrange.spacing, rng))
    row_gap = spacing if arrange.row_spacing is None else float(draw(arrange.row_spacing, rng))
    jitter, yaw_jitter = float(draw(arrange.jitter, rng)), float(draw(arrange.yaw_jitter_deg, rng))
    yaws = [math.radians(float(draw(arrange.facing, rng)) + rng.uniform(-yaw_jitter, yaw_jitter)) for _ in meshes]
    offsets = [rng.uniform(-jitter, jitter, 2) for _ in meshes]
    # Each object's footprint in its rectangle's axes, widened by the jitter on every side.
    footprints = []
    for mesh, yaw in zip(meshes, yaws):
        xy = mesh.vertices[:, :2] @ rotation_about_z(yaw)[:2, :2].T
        footprints.append((xy.min(axis=0) - jitter, xy.max(axis=0) + jitter))

    def fail(k: int, why: str) -> UserError:
        low, high = footprints[k]
        size = high - low - 2 * jitter
        return UserError(f"{recipe.where('objects', group_index, 'arrange')}: scene {scene_index}: no room for "
                         f"'{group.category}' {k + 1} of {len(meshes)} in rows on {group.place_on}: {why} (the object's "
                         f"footprint is {size[0]:.3g} x {size[1]:.3g} m, spacing {spacing:.3g} m, jitter {jitter:.3g} m); "
                         "place fewer or smaller objects, or give them more room")

    bodies: list[int] = []
    k = 0
    for rect in rects:
        if k == len(meshes):
            break
        hy, left, right, back = rect.half[1], -rect.half[0] + min_gap, rect.half[0] - min_gap, rect.half[1] - min_gap
        rows: list[list[tuple[int, float]]] = []  # (object, the left edge of its slot) of each row
        fronts: list[float] = []  # the front edge of each row
        x, y, depth = left, -hy, 0.0
        while k < len(meshes):
            width, length = footprints[k][1] - footprints[k][0]
            if rows and rows[-1] and x + width > right:  # the row is full: start the next one behind it
                x, y, depth = left, y + depth + row_gap, 0.0
                if arrange.rows is not None and len(rows) == arrange.rows:
                    break
            if x + width > right or y + length > back:
                if not bodies and not rows:
                    raise fail(k, "it is wider or deeper than the surface")
                break
            if not rows or x == left:
                rows.append([])
                fronts.append(y)
            rows[-1].append((k, x))
            x, depth, k = x + width + spacing, max(depth, length), k + 1
        first_layer: list[tuple[int, np.ndarray]] = []  # (body, the slot's centre in the rectangle's axes)
        for row, front in zip(rows, fronts):
            last, last_x = row[-1]
            shift = (right - (last_x + footprints[last][1][0] - footprints[last][0][0])) / 2  # centres the row
            for j, slot_x in row:
                low = footprints[j][0]
                local = np.array([slot_x + shift - low[0], front - low[1]]) + offsets[j]
                body = _place_arranged(layout, rect, rect, meshes[j], yaws[j], local, fail, j)
                centre = np.array([slot_x + shift, front]) + (footprints[j][1] - footprints[j][0]) / 2
                first_layer.append((body, centre))
                bodies.append(body)
        below = first_layer
        for _ in range(arrange.layers - 1):
            layer = []
            for base, centre in below:
                if k == len(meshes):
                    break
                middle = (footprints[k][0] + footprints[k][1]) / 2
                body = _place_arranged(layout, rect, base, meshes[k], yaws[k], centre - middle + offsets[k], fail, k)
                layer.append((body, centre))
                bodies.append(body)
                k += 1
            below = layer
    if k < len(meshes):
        raise fail(k, f"{len(meshes) - k} of {len(meshes)} objects are left when every row"
                      f"{' and layer' if arrange.layers > 1 else ''} is full")
    return bodies


def _place_arranged(layout: Layout, rect: Rect, surface: Rect | int, mesh: Mesh, yaw: float,
                    local: np.ndarray, fail: Callable[[int, str], UserError], k: int) -> int:
    """Stand ``mesh`` turned by ``yaw`` from ``rect``'s facing, its origin at ``local`` (the
    rectangle's axes), on ``surface`` (the rectangle, or the top of the body below it in a stack);
    the body's index, or the UserError ``fail`` makes."""
    rotation = rect.world_from_rect[:3, :3] @ rotation_about_z(yaw)
    xy = (rect.world_from_rect @ np.array([local[0], local[1], 0.0, 1.0]))[:2]
    body, why = layout.place(Body(mesh, np.eye(4), fixed=False), rotation, xy, surface, flat=True)
    if body is None:
        raise fail(k, why)
    return body


def _scene_library(recipe: Recipe, scene_index: int) -> dict[str, list[LibraryFile]]:
    """The library files a scene draws from, by category: of each ``assets`` entry, the option of
    its path drawn for the scene (stream (16, 2, entry)); an entry of one option always gives it."""
    seed = scene_seed(recipe.seed, scene_index)
    library: dict[str, list[LibraryFile]] = {}
    for i, entry in enumerate(recipe.assets):
        for file in _drawn_option(entry._options, scene_stream(seed, (16, 2, i))) if entry._options else ():
            library.setdefault(file.category, []).append(file)
    return library


def _sample_asset(
    recipe: Recipe, group: ObjectGroup, group_index: int, library: dict[str, list[LibraryFile]],
    rng: np.random.Generator,
) -> tuple[AssetRef, Keypoints]:
    """An asset of the group, and its keypoints (a library entry's, or a primitive's canonical
    ones); a library file is parsed here, the first time a scene draws it."""
    if isinstance(group.asset, LibraryAsset):
        choices = library.get(group.asset.library)
        if not choices:
            raise UserError(f"{recipe.where('objects', group_index, 'asset', 'library')}: no listed assets of "
                            f"category {group.asset.library!r} in this scene's options (a recipe with assets must "
                            "come from load_recipe)")
        file = choices[int(rng.integers(len(choices)))]
        try:
            return file.model()[0], file.keypoints
        except AssetError as exc:
            raise UserError(f"{recipe.where('assets', file.entry, file.field)}: {exc}") from None
    params: dict = {}
    for name, value in group.asset:
        if name == "primitive":
            continue
        # Every dimension is > 0: checked when the recipe loads.
        params[name] = tuple(float(draw(v, rng)) for v in value) if isinstance(value, tuple) else float(draw(value, rng))
    asset = AssetRef.primitive_asset(group.asset.primitive, params)
    return asset, asset_model(asset).keypoints


def _pose(rotation: np.ndarray, translation) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


def _sample_material(
    material: Material, where: str, rng: np.random.Generator, look_rng: np.random.Generator, files: _SceneFiles
) -> MaterialSpec:
    """The changes a material makes to an asset's own; fields left out stay None (kept). The
    randomisation and transparency fields draw from ``look_rng`` (stream (15, ...)), so existing
    recipes keep their scenes; texture and opacity files come from the scene's ``files``."""
    texture = None
    if material.texture_folder is not None:
        textures = files.textures.get(id(material), material._textures)
        if not textures:
            raise UserError(f"{where}.texture_folder: not listed (a recipe with textures must come from load_recipe)")
        texture = textures[int(rng.integers(len(textures)))]
    opacity = None
    if material.opacity_texture is not None:
        if id(material) not in files.opacities:
            raise UserError(f"{where}.opacity_texture: not listed (a recipe with images must come from load_recipe)")
        images, pick = files.opacities[id(material)]
        opacity = images[int(pick.integers(len(images)))] if len(images) > 1 else images[0]
    return MaterialSpec(
        base_color=None if material.color is None else _sample_color(material.color, rng),
        roughness=None if material.roughness is None else _unit(draw(material.roughness, rng)),
        metallic=None if material.metallic is None else _unit(draw(material.metallic, rng)),
        specular=None if material.specular is None else _unit(draw(material.specular, rng)),
        texture=texture,
        texture_size=material.texture_size,
        **_sample_look(material, look_rng),
        **_sample_transparency(material, look_rng),
        opacity_texture=opacity,
    )


def _sample_look(material: Material, rng: np.random.Generator) -> dict[str, float]:
    """The drawn randomisation fields of a material (roughness scale, hue shift) that it sets."""
    drawn = {}
    for name in ("roughness_scale", "hue_shift_deg"):
        if (value := getattr(material, name)) is not None:
            drawn[name] = float(draw(value, rng))
    if "roughness_scale" in drawn:
        drawn["roughness_scale"] = max(drawn["roughness_scale"], 0.0)
    return drawn


def _sample_transparency(material: Material, rng: np.random.Generator) -> dict:
    """The transparency changes of a material (MaterialSpec fields) it sets, drawn from ``rng``
    (the look stream, after ``_sample_look``'s draws)."""
    mode = material.alpha_mode
    if mode is None:  # an opacity image or an alpha alone would do nothing on an OPAQUE asset
        mode = "MASK" if material.opacity_texture is not None else "BLEND" if material.alpha is not None else None
    unit = {name: None if (value := getattr(material, name)) is None else _unit(draw(value, rng))
            for name in ("transmission", "alpha", "alpha_cutoff")}
    ior = None if material.ior is None else float(draw(material.ior, rng))
    return {**unit, "ior": ior, "alpha_mode": mode}


def _sample_lights(recipe: Recipe, index: int, rng: np.random.Generator) -> list[LightSpec]:
    """The ``count`` lights of recipe entry ``lights[index]``, each drawn on its own."""
    light, lights = recipe.lights[index], []
    for _ in range(int(draw(light.count, rng))):
        target = draw_vector(light.target, rng)
        if light.position is None:
            position = _on_sphere(
                target, float(draw(light.distance, rng)), draw(light.elevation_deg, rng), draw(light.azimuth_deg, rng)
            )
        else:
            position = draw_vector(light.position, rng)
        if np.allclose(position, target):
            raise UserError(f"{recipe.where('lights', index)}: drew the position {position.tolist()} on the target; "
                            "it needs a direction")
        energy = max(0.0, float(draw(light.energy, rng)))
        if light.kelvin is not None:
            color = kelvin_to_rgb(float(draw(light.kelvin, rng)))
        else:
            color = _sample_color(light.color or (1.0, 1.0, 1.0), rng)
        lights.append(LightSpec(
            type=light.type,
            energy=energy,
            color=color,
            world_from_light=_matrix(look_at(position, target)),
            size=light.size,
            spot_size_deg=float(draw(light.spot_size_deg, rng)),
            spot_blend=float(draw(light.spot_blend, rng)),
        ))
    return lights


# sRGB (Rec. 709 primaries, D65 white) from CIE XYZ.
_RGB_FROM_XYZ = np.array([
    [3.2404542, -1.5371385, -0.4985314],
    [-0.9692660, 1.8760108, 0.0415560],
    [0.0556434, -0.2040259, 1.0572252],
])


def kelvin_to_rgb(kelvin: float) -> tuple[float, float, float]:
    """Linear sRGB colour of a black body at ``kelvin`` (1667..25000 K), brightest channel = 1.

    The chromaticity comes from the cubic-spline approximation of the Planckian locus of Kang et
    al. (2002), converted from CIE xyY to linear sRGB; channels outside the gamut are clipped at 0.
    """
    t = kelvin
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    rgb = np.clip(_RGB_FROM_XYZ @ np.array([x / y, 1.0, (1 - x - y) / y]), 0.0, None)
    return tuple(float(c) for c in rgb / rgb.max())  # type: ignore[return-value]


def _sample_color(color: tuple | HSV, rng: np.random.Generator) -> tuple[float, float, float]:
    """Linear RGB; HSV colours are taken as sRGB-encoded, as colour pickers show them."""
    if isinstance(color, HSV):
        h, s, v = (float(draw(c, rng)) for c in color.hsv)
        srgb = colorsys.hsv_to_rgb(h % 1.0, _unit(s), _unit(v))
        return tuple(float(srgb_to_linear(c)) for c in srgb)  # type: ignore[return-value]
    return tuple(_unit(draw(c, rng)) for c in color)  # type: ignore[return-value]


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def _matrix(m: np.ndarray) -> tuple:
    return tuple(tuple(float(v) for v in row) for row in m)
