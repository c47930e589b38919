"""A frame's scene as a USD stage (``scenes/NNNNNN.usda``), to inspect in usdview or Blender.

The stage holds what produced the frame: every labeled object (mesh, pose, material and its ids
in ``customData``), the ground, the lights, the background as a dome light and the frame's
camera with its intrinsics (K; a lens model and its coefficients in the camera's ``customData``). Layout and conventions are in docs/formats.md.
"""

from __future__ import annotations

import numpy as np
from pxr import Gf, Sdf, Usd, UsdGeom, UsdLux, UsdShade, Vt

from sceneforge.floor.axes import opengl_pose
from sceneforge.scenes.assets import AssetMaterial, asset_model, ground_model
from sceneforge.scenes.spec import CameraSpec, LightSpec, MaterialSpec, SceneSpec

# In USD's lens unit, a tenth of a scene unit (here 36 mm, a full-frame sensor's width); only
# the ratios of apertures and focal length set the intrinsics.
HORIZONTAL_APERTURE = 0.36
# SceneSpec light powers (W/m2 of irradiance for a sun, W for the others) divided by these give
# UsdLux intensities that Blender's USD importer turns back into the same powers.
_INTENSITY_DIVISOR = {"sun": 4.0, "point": np.pi, "spot": np.pi, "area": np.pi}


def scene_usda(spec: SceneSpec, exposure_ev: float = 0.0) -> str:
    """The USD stage of one frame, as ``.usda`` text (``exposure_ev``: the EV its image was developed with)."""
    stage = scene_stage(spec, exposure_ev)  # held: the root layer lives only as long as its stage
    return stage.GetRootLayer().ExportToString()


def scene_stage(spec: SceneSpec, exposure_ev: float = 0.0) -> Usd.Stage:
    """The USD stage of one frame (in memory): /World with objects, ground, lights and camera (the
    view's own, with the EV its image was developed with); a rig's view also holds every rig
    camera as /World/rig/NAME."""
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, "/World").GetPrim())
    UsdGeom.Scope.Define(stage, "/World/Looks")
    for obj in spec.objects:
        model = asset_model(obj.asset)
        prim = _add_mesh(stage, f"object_{obj.instance_id}", model.mesh.vertices, model.mesh.faces,
                         obj.world_from_object, _main_material(model.materials, model.face_materials, obj.material)).GetPrim()
        for key, value in (("instance_id", obj.instance_id), ("category_id", obj.category_id),
                           ("category", obj.category), ("asset", obj.asset.hash)):
            prim.SetCustomDataByKey(f"sceneforge:{key}", value)
        if obj.keypoints:  # in the object's own frame, like the mesh's points
            prim.SetCustomDataByKey("sceneforge:keypoint_names", Vt.StringArray(list(obj.keypoints)))
            prim.SetCustomDataByKey("sceneforge:keypoints", Vt.Vec3dArray([Gf.Vec3d(*p) for p in obj.keypoints.values()]))
    for i, prop in enumerate(spec.props):  # distractors and supports: drawn, never labeled
        model = asset_model(prop.asset)
        prim = _add_mesh(stage, f"prop_{i}", model.mesh.vertices, model.mesh.faces, prop.world_from_object,
                         _main_material(model.materials, model.face_materials, prop.material)).GetPrim()
        prim.SetCustomDataByKey("sceneforge:prop", prop.name)
    if spec.ground is not None:
        model = ground_model(spec.ground.size)
        _add_mesh(stage, "ground", model.mesh.vertices, model.mesh.faces, np.eye(4),
                  _main_material(model.materials, model.face_materials, spec.ground.material))
    for i, light in enumerate(spec.lights):
        _add_light(stage, f"/World/light_{i}", light)
    dome = UsdLux.DomeLight.Define(stage, "/World/background")
    if spec.hdri is None:
        dome.CreateColorAttr(Gf.Vec3f(*spec.background_color))
        dome.CreateIntensityAttr(spec.background_strength)
    else:
        dome.CreateTextureFileAttr(Sdf.AssetPath(spec.hdri.path))
        dome.CreateTextureFormatAttr(UsdLux.Tokens.latlong)
        dome.CreateIntensityAttr(spec.hdri.strength)
        dome.AddRotateZOp().Set(spec.hdri.rotation_deg)
    _add_camera(stage, "/World/camera", spec.camera, exposure_ev)
    for camera in spec.rig:  # every camera of the frame's rig, this view's too, by name
        _add_camera(stage, f"/World/rig/{camera.name}", camera, exposure_ev if camera.name == spec.camera.name else None)
        prim = stage.GetPrimAtPath(f"/World/rig/{camera.name}")
        prim.SetCustomDataByKey("sceneforge:camera", camera.name)
        if camera.stereo_baseline is not None:
            prim.SetCustomDataByKey("sceneforge:stereo_baseline", camera.stereo_baseline)
    return stage


def _add_mesh(stage: Usd.Stage, name: str, vertices: np.ndarray, faces: np.ndarray, pose,
              material: AssetMaterial) -> UsdGeom.Mesh:
    """A mesh prim at ``pose`` (one prim, so that importers name the object after it), with its
    UsdPreviewSurface bound."""
    mesh = UsdGeom.Mesh.Define(stage, f"/World/{name}")
    _set_pose(mesh, np.asarray(pose))
    faces = np.asarray(faces, dtype=np.int32)
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(np.asarray(vertices, dtype=np.float32)))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), faces.shape[1], dtype=np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.ravel()))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # the polygons as rendered, not a limit surface
    mesh.CreateExtentAttr(UsdGeom.Boundable.ComputeExtentFromPlugins(mesh, Usd.TimeCode.Default()))
    UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(_material(stage, f"/World/Looks/{name}", material))
    return mesh


def _main_material(own: tuple[AssetMaterial, ...], face_materials: np.ndarray, change: MaterialSpec) -> AssetMaterial:
    """The asset's material covering most faces, with the scene's changes applied (the .usda
    carries one plain material per object: no textures or vertex colours)."""
    base = own[int(np.bincount(np.asarray(face_materials, dtype=int), minlength=len(own)).argmax())]
    return AssetMaterial(
        base_color=base.base_color if change.base_color is None else tuple(change.base_color),
        roughness=base.roughness if change.roughness is None else change.roughness,
        metallic=base.metallic if change.metallic is None else change.metallic,
    )


def _material(stage: Usd.Stage, path: str, spec: AssetMaterial) -> UsdShade.Material:
    material = UsdShade.Material.Define(stage, path)
    shader = UsdShade.Shader.Define(stage, f"{path}/surface")
    shader.CreateIdAttr("UsdPreviewSurface")
    shader.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).Set(Gf.Vec3f(*spec.base_color))
    shader.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(spec.roughness)
    shader.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(spec.metallic)
    material.CreateSurfaceOutput().ConnectToSource(shader.ConnectableAPI(), "surface")
    return material


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
