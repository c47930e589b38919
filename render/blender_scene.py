"""The Blender scene builder: SceneSpec -> Blender data -> one Cycles render -> the frame's passes.

ONE Cycles render per frame writes every pass (RGB, depth, normals, object index) into one
multilayer EXR in a private scratch folder; label passes never cost a second render (the optional
behind pass is a second view layer of the same render: one sample, no world). Frames of
one scene, and the views of one frame (rig cameras), reuse the built Blender scene: only the
camera moves (and changes intrinsics and image size), and in a sequence the objects.

With motion blur the camera of a still is keyed linearly from ``pose - velocity * exposure / 2``
to ``pose + velocity * exposure / 2`` around the rendered frame; in a sequence the camera and
every body are keyed at the shutter's opening, middle and closing, on their real motion towards
the neighbouring frames. The label passes come from each pixel's first camera ray, cast at one
time within that interval (docs/recipes.md, camera).

Axes: the SceneSpec poses cameras and lights in OpenCV axes; Blender's look and shine along -Z
with +Y up, so every pose is converted with ``sceneforge.floor.axes.opengl_pose``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sceneforge.floor.axes import opengl_pose
from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import Passes
from sceneforge.scenes.assets import (
    SHARP_EDGE_ANGLE_DEG,
    AssetMaterial,
    AssetModel,
    TextureTransform,
    asset_model,
    ground_model,
    hue_shifted,
    texture_image,
    texture_maps,
    with_texture,
)
from sceneforge.scenes.camera import render_camera
from sceneforge.scenes.motion import interpolate
from sceneforge.scenes.spec import MaterialSpec, SceneSpec
from sceneforge.scenes.transparency import see_through

from .decode import BEHIND_LAYER, decode

# Blender's default camera sensor width (mm); a lens's wider render widens it (_place_camera).
_SENSOR_WIDTH_MM = 36.0
# Label passes take the first surface with at least this alpha: any surface that is not wholly
# transparent. Cycles' default, 0.5, leaves surfaces below it to chance: a path that scatters off
# one before reaching an opaque surface keeps its labels (docs/formats.md, "Glass and cut-outs").
_PASS_ALPHA_THRESHOLD = 1 / 1024
# Cycles GPU backends, most capable first.
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI")


def blender_uv_mapping(transform: TextureTransform) -> tuple[tuple[float, float], float, tuple[float, float]]:
    """(location, rotation about Z in radians, scale) of a Mapping node (type POINT) on Blender's
    UVs (v up) that applies glTF's KHR_texture_transform, which is defined on v-down UVs: flipping
    v on both sides turns its rotation's matrix into Blender's and adds the offset terms below."""
    (ox, oy), angle, (sx, sy) = transform.offset, transform.rotation, transform.scale
    return (ox + math.sin(angle) * sy, 1.0 - oy - math.cos(angle) * sy), angle, (sx, sy)


class Renderer:
    """One Blender session in this process; ``render`` turns a SceneSpec into label arrays."""

    def __init__(self, device: str = "cpu", gpu_index: int = 0, threads: int = 0) -> None:
        """``device``: "cpu", "gpu" (GPU number ``gpu_index``; a UserError naming what Cycles found
        when there is no such GPU) or "auto" (that GPU if there is one, else the CPU)."""
        import bpy  # only ever imported here, inside a render worker

        self._bpy = bpy
        self._scene_key: str | None = None
        self._images: dict[str, object] = {}  # textures of the built scene, each loaded into Blender once
        self._see_through = None  # with the behind pass: the collection of glass and blended bodies
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        self.gpus = [] if device == "cpu" else self._detect_gpus()
        if device == "gpu" and gpu_index >= len(self.gpus):
            # Asked for a GPU that is not there: rendering on the CPU instead would be silently slow.
            found = ", ".join(f"{n}: {backend} {name}" for n, (backend, _, name) in enumerate(self.gpus))
            raise UserError(f"asked for GPU {gpu_index}, but Cycles finds "
                            + (f"{len(self.gpus)} GPU(s) here ({found}); GPU numbers start at 0" if self.gpus else
                               f"no GPU here (tried {', '.join(GPU_BACKENDS)})")
                            + "; use --device cpu or auto")
        self.device = self._use_gpu(self.gpus[gpu_index]) if self.gpus and gpu_index < len(self.gpus) else "CPU"
        scene.cycles.device = "CPU" if self.device == "CPU" else "GPU"
        scene.render.threads_mode = "FIXED" if threads > 0 else "AUTO"
        if threads > 0:
            scene.render.threads = threads
        scene.render.resolution_percentage = 100
        scene.render.use_compositing = False
        scene.render.use_sequencer = False
        scene.view_settings.view_transform = "Standard"
        output = scene.render.image_settings
        output.file_format = "OPEN_EXR_MULTILAYER"
        output.color_depth = "32"  # full float: planar depth must hold 1e-4 relative
        output.exr_codec = "NONE"  # scratch file read straight back: compression is wasted time
        scene.world = bpy.data.worlds.new("World")
        scene.world.use_nodes = True
        # Camera motion is keyed at two instants; straight lines between them, not eased curves.
        bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
        self._scene = scene
        scratch_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._scratch = Path(tempfile.mkdtemp(prefix="sceneforge-render-", dir=scratch_root))

    def close(self) -> None:
        """Remove the scratch folder and Blender's session folder (``bpy.app.tempdir``, which Blender
        removes only in its own teardown: a worker leaving with ``os._exit`` left one per session)."""
        shutil.rmtree(self._scratch, ignore_errors=True)
        shutil.rmtree(self._bpy.app.tempdir, ignore_errors=True)

    def _detect_gpus(self) -> list[tuple[str, str, str]]:
        """(backend, device id, name) of every GPU of the most capable backend Cycles finds."""
        preferences = self._bpy.context.preferences.addons["cycles"].preferences
        for backend in GPU_BACKENDS:
            try:
                devices = preferences.get_devices_for_type(backend)
            except (TypeError, ValueError):  # backend not compiled into this Blender
                continue
            gpus = [(backend, d.id, d.name) for d in devices if d.type != "CPU"]
            if gpus:
                return gpus
        return []

    def _use_gpu(self, gpu: tuple[str, str, str]) -> str:
        """Enable exactly this GPU (pinning the worker to it); returns its description."""
        backend, device_id, name = gpu
        preferences = self._bpy.context.preferences.addons["cycles"].preferences
        preferences.compute_device_type = backend
        for device in preferences.get_devices_for_type(backend):
            device.use = device.id == device_id
        return f"{backend} {name}"

    def render(self, spec: SceneSpec, label_passes: bool = True) -> tuple[Passes, float]:
        """Render one frame; returns its passes and Blender's own render time in seconds.

        A frame of the scene already built (same ``content_key``) only moves the camera.
        """
        path, seconds = self.render_to_file(spec, label_passes)
        try:
            return decode(spec, path), seconds
        finally:
            path.unlink()

    def render_to_file(self, spec: SceneSpec, label_passes: bool = True) -> tuple[Path, float]:
        """Render one frame into a multilayer EXR of its own in the scratch folder (see ``decode``)."""
        key = f"{spec.content_key()}/{label_passes}"
        if key != self._scene_key:
            self._clear()
            self._build(spec, label_passes)
            self._scene_key = key
        else:
            self._place_camera(spec)
            self._place_bodies(spec)
        # A sequence's frames reuse the synced Cycles scene, re-syncing only what moved (a still
        # scene rarely renders twice, and keeping its data costs a fresh scene about 9 %).
        self._scene.render.use_persistent_data = spec.sequence is not None
        self._scene.cycles.seed = spec.render.noise_seed
        path = self._scratch / f"{spec.index}{'_' + spec.camera.name if spec.camera.name else ''}.exr"
        self._scene.render.filepath = str(path)
        start = time.perf_counter()
        self._bpy.ops.render.render(write_still=True)
        return path, time.perf_counter() - start

    def _clear(self) -> None:
        self._scene_key = None
        self._images.clear()
        self._see_through = None
        data = self._bpy.data
        data.batch_remove([*data.objects, *data.meshes, *data.materials, *data.lights, *data.cameras,
                           *data.images, *data.actions, *data.collections])
        data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def _build(self, spec: SceneSpec, label_passes: bool) -> None:
        scene = self._scene
        settings = spec.render
        scene.cycles.samples = settings.samples
        scene.cycles.use_adaptive_sampling = settings.adaptive_threshold > 0
        scene.cycles.adaptive_threshold = settings.adaptive_threshold
        scene.cycles.use_denoising = settings.denoise
        scene.cycles.max_bounces = settings.max_bounces
        scene.cycles.diffuse_bounces = settings.diffuse_bounces
        scene.cycles.glossy_bounces = settings.glossy_bounces
        scene.cycles.transmission_bounces = settings.transmission_bounces
        scene.cycles.transparent_max_bounces = settings.transparent_bounces
        layer = scene.view_layers[0]
        layer.use_pass_z = layer.use_pass_normal = layer.use_pass_object_index = label_passes
        layer.pass_alpha_threshold = _PASS_ALPHA_THRESHOLD
        self._set_albedo_output(label_passes and spec.render.albedo)
        self._set_behind_layer(label_passes and spec.render.behind)

        self._set_world(spec)

        for obj in spec.objects:
            self._add_mesh(f"object_{obj.instance_id}", asset_model(obj.asset), obj.asset.hash, obj.material,
                           obj.instance_id)
        for i, prop in enumerate(spec.props):  # pass index 0: they hide objects but are never labeled
            self._add_mesh(f"prop_{i}", asset_model(prop.asset), prop.asset.hash, prop.material, pass_index=0)
        if spec.ground is not None:
            self._add_mesh("ground", ground_model(spec.ground.size), "ground", spec.ground.material, pass_index=0)
            self._set_pose(self._bpy.data.objects["ground"], np.eye(4))
        for i, light in enumerate(spec.lights):
            data = self._bpy.data.lights.new(f"light_{i}", type=light.type.upper())
            data.energy = light.energy
            data.color = light.color
            if light.type == "area":
                data.size = light.size
            elif light.type == "spot":
                data.spot_size = math.radians(light.spot_size_deg)
                data.spot_blend = light.spot_blend
            self._link(self._bpy.data.objects.new(f"light_{i}", data), opengl_pose(light.world_from_light))
        self._add_camera(spec)  # before the bodies: it sets the shutter their motion is keyed in
        self._place_bodies(spec)

    def _set_behind_layer(self, enabled: bool) -> None:
        """The behind pass: a second view layer of the same render, without the see-through
        collection (glass and blended bodies, filled by ``_add_mesh``), writing only depth and
        object index from one sample per pixel (the first sample's camera rays, as the main layer's
        label passes)."""
        layers = self._scene.view_layers
        if BEHIND_LAYER in layers and not enabled:
            layers.remove(layers[BEHIND_LAYER])
        if not enabled:
            return
        self._see_through = self._bpy.data.collections.new("see_through")
        self._scene.collection.children.link(self._see_through)
        layer = layers.get(BEHIND_LAYER) or layers.new(BEHIND_LAYER)
        layer.samples = 1
        layer.cycles.use_denoising = False
        # Without the world's shader Cycles builds no environment importance map for this layer
        # (seconds per frame with an HDRI); labels never read the world.
        layer.use_sky = False
        layer.use_pass_z = layer.use_pass_object_index = True
        layer.use_pass_normal = False
        layer.pass_alpha_threshold = _PASS_ALPHA_THRESHOLD
        layer.layer_collection.children[self._see_through.name].exclude = True

    def _set_world(self, spec: SceneSpec) -> None:
        """A colour or an HDRI (turned about +Z by a Mapping node); a backdrop image needs a
        transparent film, as ``decode`` puts it behind the render."""
        tree = self._scene.world.node_tree
        nodes, links = tree.nodes, tree.links
        nodes.clear()
        background = nodes.new("ShaderNodeBackground")
        links.new(background.outputs["Background"], nodes.new("ShaderNodeOutputWorld").inputs["Surface"])
        background.inputs["Color"].default_value = (*spec.background_color, 1.0)
        background.inputs["Strength"].default_value = spec.background_strength
        if spec.hdri is not None:
            # Turning the map by +angle (counter-clockwise from above) looks it up at -angle.
            mapping = nodes.new("ShaderNodeMapping")
            mapping.inputs["Rotation"].default_value = (0.0, 0.0, -math.radians(spec.hdri.rotation_deg))
            texture = nodes.new("ShaderNodeTexEnvironment")
            texture.image = self._bpy.data.images.load(spec.hdri.path, check_existing=True)
            # The importance map at the map's own resolution, up to Cycles' "automatic" 4096 x 2048
            # (which it builds whatever the map's size: 2.3 s per scene on 2 cores for a 256 x 128 map).
            self._scene.world.cycles.sampling_method = "MANUAL"
            self._scene.world.cycles.sample_map_resolution = min(4096, max(4, *texture.image.size))
            # World "Generated" coordinates are the ray direction.
            links.new(nodes.new("ShaderNodeTexCoord").outputs["Generated"], mapping.inputs["Vector"])
            links.new(mapping.outputs["Vector"], texture.inputs["Vector"])
            links.new(texture.outputs["Color"], background.inputs["Color"])
            background.inputs["Strength"].default_value = spec.hdri.strength
        self._scene.render.film_transparent = spec.background_image is not None

    def _set_albedo_output(self, enabled: bool) -> None:
        """Albedo is the base colour, written by every material to a shader AOV named "albedo".

        (Cycles' own "Denoising Albedo" adds specular reflectance, so it is not the base colour.)
        """
        aovs = self._scene.view_layers[0].aovs
        if enabled and not aovs:
            aov = aovs.add()
            aov.name, aov.type = "albedo", "COLOR"
        elif not enabled and aovs:
            aovs.remove(aovs[0])

    def _add_camera(self, spec: SceneSpec) -> None:
        data = self._bpy.data.cameras.new("camera")
        data.sensor_fit = "HORIZONTAL"
        obj = self._bpy.data.objects.new("camera", data)
        self._scene.collection.objects.link(obj)
        self._scene.camera = obj
        self._place_camera(spec)

    def _place_camera(self, spec: SceneSpec) -> None:
        """Intrinsics, image size, pose, focus and motion of this frame's camera (each view of a
        rig has its own, in the same built scene)."""
        cam, obj = spec.camera, self._scene.camera
        # A camera with a lens is rendered as its wide pinhole view, warped afterwards (decode.py).
        rendered = render_camera(cam)
        (fx, _, cx), (_, fy, cy), _ = rendered.K
        data, render = obj.data, self._scene.render
        # Blender's view plane with a horizontal sensor fit: fx = lens / sensor width * W;
        # fy = fx * pixel_aspect_x / pixel_aspect_y; the principal point moves with the lens shift,
        # both shifts in units of the image width. A lens's wide render is a larger sensor behind
        # the same focal length: the aperture (and so the depth of field) stays the image camera's.
        render.resolution_x, render.resolution_y = rendered.width, rendered.height
        data.sensor_width = _SENSOR_WIDTH_MM * rendered.width / cam.width
        data.lens = fx * data.sensor_width / rendered.width
        data.clip_start, data.clip_end = cam.clip_start, cam.clip_end
        render.pixel_aspect_x, render.pixel_aspect_y = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
        data.shift_x = ((rendered.width - 1) / 2 - cx) / rendered.width
        data.shift_y = (cy - (rendered.height - 1) / 2) * (fx / fy) / rendered.width
        dof = obj.data.dof
        dof.use_dof = cam.fstop is not None
        if cam.fstop is not None:
            dof.focus_distance, dof.aperture_fstop = cam.focus_distance, cam.fstop
        render = self._scene.render
        render.use_motion_blur = cam.exposure_s > 0
        if cam.exposure_s > 0:
            render.motion_blur_shutter = cam.exposure_s * render.fps / render.fps_base  # in frames
            render.motion_blur_position = "CENTER"
        pose = np.asarray(cam.world_from_camera)
        if spec.sequence is not None:
            previous, following = (None if state is None else np.asarray(state.world_from_camera)
                                   for state in (spec.sequence.previous, spec.sequence.next))
            self._place(obj, pose, previous, following, spec, opengl_pose)
            return
        # A still's camera moves at its velocity during the exposure.
        shift = np.eye(4)
        shift[:3, 3] = np.asarray(cam.velocity) * cam.exposure_s / 2
        self._keyed(obj, [(-1.0, opengl_pose(np.linalg.inv(shift) @ pose)), (1.0, opengl_pose(shift @ pose))]
                    if cam.exposure_s > 0 else [], opengl_pose(pose))

    def _place_bodies(self, spec: SceneSpec) -> None:
        """Poses (and in a sequence with motion blur, motions) of the objects and props."""
        names = [f"object_{o.instance_id}" for o in spec.objects] + [f"prop_{k}" for k in range(len(spec.props))]
        poses = [o.world_from_object for o in spec.objects] + [p.world_from_object for p in spec.props]
        states = (None, None) if spec.sequence is None else (spec.sequence.previous, spec.sequence.next)
        for k, (name, pose) in enumerate(zip(names, poses)):
            # The previous and next frames' pose of the same body (objects then props, as above).
            neighbours = [None if state is None else np.asarray([*state.objects, *state.props][k]) for state in states]
            self._place(self._bpy.data.objects[name], np.asarray(pose), *neighbours, spec)

    def _place(self, obj, pose: np.ndarray, previous: np.ndarray | None, following: np.ndarray | None,
               spec: SceneSpec, convert=lambda pose: pose) -> None:
        """Pose an object for this frame; with motion blur in a sequence, also where it is when the
        shutter opens and closes, on its way from the previous frame's pose and to the next's
        (``convert``: the spec's axes to Blender's)."""
        exposure = spec.camera.exposure_s
        keys = []
        if exposure > 0 and spec.sequence is not None:
            fraction = min(1.0, exposure / 2 * spec.sequence.fps)  # of a frame interval
            for sign, neighbour in ((-1.0, previous), (1.0, following)):
                keys.append((sign, convert(pose if neighbour is None else interpolate(pose, neighbour, fraction))))
        self._keyed(obj, keys, convert(pose))

    def _keyed(self, obj, keys: list[tuple[float, np.ndarray]], pose: np.ndarray) -> None:
        """Set ``obj`` to ``pose`` (Blender axes); with ``keys`` ((-1 shutter opening / +1 closing,
        pose)) keyed linearly at those instants and the frame's own."""
        if obj.animation_data and obj.animation_data.action:
            self._bpy.data.actions.remove(obj.animation_data.action)
        obj.animation_data_clear()
        if not keys:
            self._set_pose(obj, pose)
            return
        render, frame = self._scene.render, self._scene.frame_current
        half = render.motion_blur_shutter / 2
        obj.rotation_mode = "QUATERNION"
        for sign, key in [*keys, (0.0, pose)]:
            self._set_pose(obj, key)
            obj.keyframe_insert("location", frame=frame + sign * half)
            obj.keyframe_insert("rotation_quaternion", frame=frame + sign * half)
        self._set_pose(obj, pose)

    def _add_mesh(self, name: str, model: AssetModel, asset_key: str, override: MaterialSpec, pass_index: int) -> None:
        """A Blender mesh object of exactly the asset's mesh, with UVs, vertex colours and materials;
        ``asset_key`` names the asset's own textures, shared by all its objects."""
        bpy = self._bpy
        vertices, faces = model.mesh.vertices, np.asarray(model.mesh.faces, dtype=np.int32)
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", np.asarray(vertices, dtype=np.float32).ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.polygons.foreach_set("material_index", np.asarray(model.face_materials, dtype=np.int32))
        if model.uv is not None:
            mesh.uv_layers.new(name="UVMap").uv.foreach_set("vector", model.uv[faces.ravel()].astype(np.float32).ravel())
        if model.colors is not None:
            colors = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
            colors.data.foreach_set("color_srgb", (model.colors.astype(np.float32) / 255).ravel())
        mesh.update()
        mesh.shade_smooth()
        mesh.set_sharp_from_angle(angle=math.radians(SHARP_EDGE_ANGLE_DEG))
        for i, own in enumerate(model.materials):
            mesh.materials.append(self._material(f"{name}_{i}", own, f"{asset_key}/{i}", override, model))
        obj = bpy.data.objects.new(name, mesh)
        obj.pass_index = pass_index
        hides = all(see_through(own, override).hides_behind for own in model.materials)
        (self._scene.collection if self._see_through is None or hides else self._see_through).objects.link(obj)

    def _material(self, name: str, own: AssetMaterial, own_key: str, override: MaterialSpec, model: AssetModel):
        """Principled BSDF of the asset's material with the spec's changes (see MaterialSpec).

        The base colour is texture x colour factor x vertex colours (hue-shifted by the spec); the
        same socket feeds the albedo AOV. A spec's texture (an image or a texture set) replaces the
        asset's maps (``maps``); the other maps are wired by ``_pbr_maps``.
        """
        material = self._bpy.data.materials.new(name)
        material.use_nodes = True
        nodes, links = material.node_tree.nodes, material.node_tree.links
        bsdf = nodes["Principled BSDF"]
        maps, key = (own, own_key) if override.texture is None else (
            with_texture(own, texture_maps(override.texture)), override.texture)
        if override.texture is not None:
            image, factor, vertex_colors = maps.texture, override.base_color, False
        elif override.base_color is not None:
            image, factor, vertex_colors = None, override.base_color, False
        else:
            image, factor, vertex_colors = own.texture, own.base_color, model.colors is not None
        coordinates = self._uv_vector(material, model, override, maps)
        color = base_alpha = None
        if image is not None:
            texture = self._texture(material, key, image, coordinates, data=False)
            color, base_alpha = texture.outputs["Color"], texture.outputs["Alpha"]
        if vertex_colors:
            attribute = nodes.new("ShaderNodeVertexColor")
            attribute.layer_name = "Col"
            vertex = attribute.outputs["Color"]
            color = vertex if color is None else self._multiply(material, color, vertex)
        factor = (1.0, 1.0, 1.0) if factor is None else factor
        if color is not None and tuple(factor) != (1.0, 1.0, 1.0):
            color = self._multiply(material, color, factor)
        if override.hue_shift_deg:
            if color is None:
                factor = tuple(hue_shifted(factor, override.hue_shift_deg))
            else:  # Blender's node turns the hue by (Hue - 0.5) of a full turn
                shift = nodes.new("ShaderNodeHueSaturation")
                shift.inputs["Hue"].default_value = 0.5 + override.hue_shift_deg / 360
                links.new(color, shift.inputs["Color"])
                color = shift.outputs["Color"]
        albedo = nodes.new("ShaderNodeOutputAOV")
        albedo.aov_name = "albedo"
        for socket in (bsdf.inputs["Base Color"], albedo.inputs["Color"]):
            if color is None:
                socket.default_value = (*factor, 1.0)
            else:
                links.new(color, socket)
        bsdf.inputs["Specular IOR Level"].default_value = own.specular if override.specular is None else override.specular
        self._pbr_maps(material, bsdf, maps, key, override, coordinates, model.uv is not None)
        self._transparency(material, bsdf, maps, key, override, coordinates, base_alpha)
        self._transmission_medium(material, bsdf, maps, key, override, coordinates)
        return material

    def _uv_vector(self, material, model: AssetModel, override: MaterialSpec, maps: AssetMaterial):
        """(vector socket, box projection?) every map of a material reads: the mesh's UVs through
        the UV transform (socket None: the UVs as they are), or without UVs a box projection in
        object coordinates, one copy per ``texture_size`` metres."""
        nodes, links = material.node_tree.nodes, material.node_tree.links
        if model.uv is None:
            coordinates, mapping = nodes.new("ShaderNodeTexCoord"), nodes.new("ShaderNodeMapping")
            mapping.inputs["Scale"].default_value = (1 / override.texture_size,) * 3
            links.new(coordinates.outputs["Object"], mapping.inputs["Vector"])
            return mapping.outputs["Vector"], True
        if maps.uv_transform == TextureTransform():
            return None, False
        location, rotation, scale = blender_uv_mapping(maps.uv_transform)
        coordinates, mapping = nodes.new("ShaderNodeTexCoord"), nodes.new("ShaderNodeMapping")
        mapping.inputs["Location"].default_value = (*location, 0.0)
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, rotation)
        mapping.inputs["Scale"].default_value = (*scale, 1.0)
        links.new(coordinates.outputs["UV"], mapping.inputs["Vector"])
        return mapping.outputs["Vector"], False

    def _texture(self, material, key: str, pixels: np.ndarray, coordinates: tuple, data: bool):
        """An Image Texture node of ``pixels`` reading ``coordinates`` (see _uv_vector); ``data``:
        a linear map (roughness, normal, ...) rather than an sRGB colour."""
        texture = material.node_tree.nodes.new("ShaderNodeTexImage")
        texture.image = self._image(key, pixels, data)
        vector, box = coordinates
        if vector is not None:
            material.node_tree.links.new(vector, texture.inputs["Vector"])
        if box:
            texture.projection, texture.projection_blend = "BOX", 0.2
        return texture

    def _pbr_maps(self, material, bsdf, maps: AssetMaterial, key: str, override: MaterialSpec, coordinates: tuple,
                  has_uv: bool) -> None:
        """Roughness and metallic (factor x map, or the spec's value; x the spec's roughness_scale),
        normal map (tangent space on the UVs, or on each box projection's frame: _box_normal), bump,
        emission, clearcoat and sheen of a material.
        Cycles has no ambient-occlusion input: ``occlusion_texture`` is not rendered (the USD export
        keeps it). Transparency is wired by the glass part (``alpha``, ``transmission``, ``ior``)."""
        nodes, links = material.node_tree.nodes, material.node_tree.links
        scale = 1.0 if override.roughness_scale is None else override.roughness_scale
        values = {
            "Roughness": (maps.roughness if override.roughness is None else override.roughness) * scale,
            "Metallic": maps.metallic if override.metallic is None else override.metallic,
        }
        packed = maps.metallic_roughness_texture
        split = None
        if packed is not None and (override.roughness is None or override.metallic is None):
            split = nodes.new("ShaderNodeSeparateColor")
            links.new(self._texture(material, f"{key}/metallic_roughness", packed, coordinates, data=True).outputs["Color"],
                      split.inputs["Color"])
        for socket, channel, replaced in (("Roughness", "Green", override.roughness), ("Metallic", "Blue", override.metallic)):
            if split is None or replaced is not None:
                bsdf.inputs[socket].default_value = min(max(values[socket], 0.0), 1.0)
                continue
            product = nodes.new("ShaderNodeMath")
            product.operation, product.use_clamp = "MULTIPLY", True
            links.new(split.outputs[channel], product.inputs[0])
            product.inputs[1].default_value = values[socket]
            links.new(product.outputs["Value"], bsdf.inputs[socket])
        normal = None
        if maps.normal_texture is not None and has_uv:
            normal_map = nodes.new("ShaderNodeNormalMap")
            normal_map.space, normal_map.uv_map = "TANGENT", "UVMap"
            normal_map.inputs["Strength"].default_value = maps.normal_scale
            links.new(self._texture(material, f"{key}/normal", maps.normal_texture, coordinates, data=True).outputs["Color"],
                      normal_map.inputs["Color"])
            normal = normal_map.outputs["Normal"]
        elif maps.normal_texture is not None:
            normal = self._box_normal(material, self._image(f"{key}/normal", maps.normal_texture, True), coordinates[0])
        if maps.bump_texture is not None and maps.bump_distance > 0:
            bump = nodes.new("ShaderNodeBump")
            bump.inputs["Distance"].default_value = maps.bump_distance
            links.new(self._texture(material, f"{key}/bump", maps.bump_texture, coordinates, data=True).outputs["Color"],
                      bump.inputs["Height"])
            if normal is not None:
                links.new(normal, bump.inputs["Normal"])
            normal = bump.outputs["Normal"]
        if normal is not None:
            links.new(normal, bsdf.inputs["Normal"])
        if any(maps.emissive):
            bsdf.inputs["Emission Strength"].default_value = maps.emissive_strength
            if maps.emissive_texture is None:
                bsdf.inputs["Emission Color"].default_value = (*maps.emissive, 1.0)
            else:
                emission = self._texture(material, f"{key}/emissive", maps.emissive_texture, coordinates, data=False)
                links.new(self._multiply(material, emission.outputs["Color"], tuple(maps.emissive)),
                          bsdf.inputs["Emission Color"])
        if maps.clearcoat > 0:
            self._factor_map(material, bsdf.inputs["Coat Weight"], maps.clearcoat, maps.clearcoat_texture,
                             f"{key}/clearcoat", "Red", coordinates)
            self._factor_map(material, bsdf.inputs["Coat Roughness"], maps.clearcoat_roughness,
                             maps.clearcoat_roughness_texture, f"{key}/clearcoat_roughness", "Green", coordinates)
        if any(maps.sheen_color):
            bsdf.inputs["Sheen Weight"].default_value = 1.0
            if maps.sheen_color_texture is None:
                bsdf.inputs["Sheen Tint"].default_value = (*maps.sheen_color, 1.0)
            else:
                sheen = self._texture(material, f"{key}/sheen_color", maps.sheen_color_texture, coordinates, data=False)
                sheen.image.alpha_mode = "CHANNEL_PACKED"  # glTF often packs the sheen roughness in its alpha
                links.new(self._multiply(material, sheen.outputs["Color"], tuple(maps.sheen_color)), bsdf.inputs["Sheen Tint"])
            self._factor_map(material, bsdf.inputs["Sheen Roughness"], maps.sheen_roughness,
                             maps.sheen_roughness_texture, f"{key}/sheen_roughness", "Alpha", coordinates)

    def _factor_map(self, material, socket, factor: float, pixels: np.ndarray | None, key: str, channel: str,
                    coordinates: tuple) -> None:
        """``socket`` = ``factor`` x one channel ("Red", "Green", "Blue" or "Alpha") of a linear map,
        or ``factor`` alone without one (``pixels`` None)."""
        if pixels is None:
            socket.default_value = factor
            return
        value = self._map_channel(material, key, pixels, channel, coordinates)
        material.node_tree.links.new(self._math(material, "MULTIPLY", value, float(factor)), socket)

    def _map_channel(self, material, key: str, pixels: np.ndarray, channel: str, coordinates: tuple):
        """The socket of one channel ("Red", "Green", "Blue" or "Alpha") of a linear map."""
        texture = self._texture(material, key, pixels, coordinates, data=True)
        texture.image.alpha_mode = "CHANNEL_PACKED"  # the channels are independent data, never premultiplied
        if channel == "Alpha":
            return texture.outputs["Alpha"]
        separate = material.node_tree.nodes.new("ShaderNodeSeparateColor")
        material.node_tree.links.new(texture.outputs["Color"], separate.inputs["Color"])
        return separate.outputs[channel]

    def _transmission_medium(self, material, bsdf, maps: AssetMaterial, key: str, override: MaterialSpec,
                             coordinates: tuple) -> None:
        """The asset's transmission map (x the transmission factor, unless the spec replaces the
        transmission) and, on a transmissive material with a thickness, KHR_materials_volume's
        absorbing medium as a Volume Absorption shader.

        Cycles' Volume Absorption of colour C and density d absorbs d (1 - C) per metre in each
        channel; glTF's medium leaves attenuation_color A after attenuation_distance D, i.e. absorbs
        sigma = -ln(A) / D per metre (Beer-Lambert). So d = max(sigma) and C = 1 - sigma / d.
        """
        transmission = see_through(maps, override).transmission
        if override.transmission is None and transmission > 0 and maps.transmission_texture is not None:
            self._factor_map(material, bsdf.inputs["Transmission Weight"], transmission, maps.transmission_texture,
                             f"{key}/transmission", "Red", coordinates)
        if transmission <= 0 or maps.thickness <= 0 or not math.isfinite(maps.attenuation_distance):
            return
        sigma = [-math.log(max(c, 1e-6)) / maps.attenuation_distance for c in maps.attenuation_color]
        if max(sigma) <= 0:
            return
        absorption = material.node_tree.nodes.new("ShaderNodeVolumeAbsorption")
        absorption.inputs["Density"].default_value = max(sigma)
        absorption.inputs["Color"].default_value = (*(1 - s / max(sigma) for s in sigma), 1.0)
        material.node_tree.links.new(absorption.outputs["Volume"],
                                     material.node_tree.nodes["Material Output"].inputs["Volume"])
        material.cycles.homogeneous_volume = True  # constant density: exact attenuation, no ray marching

    @staticmethod
    def _box_normal(material, image, vector):
        """The world normal of a tangent-space normal map on a box-projected surface (no UVs).

        Cycles' box projection maps the face along +-X by u = +-y, v = z, along +-Y by u = -+x,
        v = z, along +-Z by u = -+y, v = x (object axes, the sign that of the normal's component):
        each projection's tangent (dP/du), bitangent (dP/dv) and axis make a right-handed frame,
        so the map's (x, y, z) is x T + y B + z N in it. The three are blended by the normal's
        components to the 4th power (Cycles' own blend of the colour differs only where faces meet
        at a slant), then turned from object into world space.
        """
        nodes, links = material.node_tree.nodes, material.node_tree.links

        def node(kind: str, operation: str | None = None, *inputs):
            made = nodes.new(kind)
            if operation is not None:
                made.operation = operation
            for socket, value in zip(made.inputs, inputs):
                if isinstance(value, (int, float)):
                    socket.default_value = value
                elif value is not None:
                    links.new(value, socket)
            return made

        def math(operation: str, a, b=None):
            return node("ShaderNodeMath", operation, a, b).outputs[0]

        def split(vector):
            parts = node("ShaderNodeSeparateXYZ", None, vector).outputs
            return parts["X"], parts["Y"], parts["Z"]

        def combine(x, y, z):
            return node("ShaderNodeCombineXYZ", None, x, y, z).outputs[0]

        co = split(vector)
        object_normal = nodes.new("ShaderNodeTexCoord").outputs["Normal"]
        n = split(object_normal)
        sign = [math("SIGN", c) for c in n]
        weighted = None
        for axis in range(3):
            s = sign[axis]
            if axis == 0:  # u = s y, v = z; T = s Y, B = Z, N = s X
                uv = (math("MULTIPLY", s, co[1]), co[2])
            elif axis == 1:  # u = -s x, v = z; T = -s X, B = Z, N = s Y
                uv = (math("MULTIPLY", math("MULTIPLY", s, -1.0), co[0]), co[2])
            else:  # u = -s y, v = x; T = -s Y, B = X, N = s Z
                uv = (math("MULTIPLY", math("MULTIPLY", s, -1.0), co[1]), co[0])
            texture = nodes.new("ShaderNodeTexImage")
            texture.image = image
            links.new(combine(*uv, 0.0), texture.inputs["Vector"])
            decoded = node("ShaderNodeVectorMath", "MULTIPLY_ADD", texture.outputs["Color"], None, None)
            decoded.inputs[1].default_value, decoded.inputs[2].default_value = (2.0, 2.0, 2.0), (-1.0, -1.0, -1.0)
            x, y, z = split(decoded.outputs["Vector"])
            sx, sz = math("MULTIPLY", s, x), math("MULTIPLY", s, z)
            if axis == 0:
                local = combine(sz, sx, y)
            elif axis == 1:
                local = combine(math("MULTIPLY", sx, -1.0), sz, y)
            else:
                local = combine(y, math("MULTIPLY", sx, -1.0), sz)
            weight = math("POWER", math("ABSOLUTE", n[axis]), 4.0)
            part = node("ShaderNodeVectorMath", "SCALE", local, None)
            links.new(weight, part.inputs["Scale"])
            weighted = part.outputs[0] if weighted is None else node(
                "ShaderNodeVectorMath", "ADD", weighted, part.outputs[0]).outputs[0]
        blended = node("ShaderNodeVectorMath", "NORMALIZE", weighted).outputs[0]
        world = nodes.new("ShaderNodeVectorTransform")
        world.vector_type, world.convert_from, world.convert_to = "NORMAL", "OBJECT", "WORLD"
        links.new(blended, world.inputs["Vector"])
        return world.outputs["Vector"]

    def _transparency(self, material, bsdf, maps: AssetMaterial, key: str, override: MaterialSpec,
                      coordinates: tuple, base_alpha) -> None:
        """Alpha (OPAQUE, MASK as a hard step at the cutoff, BLEND continuous), transmission and IOR.

        The surface's alpha is ``alpha`` x the opacity map's R (the spec's image, else that of the
        asset or its texture set: ``maps``), or else x the base texture's alpha (``base_alpha``:
        its socket, None without one). Cycles
        writes the label passes at the first surface whose alpha is at least the view layer's
        ``pass_alpha_threshold`` (1/1024): MASK holes and wholly transparent BLEND pixels show what
        is behind.
        """
        values = see_through(maps, override)
        bsdf.inputs["Transmission Weight"].default_value = values.transmission
        bsdf.inputs["IOR"].default_value = values.ior
        if values.alpha_mode == "OPAQUE":
            return
        source = base_alpha
        if override.opacity_texture is not None:
            opacity_key, opacity = f"opacity:{override.opacity_texture}", texture_image(override.opacity_texture)
        else:
            opacity_key, opacity = f"{key}/opacity", maps.opacity_texture
        if opacity is not None:
            source = self._map_channel(material, opacity_key, opacity, "Red", coordinates)
        if source is None:  # a constant alpha
            alpha = values.alpha if values.alpha_mode == "BLEND" else float(values.alpha >= values.alpha_cutoff)
            bsdf.inputs["Alpha"].default_value = alpha
            return
        alpha = self._math(material, "MULTIPLY", source, values.alpha)
        if values.alpha_mode == "MASK":  # 1 where alpha >= cutoff, else 0
            alpha = self._math(material, "SUBTRACT", 1.0, self._math(material, "LESS_THAN", alpha, values.alpha_cutoff))
        material.node_tree.links.new(alpha, bsdf.inputs["Alpha"])

    @staticmethod
    def _math(material, operation: str, a, b):
        """A Math node's output: ``a`` OPERATION ``b``, each a socket or a constant."""
        node = material.node_tree.nodes.new("ShaderNodeMath")
        node.operation = operation
        for socket, value in zip(node.inputs, (a, b)):
            if isinstance(value, float):
                socket.default_value = value
            else:
                material.node_tree.links.new(value, socket)
        return node.outputs["Value"]

    @staticmethod
    def _multiply(material, a, b):
        """A colour socket times another socket or a constant colour."""
        mix = material.node_tree.nodes.new("ShaderNodeMix")
        mix.data_type, mix.blend_type = "RGBA", "MULTIPLY"
        # The Mix node has a float, a vector and a colour socket of each name: pick the colour ones.
        socket = {s.identifier: s for s in (*mix.inputs, *mix.outputs)}
        socket["Factor_Float"].default_value = 1.0
        material.node_tree.links.new(a, socket["A_Color"])
        if isinstance(b, tuple):
            socket["B_Color"].default_value = (*b, 1.0)
        else:
            material.node_tree.links.new(b, socket["B_Color"])
        return socket["Result_Color"]

    def _image(self, key: str, pixels: np.ndarray, data: bool = False):
        """A Blender image of uint8 RGBA pixels (top row first; sRGB, or linear ``data``), made once
        per scene and key."""
        if key not in self._images:
            height, width = pixels.shape[:2]
            image = self._bpy.data.images.new(key, width, height, alpha=True, is_data=data)
            image.pixels.foreach_set((pixels[::-1].astype(np.float32) / 255).ravel())
            self._images[key] = image
        return self._images[key]

    def _link(self, obj, pose) -> None:
        self._set_pose(obj, pose)
        self._scene.collection.objects.link(obj)

    @staticmethod
    def _set_pose(obj, pose) -> None:
        from mathutils import Matrix

        obj.matrix_world = Matrix(np.asarray(pose, dtype=float).tolist())
