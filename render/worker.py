"""A warm Blender worker: imports bpy once, then renders SceneSpec after SceneSpec.

ONE Cycles render per frame writes every pass (RGB, depth, normals, object index) into one
multilayer EXR in a private scratch folder; label passes never cost a second render.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from sceneforge.scenes.assets import asset_mesh
from sceneforge.scenes.sampling import CV_TO_BLENDER
from sceneforge.scenes.spec import MaterialSpec, SceneSpec

from .passes import Passes, read_multilayer_exr

# Faces meeting at more than this angle get a hard edge (box corners, cylinder caps).
_SHARP_EDGE_ANGLE = math.radians(40)


class Renderer:
    """One Blender session in this process; ``render`` turns a SceneSpec into label arrays."""

    def __init__(self, threads: int = 0) -> None:
        import bpy  # only ever imported here, inside a render worker

        self._bpy = bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = bpy.context.scene
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
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
        self._scene = scene
        scratch_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._scratch = Path(tempfile.mkdtemp(prefix="sceneforge-render-", dir=scratch_root))

    def close(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def render(self, spec: SceneSpec, label_passes: bool = True) -> tuple[Passes, float]:
        """Render one scene; returns its passes and Blender's own render time in seconds."""
        self._clear()
        self._build(spec, label_passes)
        path = self._scratch / "frame.exr"
        self._scene.render.filepath = str(path)
        start = time.perf_counter()
        self._bpy.ops.render.render(write_still=True)
        seconds = time.perf_counter() - start
        return read_multilayer_exr(path, np.asarray(spec.camera.world_from_camera)), seconds

    def _clear(self) -> None:
        data = self._bpy.data
        data.batch_remove([*data.objects, *data.meshes, *data.materials, *data.lights, *data.cameras])
        data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)

    def _build(self, spec: SceneSpec, label_passes: bool) -> None:
        scene = self._scene
        scene.render.resolution_x, scene.render.resolution_y = spec.camera.width, spec.camera.height
        scene.cycles.samples = spec.render.samples
        scene.cycles.seed = spec.render.cycles_seed
        scene.cycles.use_denoising = spec.render.denoise
        layer = scene.view_layers[0]
        layer.use_pass_z = layer.use_pass_normal = layer.use_pass_object_index = label_passes
        self._set_albedo_output(label_passes and spec.render.albedo)

        background = scene.world.node_tree.nodes["Background"]
        background.inputs["Color"].default_value = (*spec.background_color, 1.0)
        background.inputs["Strength"].default_value = spec.background_strength

        for obj in spec.objects:
            mesh = asset_mesh(obj.asset)
            self._add_mesh(f"object_{obj.instance_id}", mesh.vertices, mesh.faces,
                           obj.world_from_object, obj.material, obj.instance_id)
        if spec.ground is not None:
            half = spec.ground.size / 2
            corners = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]])
            self._add_mesh("ground", corners, np.array([[0, 1, 2], [0, 2, 3]]), np.eye(4),
                           spec.ground.material, pass_index=0)
        for i, light in enumerate(spec.lights):
            data = self._bpy.data.lights.new(f"light_{i}", type=light.type.upper())
            data.energy = light.energy
            data.color = light.color
            if light.type == "area":
                data.size = light.size
            self._link(self._bpy.data.objects.new(f"light_{i}", data), light.world_from_light)
        self._add_camera(spec)

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
        cam = spec.camera
        data = self._bpy.data.cameras.new("camera")
        data.sensor_fit = "HORIZONTAL"
        data.lens = cam.K[0][0] * data.sensor_width / cam.width
        data.clip_start, data.clip_end = cam.clip_start, cam.clip_end
        obj = self._bpy.data.objects.new("camera", data)
        self._link(obj, np.asarray(cam.world_from_camera) @ CV_TO_BLENDER)
        self._scene.camera = obj

    def _add_mesh(self, name: str, vertices: np.ndarray, faces: np.ndarray, pose, material: MaterialSpec,
                  pass_index: int) -> None:
        bpy = self._bpy
        faces = np.asarray(faces, dtype=np.int32)
        mesh = bpy.data.meshes.new(name)
        mesh.vertices.add(len(vertices))
        mesh.vertices.foreach_set("co", np.asarray(vertices, dtype=np.float32).ravel())
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.ravel())
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
        mesh.update()
        mesh.shade_smooth()
        mesh.set_sharp_from_angle(angle=_SHARP_EDGE_ANGLE)
        mesh.materials.append(self._material(name, material))
        obj = bpy.data.objects.new(name, mesh)
        obj.pass_index = pass_index
        self._link(obj, pose)

    def _material(self, name: str, spec: MaterialSpec):
        material = self._bpy.data.materials.new(name)
        material.use_nodes = True
        bsdf = material.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (*spec.base_color, 1.0)
        bsdf.inputs["Roughness"].default_value = spec.roughness
        bsdf.inputs["Metallic"].default_value = spec.metallic
        albedo = material.node_tree.nodes.new("ShaderNodeOutputAOV")
        albedo.aov_name = "albedo"
        albedo.inputs["Color"].default_value = (*spec.base_color, 1.0)
        return material

    def _link(self, obj, pose) -> None:
        from mathutils import Matrix

        obj.matrix_world = Matrix(np.asarray(pose, dtype=float).tolist())
        self._scene.collection.objects.link(obj)


def serve(conn: Connection, log_path: str, threads: int) -> None:
    """Worker-process entry: render the SceneSpecs that arrive on ``conn`` until ``None`` does.

    Replies ``("ok", index, passes, seconds)`` or ``("error", index, traceback)``. Blender's own
    console output goes to ``log_path`` so that it never mixes with the progress display.
    """
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    renderer = Renderer(threads)
    try:
        while (spec := conn.recv()) is not None:
            try:
                passes, seconds = renderer.render(spec)
                conn.send(("ok", spec.index, passes, seconds))
            except Exception:  # reported to the conductor with the frame it belongs to
                print(traceback.format_exc(), flush=True)
                conn.send(("error", spec.index, traceback.format_exc()))
    finally:
        renderer.close()
