"""A frame's scene as a USD stage (``scenes/NNNNNN.usda``), to inspect in usdview or Blender.

The stage holds what produced the frame: every labeled object (mesh with the renderer's smooth
normals, pose, UsdPreviewSurface materials with their maps, ids in ``customData``), the ground,
the lights, the background or the HDRI as a dome light and the frame's camera with its
intrinsics (K; a lens model and its coefficients in the camera's ``customData``). Images are
written beside the stage (``textures/``, content-hash names, relative paths). Layout and
conventions are in docs/formats.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdShade, Vt

from sceneforge.floor.axes import opengl_pose
from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.floor.files import atomic_write, link_or_copy
from sceneforge.scenes.assets import (
    SHARP_EDGE_ANGLE_DEG,
    AssetMaterial,
    AssetModel,
    asset_model,
    ground_model,
    hue_shifted,
    hue_shifted_image,
    texture_image,
    texture_maps,
    with_texture,
)
from sceneforge.scenes.mesh import connected_components
from sceneforge.scenes.spec import CameraSpec, LightSpec, MaterialSpec, SceneSpec
from sceneforge.scenes.transparency import see_through

# In USD's lens unit, a tenth of a scene unit (here 36 mm, a full-frame sensor's width); only
# the ratios of apertures and focal length set the intrinsics.
HORIZONTAL_APERTURE = 0.36
# SceneSpec light powers (W/m2 of irradiance for a sun, W for the others) divided by these give
# UsdLux intensities that Blender's USD importer turns back into the same powers.
_INTENSITY_DIVISOR = {"sun": 4.0, "point": np.pi, "spot": np.pi, "area": np.pi}
TEXTURES = "textures"  # the stage's images, in this folder beside it
# A dome light's latlong map has its pole on local +Y and its centre column on local +Z (OpenEXR's
# convention); the renderer's world (Z up) has the pole on +Z and the centre on +X: the dome's
# local axes in world coordinates, before the HDRI's turn about +Z.
_WORLD_FROM_DOME = np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def scene_usda(spec: SceneSpec, exposure_ev: float = 0.0, folder: Path | None = None) -> str:
    """The USD stage of one frame, as ``.usda`` text (``exposure_ev``: the EV its image was developed
    with; ``folder``: where the stage is saved, see ``scene_stage``).

    The text of ``scene_stage``, made in two parts: the scene without its cameras, kept for the
    next frame of the same scene (only its cameras change), and the cameras, spliced in as the
    last children of /World where the whole stage's export writes them.
    """
    key = (json.dumps(spec.model_dump(mode="json", include=_SCENE_FIELDS), sort_keys=True), str(folder))
    if _scene_text.get("key") != key:
        stage = _scene_part(spec, folder)  # held: the root layer lives only as long as its stage
        _scene_text.update(key=key, text=stage.GetRootLayer().ExportToString())
    cameras = _new_stage()
    _add_cameras(cameras, spec, exposure_ev)
    camera_text = cameras.GetRootLayer().ExportToString()
    scene, opens = _scene_text["text"], camera_text.find(_WORLD_OPENS)
    if opens < 0 or not scene.endswith(_WORLD_CLOSES):  # another USD version's layout: export it whole
        stage = scene_stage(spec, exposure_ev, folder)
        return stage.GetRootLayer().ExportToString()
    return f"{scene[:-len(_WORLD_CLOSES)]}\n{camera_text[opens + len(_WORLD_OPENS):]}"  # the cameras, then "}"


# What the stage holds besides its cameras (``_scene_part``), and the last scene's text by it.
_SCENE_FIELDS = {"objects", "props", "ground", "lights", "hdri", "background_color", "background_strength"}
_scene_text: dict[str, object] = {}
_WORLD_OPENS, _WORLD_CLOSES = 'def Xform "World"\n{\n', "}\n\n"


def scene_stage(spec: SceneSpec, exposure_ev: float = 0.0, folder: Path | None = None) -> Usd.Stage:
    """The USD stage of one frame (in memory): /World with objects, ground, lights and camera (the
    view's own, with the EV its image was developed with); a rig's view also holds every rig
    camera as /World/rig/NAME.

    ``folder`` is the folder the stage will be saved in: its images (material maps, the HDRI) are
    written to ``folder/textures`` and referenced relative to the stage. Without one (a stage to
    inspect in memory) materials keep their constant inputs only and the HDRI is referenced by
    its absolute path.
    """
    stage = _scene_part(spec, folder)
    _add_cameras(stage, spec, exposure_ev)
    return stage


def _new_stage() -> Usd.Stage:
    """An in-memory stage with its units, up axis and default prim /World."""
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, "/World").GetPrim())
    return stage


def _scene_part(spec: SceneSpec, folder: Path | None) -> Usd.Stage:
    """The stage of ``scene_stage`` without its cameras: what the frames of one still scene share."""
    files = _Files(folder)
    stage = _new_stage()
    UsdGeom.Scope.Define(stage, "/World/Looks")
    for obj in spec.objects:
        prim = _add_mesh(stage, f"object_{obj.instance_id}", asset_model(obj.asset), obj.world_from_object,
                         obj.material, files).GetPrim()
        for key, value in (("instance_id", obj.instance_id), ("category_id", obj.category_id),
                           ("category", obj.category), ("asset", obj.asset.hash)):
            prim.SetCustomDataByKey(f"sceneforge:{key}", value)
        if obj.keypoints:  # in the object's own frame, like the mesh's points
            prim.SetCustomDataByKey("sceneforge:keypoint_names", Vt.StringArray(list(obj.keypoints)))
            prim.SetCustomDataByKey("sceneforge:keypoints", Vt.Vec3dArray([Gf.Vec3d(*p) for p in obj.keypoints.values()]))
    for i, prop in enumerate(spec.props):  # distractors and supports: drawn, never labeled
        prim = _add_mesh(stage, f"prop_{i}", asset_model(prop.asset), prop.world_from_object, prop.material, files).GetPrim()
        prim.SetCustomDataByKey("sceneforge:prop", prop.name)
    if spec.ground is not None:
        _add_mesh(stage, "ground", ground_model(spec.ground.size), np.eye(4), spec.ground.material, files)
    for i, light in enumerate(spec.lights):
        _add_light(stage, f"/World/light_{i}", light)
    dome = UsdLux.DomeLight.Define(stage, "/World/background")
    if spec.hdri is None:
        dome.CreateColorAttr(Gf.Vec3f(*spec.background_color))
        dome.CreateIntensityAttr(spec.background_strength)
    else:
        dome.CreateTextureFileAttr(Sdf.AssetPath(files.copy(spec.hdri.path)))
        dome.CreateTextureFormatAttr(UsdLux.Tokens.latlong)
        dome.CreateIntensityAttr(spec.hdri.strength)
        turn = math.radians(spec.hdri.rotation_deg)  # the map turned about world +Z, as the renderer turns it
        about_z = np.array([[math.cos(turn), -math.sin(turn), 0, 0], [math.sin(turn), math.cos(turn), 0, 0],
                            [0, 0, 1, 0], [0, 0, 0, 1]])
        _set_pose(dome, about_z @ _WORLD_FROM_DOME)
        dome.GetPrim().SetCustomDataByKey("sceneforge:rotation_deg", spec.hdri.rotation_deg)
    return stage


def _add_cameras(stage: Usd.Stage, spec: SceneSpec, exposure_ev: float) -> None:
    """The frame's camera as /World/camera and, in a rig's view, every rig camera as /World/rig/NAME."""
    _add_camera(stage, "/World/camera", spec.camera, exposure_ev)
    for camera in spec.rig:  # every camera of the frame's rig, this view's too, by name
        _add_camera(stage, f"/World/rig/{camera.name}", camera, exposure_ev if camera.name == spec.camera.name else None)
        prim = stage.GetPrimAtPath(f"/World/rig/{camera.name}")
        prim.SetCustomDataByKey("sceneforge:camera", camera.name)
        if camera.stereo_baseline is not None:
            prim.SetCustomDataByKey("sceneforge:stereo_baseline", camera.stereo_baseline)


class _Files:
    """Writes a stage's images into ``folder/textures`` once each, under content-hash names (maps
    shared by objects, frames and scenes are one file), and returns the paths to reference them by."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = None if folder is None else Path(folder) / TEXTURES

    def image(self, pixels: np.ndarray) -> str | None:
        """A uint8 RGBA image (top row first) as a PNG; None without a folder."""
        if self.folder is None:
            return None
        digest = hashlib.blake2b(repr(pixels.shape).encode(), digest_size=10)
        digest.update(np.ascontiguousarray(pixels).data)
        return self._write(f"{digest.hexdigest()}.png", lambda tmp: Image.fromarray(pixels, "RGBA").save(tmp, format="PNG"))

    def copy(self, path: str) -> str:
        """An image file (the HDRI) linked or copied as is; its absolute path without a folder."""
        if self.folder is None:
            return path
        stat = os.stat(path)
        name = f"{_file_digest(path, stat.st_size, stat.st_mtime_ns)}{Path(path).suffix.lower()}"
        return self._write(name, lambda tmp: link_or_copy(Path(path), tmp))

    def _write(self, name: str, write) -> str:
        target = self.folder / name
        if not target.exists():  # workers racing on one name write the same bytes: either rename wins
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(target, write)
        return f"./{TEXTURES}/{name}"


@lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """The content hash of a file (size and modification time key the cache)."""
    digest = hashlib.blake2b(digest_size=10)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_mesh(stage: Usd.Stage, name: str, model: AssetModel, pose, change: MaterialSpec, files: _Files) -> UsdGeom.Mesh:
    """A mesh prim at ``pose`` (one prim, so that importers name the object after it) with the
    renderer's shading normals and its materials (the scene's ``change`` applied): the one
    covering most faces bound to the mesh, any other to a GeomSubset of its faces."""
    mesh = UsdGeom.Mesh.Define(stage, f"/World/{name}")
    _set_pose(mesh, np.asarray(pose))
    vertices, faces = np.asarray(model.mesh.vertices, dtype=np.float64), np.asarray(model.mesh.faces, dtype=np.int32)
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices.astype(np.float32)))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), faces.shape[1], dtype=np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.ravel()))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # the polygons as rendered, not a limit surface
    mesh.CreateExtentAttr(UsdGeom.Boundable.ComputeExtentFromPlugins(mesh, Usd.TimeCode.Default()))
    primvars = UsdGeom.PrimvarsAPI(mesh)
    normals, corners = _model_normals(model)
    normal = primvars.CreatePrimvar("normals", Sdf.ValueTypeNames.Normal3fArray, UsdGeom.Tokens.faceVarying)
    normal.Set(Vt.Vec3fArray.FromNumpy(normals))
    normal.SetIndices(Vt.IntArray.FromNumpy(corners.astype(np.int32)))
    materials = [_changed(own, change) for own in model.materials]
    vertex_colors = model.colors is not None and change.texture is None and change.base_color is None
    if vertex_colors:  # multiplying the base colour, as the renderer's do (linear, like every USD colour)
        primvars.CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex).Set(
            Vt.Vec3fArray.FromNumpy(hue_shifted(srgb_to_linear(model.colors[:, :3] / 255), change.hue_shift_deg or 0.0)
                                    .astype(np.float32)))
    if files.folder is not None and any(_maps(m) for m in materials):
        st = primvars.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                    UsdGeom.Tokens.vertex if model.uv is not None else UsdGeom.Tokens.faceVarying)
        uv = model.uv if model.uv is not None else _box_uv(vertices, faces, change.texture_size)
        st.Set(Vt.Vec2fArray.FromNumpy(np.asarray(uv, dtype=np.float32)))
    face_materials = np.asarray(model.face_materials, dtype=np.int64)
    counts = np.bincount(face_materials, minlength=len(materials))
    main = int(counts.argmax())
    binding = UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim())
    binding.Bind(_material(stage, f"/World/Looks/{name}", materials[main], change, vertex_colors, files))
    for i in np.flatnonzero(counts):
        if i != main:
            subset = binding.CreateMaterialBindSubset(f"material_{i}", Vt.IntArray.FromNumpy(
                np.flatnonzero(face_materials == i).astype(np.int32)), UsdGeom.Tokens.face)
            UsdShade.MaterialBindingAPI.Apply(subset.GetPrim()).Bind(
                _material(stage, f"/World/Looks/{name}_{i}", materials[i], change, vertex_colors, files))
    return mesh


@lru_cache(maxsize=32)
def _model_normals(model: AssetModel) -> tuple[np.ndarray, np.ndarray]:
    """``corner_normals`` of an asset's mesh, once per model (models are cached and compared by identity)."""
    return corner_normals(np.asarray(model.mesh.vertices, dtype=np.float64), np.asarray(model.mesh.faces))


def corner_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shading normals of a triangle mesh as the renderer shades it: smooth, but split along edges
    whose faces meet at more than ``SHARP_EDGE_ANGLE_DEG`` (and along boundary and non-manifold
    edges); each is the corner-angle weighted mean of its fan's face normals.

    Returns one normal per fan (N, 3, float32) and, per face corner (face-major, 3F), the index of its fan.
    """
    corners = vertices[faces]  # (F, 3, 3)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    face_normals = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-300)
    to_next, to_previous = corners[:, [1, 2, 0]] - corners, corners[:, [2, 0, 1]] - corners
    cosine = np.einsum("fcd,fcd->fc", to_next, to_previous) / np.maximum(
        np.linalg.norm(to_next, axis=2) * np.linalg.norm(to_previous, axis=2), 1e-300)
    angles = np.arccos(np.clip(cosine, -1.0, 1.0))
    # Half-edges: corner c of a face runs from its vertex to the next corner's.
    corner_ids = np.arange(faces.size).reshape(faces.shape)
    start, end = faces.ravel(), faces[:, [1, 2, 0]].ravel()
    start_corner, end_corner = corner_ids.ravel(), corner_ids[:, [1, 2, 0]].ravel()
    low, high = np.minimum(start, end).astype(np.int64), np.maximum(start, end).astype(np.int64)
    _, edge, uses = np.unique(low * len(vertices) + high, return_inverse=True, return_counts=True)
    order = np.argsort(edge, kind="stable")
    pair = np.flatnonzero((edge[order][:-1] == edge[order][1:]) & (uses[edge[order][:-1]] == 2))
    first, second = order[pair], order[pair + 1]
    smooth = np.einsum("ed,ed->e", face_normals[first // 3], face_normals[second // 3]) >= math.cos(
        math.radians(SHARP_EDGE_ANGLE_DEG))
    first, second = first[smooth], second[smooth]
    same = start[first] == start[second]  # else the faces run the shared edge in opposite directions
    join_a = np.where(same, start_corner[second], end_corner[second])
    join_b = np.where(same, end_corner[second], start_corner[second])
    rows = np.concatenate([start_corner[first], end_corner[first]])
    columns = np.concatenate([join_a, join_b])
    count, fan = connected_components(faces.size, rows, columns)
    sums = np.zeros((count, 3))
    np.add.at(sums, fan, (face_normals[:, None, :] * angles[:, :, None]).reshape(-1, 3))
    length = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(length > 0, length, 1.0)).astype(np.float32), fan


def _box_uv(vertices: np.ndarray, faces: np.ndarray, size: float) -> np.ndarray:
    """Per face corner (3F, 2) texture coordinates of the renderer's box projection (one copy of the
    image per ``size`` metres of the object's own coordinates, each face projected along the axis
    its normal leans on most; the renderer blends the projections near 45 degrees, USD cannot)."""
    co = vertices[faces] / size  # (F, 3, 3)
    normal = np.cross(co[:, 1] - co[:, 0], co[:, 2] - co[:, 0])
    axis = np.abs(normal).argmax(axis=1)
    sign = np.sign(normal[np.arange(len(faces)), axis])[:, None]
    x, y, z = co[..., 0], co[..., 1], co[..., 2]
    u = np.select([axis[:, None] == 0, axis[:, None] == 1], [np.where(sign < 0, 1 - y, y), np.where(sign > 0, 1 - x, x)],
                  np.where(sign > 0, 1 - y, y))
    v = np.select([axis[:, None] == 0, axis[:, None] == 1], [z, z], x)
    return np.stack([u, v], axis=-1).reshape(-1, 2)


def _changed(own: AssetMaterial, change: MaterialSpec) -> AssetMaterial:
    """The asset's material with the scene's changes, as the renderer applies them: a texture (an
    image or a texture set) replaces the asset's maps (its colour tinted by ``base_color``), a
    colour alone replaces colour and map; ``roughness_scale`` multiplies the roughness, a hue
    shift turns the colour (baked into the colour map, which then carries the tint too), and the
    transparency changes (``see_through``) and opacity image replace the asset's."""
    material = own if change.texture is None else with_texture(own, texture_maps(change.texture))
    values = {key: getattr(change, key) for key in ("roughness", "metallic", "specular") if getattr(change, key) is not None}
    if change.texture is not None:
        values.update(base_color=tuple(change.base_color or (1.0, 1.0, 1.0)))
    elif change.base_color is not None:
        values.update(texture=None, base_color=tuple(change.base_color))
    if change.roughness_scale is not None:
        values["roughness"] = min(1.0, values.get("roughness", material.roughness) * change.roughness_scale)
    values.update(dataclasses.asdict(see_through(material, change)))
    if change.opacity_texture is not None:
        values["opacity_texture"] = texture_image(change.opacity_texture)
    material = dataclasses.replace(material, **values)
    if change.hue_shift_deg:
        if material.texture is None:
            material = dataclasses.replace(material, base_color=tuple(hue_shifted(material.base_color, change.hue_shift_deg)))
        else:
            tinted = material.texture.copy()
            tinted[..., :3] = linear_to_srgb8(srgb_to_linear(tinted[..., :3] / 255.0) * material.base_color)
            material = dataclasses.replace(material, texture=hue_shifted_image(tinted, change.hue_shift_deg),
                                           base_color=(1.0, 1.0, 1.0))
    return material


def _maps(material: AssetMaterial) -> bool:
    """Whether a material has any image map (then its mesh needs texture coordinates)."""
    return any(getattr(material, key) is not None for key in (
        "texture", "metallic_roughness_texture", "normal_texture", "occlusion_texture", "emissive_texture",
        "bump_texture", "opacity_texture"))


def _material(stage: Usd.Stage, path: str, spec: AssetMaterial, change: MaterialSpec, vertex_colors: bool,
              files: _Files) -> UsdShade.Material:
    """A UsdPreviewSurface with a UsdUVTexture per map (docs/formats.md: what maps where); without a
    base colour map, ``vertex_colors`` read the mesh's ``displayColor`` as the base colour."""
    material = UsdShade.Material.Define(stage, path)
    surface = UsdShade.Shader.Define(stage, f"{path}/surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    coordinates = []  # the st reader (and UV transform) of this material's maps, made with its first map

    def texture(name: str, pixels: np.ndarray | None, colour_space: str, scale, bias=(0.0, 0.0, 0.0, 0.0)):
        """A UsdUVTexture of ``pixels`` (its outputs are the texel times ``scale`` plus ``bias``), or None."""
        asset = None if pixels is None else files.image(pixels)
        if asset is None:
            return None
        if not coordinates:
            coordinates.append(_st_source(stage, path, spec))
        shader = UsdShade.Shader.Define(stage, f"{path}/{name}")
        shader.CreateIdAttr("UsdUVTexture")
        shader.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(asset))
        shader.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set(colour_space)
        shader.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(coordinates[0])
        for wrap in ("wrapS", "wrapT"):
            shader.CreateInput(wrap, Sdf.ValueTypeNames.Token).Set("repeat")
        shader.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*scale))
        shader.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*bias))
        return shader

    def put(name: str, kind, value=None, source=None, output: str = "rgb") -> None:
        """Set an input of the surface to a constant, or connect it to a texture's output."""
        socket = surface.CreateInput(name, kind)
        if source is None:
            socket.Set(value)
        else:
            socket.ConnectToSource(source.ConnectableAPI(), output, UsdShade.AttributeType.Output,
                                   Sdf.ValueTypeNames.Float3 if output in ("rgb", "result") else Sdf.ValueTypeNames.Float)

    # Coverage: glTF's alpha modes. UsdPreviewSurface has no transmission: a transmissive surface
    # is written as it describes clear glass, transparent with its specular response and ior
    # (opacity x (1 - transmission)); a cut-out keeps its holes and its transmission is data only.
    if spec.alpha_mode == "OPAQUE":
        coverage = 1.0 - spec.transmission
    elif spec.alpha_mode == "MASK":
        coverage = spec.alpha
    else:
        coverage = spec.alpha * (1.0 - spec.transmission)
    opacity_map = spec.alpha_mode != "OPAQUE" and spec.opacity_texture is not None
    base_alpha = spec.alpha_mode != "OPAQUE" and spec.opacity_texture is None and spec.texture is not None
    base = texture("base_color", spec.texture, "sRGB", (*spec.base_color, coverage if base_alpha else 1.0))
    if base is None and vertex_colors:  # UsdPreviewSurface cannot multiply: vertex-coloured assets have white factors
        base = UsdShade.Shader.Define(stage, f"{path}/vertex_colors")
        base.CreateIdAttr("UsdPrimvarReader_float3")
        base.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
        base.CreateInput("fallback", Sdf.ValueTypeNames.Float3).Set(Gf.Vec3f(*spec.base_color))
        put("diffuseColor", Sdf.ValueTypeNames.Color3f, source=base, output="result")
    else:
        put("diffuseColor", Sdf.ValueTypeNames.Color3f, Gf.Vec3f(*spec.base_color), base)
    opacity = texture("opacity", spec.opacity_texture if opacity_map else None, "raw", (coverage,) * 4)
    if opacity is not None:
        put("opacity", Sdf.ValueTypeNames.Float, source=opacity, output="r")
    elif base_alpha and base is not None:
        put("opacity", Sdf.ValueTypeNames.Float, source=base, output="a")
    else:
        put("opacity", Sdf.ValueTypeNames.Float, coverage)
    if spec.alpha_mode == "MASK":
        put("opacityThreshold", Sdf.ValueTypeNames.Float, spec.alpha_cutoff)
    put("ior", Sdf.ValueTypeNames.Float, spec.ior)
    # glTF's packing: roughness in G, metallic in B; a scene's value replaces the map.
    packed = spec.metallic_roughness_texture if change.roughness is None or change.metallic is None else None
    packed = texture("metallic_roughness", packed, "raw", (1.0, spec.roughness, spec.metallic, 1.0))
    put("roughness", Sdf.ValueTypeNames.Float, spec.roughness, packed if change.roughness is None else None, "g")
    put("metallic", Sdf.ValueTypeNames.Float, spec.metallic, packed if change.metallic is None else None, "b")
    # Tangent-space normals in -1..1, x and y times normal_scale.
    scale = spec.normal_scale
    normal = texture("normal", spec.normal_texture, "raw", (2 * scale, 2 * scale, 2.0, 1.0), (-scale, -scale, -1.0, 0.0))
    if normal is not None:
        put("normal", Sdf.ValueTypeNames.Normal3f, source=normal)
    occlusion = texture("occlusion", spec.occlusion_texture, "raw", (1.0,) * 4)
    if occlusion is not None:
        put("occlusion", Sdf.ValueTypeNames.Float, source=occlusion, output="r")
    emission = tuple(c * spec.emissive_strength for c in spec.emissive)
    emissive = texture("emissive", spec.emissive_texture, "sRGB", (*emission, 1.0))
    if emissive is not None or any(emission):
        put("emissiveColor", Sdf.ValueTypeNames.Color3f, Gf.Vec3f(*emission), emissive)
    if spec.clearcoat > 0:
        put("clearcoat", Sdf.ValueTypeNames.Float, spec.clearcoat)
        put("clearcoatRoughness", Sdf.ValueTypeNames.Float, spec.clearcoat_roughness)
    # What UsdPreviewSurface cannot say, exactly, for other tools.
    prim = material.GetPrim()
    for key in ("transmission", "ior", "alpha", "alpha_mode", "alpha_cutoff"):
        prim.SetCustomDataByKey(f"sceneforge:{key}", getattr(spec, key))
    if spec.bump_texture is not None and (bump := files.image(spec.bump_texture)) is not None:
        prim.SetCustomDataByKey("sceneforge:bump_texture", bump)
        prim.SetCustomDataByKey("sceneforge:bump_distance", spec.bump_distance)
    if spec.thickness > 0:  # KHR_materials_volume's medium (an infinite distance absorbs nothing)
        prim.SetCustomDataByKey("sceneforge:thickness", spec.thickness)
        prim.SetCustomDataByKey("sceneforge:attenuation_color", Gf.Vec3f(*spec.attenuation_color))
        prim.SetCustomDataByKey("sceneforge:attenuation_distance", spec.attenuation_distance)
    return material


def _st_source(stage: Usd.Stage, path: str, spec: AssetMaterial) -> UsdShade.Output:
    """The material's texture coordinates: the mesh's ``st``, through its UV transform if it has one.

    ``uv_transform`` holds glTF's KHR_texture_transform (v down); ``st`` has v up, so the same
    map is the transform conjugated by v -> 1 - v: scale (sx, sy), rotation +r (counter-clockwise,
    UsdTransform2d's sense), translation (ox + sy sin r, 1 - oy - sy cos r).
    """
    reader = UsdShade.Shader.Define(stage, f"{path}/st")
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    result = reader.CreateOutput("result", Sdf.ValueTypeNames.Float2)
    transform = spec.uv_transform
    if (tuple(transform.offset), transform.rotation, tuple(transform.scale)) == ((0.0, 0.0), 0.0, (1.0, 1.0)):
        return result
    (ox, oy), r, (sx, sy) = transform.offset, transform.rotation, transform.scale
    shader = UsdShade.Shader.Define(stage, f"{path}/uv_transform")
    shader.CreateIdAttr("UsdTransform2d")
    shader.CreateInput("in", Sdf.ValueTypeNames.Float2).ConnectToSource(result)
    shader.CreateInput("scale", Sdf.ValueTypeNames.Float2).Set(Gf.Vec2f(sx, sy))
    shader.CreateInput("rotation", Sdf.ValueTypeNames.Float).Set(math.degrees(r))
    shader.CreateInput("translation", Sdf.ValueTypeNames.Float2).Set(Gf.Vec2f(ox + sy * math.sin(r), 1 - oy - sy * math.cos(r)))
    return shader.CreateOutput("result", Sdf.ValueTypeNames.Float2)


def _add_light(stage: Usd.Stage, path: str, light: LightSpec) -> None:
    if light.type == "sun":
        usd_light = UsdLux.DistantLight.Define(stage, path)
    elif light.type in ("point", "spot"):
        usd_light = UsdLux.SphereLight.Define(stage, path)
        usd_light.CreateTreatAsPointAttr(True)
        if light.type == "spot":
            shaping = UsdLux.ShapingAPI.Apply(usd_light.GetPrim())
            shaping.CreateShapingConeAngleAttr(light.spot_size_deg / 2)
            shaping.CreateShapingConeSoftnessAttr(light.spot_blend)
    else:
        usd_light = UsdLux.RectLight.Define(stage, path)
        usd_light.CreateWidthAttr(light.size)
        usd_light.CreateHeightAttr(light.size)
    # Like a Blender light, the energy is the light's total, whatever its size.
    usd_light.CreateNormalizeAttr(True)
    usd_light.CreateIntensityAttr(light.energy / _INTENSITY_DIVISOR[light.type])
    usd_light.CreateColorAttr(Gf.Vec3f(*light.color))
    _set_pose(usd_light, opengl_pose(light.world_from_light))  # UsdLux lights shine along local -Z


def _add_camera(stage: Usd.Stage, path: str, camera: CameraSpec, exposure_ev: float | None) -> None:
    """A UsdGeom.Camera reproducing K: the apertures span the image's pixel edges; its ``exposure``
    (log2 of the image-plane scale, USD's own meaning) is the frame's EV when known (another rig
    view's EV is that view's own stage's); a lens is written in customData
    (``sceneforge:lens_model``, ``sceneforge:lens_coefficients``, OpenCV's order).

    With ``a`` = horizontalAperture: focalLength = fx a / W, verticalAperture = a (H / W) (fx / fy),
    horizontalApertureOffset = ((W - 1) / 2 - cx) a / W, verticalApertureOffset =
    (cy - (H - 1) / 2) verticalAperture / H (USD's +y is up, OpenCV's v down).
    """
    (fx, _, cx), (_, fy, cy), _ = camera.K
    width, height = camera.width, camera.height
    vertical = HORIZONTAL_APERTURE * height / width * fx / fy
    usd_camera = UsdGeom.Camera.Define(stage, path)
    usd_camera.CreateProjectionAttr(UsdGeom.Tokens.perspective)
    usd_camera.CreateFocalLengthAttr(fx * HORIZONTAL_APERTURE / width)
    usd_camera.CreateHorizontalApertureAttr(HORIZONTAL_APERTURE)
    usd_camera.CreateVerticalApertureAttr(vertical)
    usd_camera.CreateHorizontalApertureOffsetAttr(((width - 1) / 2 - cx) * HORIZONTAL_APERTURE / width)
    usd_camera.CreateVerticalApertureOffsetAttr((cy - (height - 1) / 2) * vertical / height)
    usd_camera.CreateClippingRangeAttr(Gf.Vec2f(camera.clip_start, camera.clip_end))
    if exposure_ev is not None:
        usd_camera.CreateExposureAttr(exposure_ev)
    if camera.lens is not None:  # UsdGeom.Camera has no distortion: the lens rides along as data
        prim = usd_camera.GetPrim()
        prim.SetCustomDataByKey("sceneforge:lens_model", camera.lens.model)
        prim.SetCustomDataByKey("sceneforge:lens_coefficients", Vt.DoubleArray(camera.lens.coefficients))
    _set_pose(usd_camera, opengl_pose(camera.world_from_camera))  # USD cameras look down -Z, +Y up


def _set_pose(xformable: UsdGeom.Xformable, pose: np.ndarray) -> None:
    """One transform op; Gf matrices act on row vectors, hence the transpose."""
    xformable.AddTransformOp().Set(Gf.Matrix4d(pose.T.tolist()))
