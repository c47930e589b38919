"""SceneSpec: a pure, JSON-serialisable description of one scene, everything a renderer needs.

Renderer-neutral: one world frame (right-handed, +Z up, metres) and one local-axes convention
for every posed entity, the OpenCV camera's (+X right, +Y down, +Z forward: cameras look and
lights shine along +Z); see ``sceneforge.floor.axes``. Matrices are row-major nested lists.
Angles are in degrees, lengths in metres, colours linear RGB, light power in watts (a sun's in
W/m2 of irradiance).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

SPEC_FORMAT = "sceneforge.scenespec/5"
# Format 1 posed lights in Blender's axes (shining along -Z) and named the noise seed cycles_seed;
# format 2 had no sequences; format 3 had one ideal pinhole camera per frame (no rig, lens,
# exposure, sensors) and no keypoints; format 4 had no PBR randomisation, transparency or behind
# pass: their fields' defaults read it unchanged.
_FORMAT_1 = "sceneforge.scenespec/1"
_FORMAT_2 = "sceneforge.scenespec/2"
_FORMAT_3 = "sceneforge.scenespec/3"
_FORMAT_4 = "sceneforge.scenespec/4"

Vector3 = tuple[float, float, float]
Matrix3 = tuple[Vector3, Vector3, Vector3]
Matrix4 = tuple[
    tuple[float, float, float, float],
    tuple[float, float, float, float],
    tuple[float, float, float, float],
    tuple[float, float, float, float],
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetRef(_Spec):
    """A mesh asset by content: a built-in primitive and its dimensions (metres), or an asset file
    and its load options; ``hash`` covers all of it (for a file: its bytes, not its path)."""

    primitive: str | None = None
    params: dict[str, float | Vector3] = {}
    path: str | None = None  # absolute path of an asset file
    variants: dict[str, str] = {}  # USD variant selections on the default prim
    up_axis: Literal["Y", "Z"] | None = None  # None: the file's own (USD metadata; +Y otherwise)
    scale: float = 1.0
    size: float | None = None  # longest side in metres, replacing scale
    hash: str

    @classmethod
    def primitive_asset(cls, primitive: str, params: dict[str, float | Vector3]) -> AssetRef:
        """The reference of a primitive; equal hashes mean equal meshes."""
        text = json.dumps({"primitive": primitive, "params": params}, sort_keys=True)
        return cls(primitive=primitive, params=params, hash=hashlib.sha256(text.encode()).hexdigest()[:16])


class MaterialSpec(_Spec):
    """Changes to an asset's own materials; None keeps the asset's value.

    ``base_color`` (linear RGB) replaces the asset's colour, texture and vertex colours;
    ``texture`` (an image file, or a texture set folder: all its maps) replaces them too, tinted by
    ``base_color`` when both are set.
    Surfaces without UVs get the texture box-projected, one copy per ``texture_size`` metres.
    """

    base_color: Vector3 | None = None
    roughness: float | None = None
    metallic: float | None = None
    specular: float | None = None
    texture: str | None = None
    texture_size: float = 1.0
    # Material randomisation (docs/materials.md): roughness multiplied (then clamped to 0..1),
    # base colour's hue turned by degrees.
    roughness_scale: float | None = None
    hue_shift_deg: float | None = None
    # Transparency (scenes/transparency.py; docs/formats.md, "Glass and cut-outs"):
    alpha: float | None = None  # multiplies the opacity image's R or the base texture's alpha
    alpha_mode: Literal["OPAQUE", "MASK", "BLEND"] | None = None
    alpha_cutoff: float | None = None  # MASK: opaque where alpha >= cutoff
    opacity_texture: str | None = None  # absolute path of an image whose R is the opacity (box-projected without UVs)
    transmission: float | None = None  # 0 opaque .. 1 glass
    ior: float | None = None


class ObjectSpec(_Spec):
    instance_id: int
    category_id: int
    category: str
    asset: AssetRef
    world_from_object: Matrix4
    material: MaterialSpec
    # Named points in the object's own frame (metres), in its category's keypoint order.
    keypoints: dict[str, Vector3] = {}


class PropSpec(_Spec):
    """A mesh that is drawn (and occludes) but is never labeled: a distractor or a support's part."""

    name: str  # the distractor's category or the support's name
    asset: AssetRef
    world_from_object: Matrix4
    material: MaterialSpec


class SensorSpec(_Spec):
    """The image sensor of one view, drawn values (docs/cameras.md, "Sensor model"), applied to the
    linear render in this order: blur, vignetting, chromatic aberration, shot and read noise; then
    the tone curve to 8 bits, then JPEG. Zero (or None) turns an effect off."""

    full_well: float | None  # electrons collected at white (linear 1.0) at gain 1; None: no noise at all
    read_noise: float  # electrons RMS, added before the gain
    gain: float  # analog gain (ISO over base ISO): white then collects full_well / gain electrons
    blur_sigma_px: float  # Gaussian optical blur, standard deviation in pixels
    vignetting: float  # 0..1: weight of the cos^4 law of the pixel's ray angle (1 = the full law)
    chromatic_aberration_px: float  # lateral CA: red moves outwards, blue inwards by this at the farthest corner
    jpeg_quality: int | None  # JPEG encode/decode of the 8-bit image at this quality (1..100); None: none
    seed: int  # seed of this frame's noise realisation


class DepthSensorSpec(_Spec):
    """A depth sensor's model of one view, drawn values (docs/cameras.md, "Depth sensor"): holes
    (value 0) at depth discontinuities, on dark surfaces, at grazing incidence, on metallic
    objects and outside the range; noise of standard deviation ``noise * z^2``; quantisation
    in disparity steps ``fx * baseline_m / z``."""

    min_m: float  # nearest and farthest depth measured; outside: a hole
    max_m: float
    noise: float  # 1/m: standard deviation of the depth noise is noise * z^2
    baseline_m: float  # projector-camera (or stereo) baseline of the disparity quantisation
    disparity_step_px: float | None  # disparity quantum in pixels; None: no quantisation
    edge_threshold_px: float  # a disparity jump between 4-neighbours larger than this (pixels) is a discontinuity
    edge_band_px: int  # holes within this many pixels of a discontinuity (0: none)
    dark_threshold: float  # holes where the clean image's linear luminance is below this (0: none)
    grazing_deg: float | None  # holes where the view ray meets the surface more than this off its normal
    specular_metallic: float | None  # holes on labeled objects whose drawn metallic is at least this
    seed: int  # seed of this frame's noise realisation


class LensSpec(_Spec):
    """A lens distortion in OpenCV's models and coefficient order (scenes/camera.py, docs/formats.md).

    ``brown_conrady``: (k1, k2, p1, p2, k3) of ``cv2.projectPoints``; ``fisheye``: (k1, k2, k3, k4)
    of ``cv2.fisheye.projectPoints`` (Kannala-Brandt, equidistant at k = 0).
    """

    model: Literal["brown_conrady", "fisheye"]
    coefficients: tuple[float, ...]

    @model_validator(mode="after")
    def _count(self) -> LensSpec:
        expected = LENS_COEFFICIENTS[self.model]
        if len(self.coefficients) != len(expected):
            raise ValueError(f"a {self.model} lens has {len(expected)} coefficients ({', '.join(expected)}), "
                             f"got {len(self.coefficients)}")
        return self


# The coefficient names of each lens model, in OpenCV's order.
LENS_COEFFICIENTS = {"brown_conrady": ("k1", "k2", "p1", "p2", "k3"), "fisheye": ("k1", "k2", "k3", "k4")}


class ExposureSpec(_Spec):
    """How the linear render becomes the 8-bit image: scaled by ``2 ** ev``, then a view transform.

    With ``auto`` the EV is chosen from the linear image itself (``render/develop.py``): the
    brightest EV in [``min_ev``, ``max_ev``] whose image has at most ``target`` of its pixels
    clipped (``auto="clipped"``), or the EV whose image has the mean luminance ``target``
    (``auto="mean"``, Rec. 709 weights on the 8-bit values / 255); ``ev`` is then unused.
    """

    ev: float = 0.0  # stops: linear values times 2 ** ev
    view_transform: Literal["standard", "filmic", "agx"] = "standard"  # Blender's views of the same names
    auto: Literal["clipped", "mean"] | None = None
    target: float = 0.01  # clipped-pixel fraction, or mean luminance in (0, 1)
    min_ev: float = -10.0
    max_ev: float = 10.0


class CameraSpec(_Spec):
    """One camera of a frame: a plain recipe's single camera (``name`` ""), or one of a rig's."""

    K: Matrix3  # of the (distorted) image: the lens maps normalised coordinates, K maps them to pixels
    world_from_camera: Matrix4
    width: int
    height: int
    clip_start: float
    clip_end: float
    fstop: float | None = None  # depth of field when set
    focus_distance: float | None = None  # metres along the optical axis
    exposure_s: float = 0.0  # motion blur when > 0: the camera moves at ``velocity`` (m/s) meanwhile
    velocity: Vector3 = (0.0, 0.0, 0.0)
    sensor: SensorSpec | None = None  # None: the ideal image (rgb is the clean render)
    depth_sensor: DepthSensorSpec | None = None  # None: no depth_sensor pass
    name: str = ""  # the rig camera's name ("" for a plain recipe's one camera); files are NNNNNN_NAME.*
    stereo_baseline: float | None = None  # metres to the stereo partner (rectified pair); disparity = fx * B / depth
    lens: LensSpec | None = None  # None: an ideal pinhole
    exposure: ExposureSpec = ExposureSpec()  # the image's brightness and tone (not the shutter time above)


class LightSpec(_Spec):
    type: Literal["sun", "point", "spot", "area"]
    energy: float  # watts (point, spot, area) or W/m2 of irradiance (sun)
    color: Vector3  # linear RGB
    world_from_light: Matrix4  # OpenCV axes: the light shines along its local +Z
    size: float  # side of an area light, metres
    spot_size_deg: float = 45.0  # full cone angle of spot lights
    spot_blend: float = 0.15


class HdriSpec(_Spec):
    """An equirectangular environment map lighting the scene and showing behind it."""

    path: str  # absolute
    rotation_deg: float  # about world +Z
    strength: float


class GroundSpec(_Spec):
    size: float
    material: MaterialSpec


class RenderSpec(_Spec):
    """Path-tracing settings of one frame, in any path tracer's terms (the render stage maps them
    to its renderer; docs/recipes.md, ``render``)."""

    samples: int  # paths per pixel (the most, with adaptive sampling)
    adaptive_threshold: float  # stop sampling a pixel below this noise level; 0 = always all samples
    denoise: bool  # denoise the colour image (label passes are never denoised)
    albedo: bool  # also produce the base-colour pass
    max_bounces: int  # path length limit, and the limits per kind of scattering event below
    diffuse_bounces: int
    glossy_bounces: int
    transmission_bounces: int
    transparent_bounces: int
    noise_seed: int  # seed of the sampling pattern: the image noise of this frame
    behind: bool = False  # also the depth and instance of what glass and blended surfaces hide


class MotionState(_Spec):
    """Where everything that moves is at one instant of a sequence."""

    time_s: float
    world_from_camera: Matrix4
    objects: list[Matrix4]  # world_from_object of the spec's objects, in their order
    props: list[Matrix4]  # the same of its props


class SequenceSpec(_Spec):
    """A frame's place in its sequence, and the neighbouring frames' poses (for flow and motion blur)."""

    frame: int  # 0-based position in the sequence
    frames: int
    fps: float
    time_s: float  # frame / fps
    previous: MotionState | None  # the frame before (None on the first)
    next: MotionState | None  # the frame after (None on the last)
    flow: bool = True  # label the frame with optical flow


class SceneSpec(_Spec):
    """One frame of one scene, regenerable alone from (recipe, index).

    Frames of the same scene (``scene_index``) share everything but the camera and the noise, and
    in a sequence (``sequence``) the poses of what moves.
    """

    format: Literal["sceneforge.scenespec/5"] = SPEC_FORMAT
    index: int
    scene_index: int
    seed: int  # the scene's seed
    camera: CameraSpec
    objects: list[ObjectSpec]
    props: list[PropSpec] = []
    lights: list[LightSpec]
    ground: GroundSpec | None
    background_color: Vector3
    background_strength: float
    hdri: HdriSpec | None = None  # replaces the background colour
    background_image: str | None = None  # absolute path; shown behind the scene, not lighting it
    render: RenderSpec
    sequence: SequenceSpec | None = None  # None: a still
    rig: list[CameraSpec] = []  # a rig's view: every camera of the frame (this one too), in rig order

    def to_json(self) -> str:
        """Canonical JSON text (the same scene always gives the same bytes)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> SceneSpec:
        """A spec from its JSON text, of this format or an older one (converted; see ``_FORMAT_1``).

        Any other format is refused with a ValueError naming it, never misread.
        """
        data = json.loads(text)
        found = data.get("format") if isinstance(data, dict) else None
        if found == _FORMAT_1:
            data = _upgrade_format_1(data)
        elif found in (_FORMAT_2, _FORMAT_3, _FORMAT_4):
            data = {**data, "format": SPEC_FORMAT}
        elif found != SPEC_FORMAT:
            raise ValueError(f"unsupported SceneSpec format {found!r}; this SceneForge reads {SPEC_FORMAT!r}, "
                             f"{_FORMAT_4!r}, {_FORMAT_3!r}, {_FORMAT_2!r} and {_FORMAT_1!r}")
        return cls.model_validate(data)

    def content_key(self) -> str:
        """Identity of the scene without the camera and the poses of what moves in a sequence:
        equal keys can reuse one built scene."""
        moving = {"objects": {"__all__": {"world_from_object"}}, "props": {"__all__": {"world_from_object"}}}
        exclude = {"index": True, "camera": True, "rig": True, "render": True, "sequence": True,
                   **(moving if self.sequence else {})}
        content = self.model_dump(mode="json", exclude=exclude)
        content["render"] = self.render.model_dump(mode="json", exclude={"noise_seed"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _upgrade_format_1(data: dict) -> dict:
    """Format 1 -> 2: lights turned from OpenGL to OpenCV local axes, ``cycles_seed`` renamed."""
    render = dict(data["render"])
    render["noise_seed"] = render.pop("cycles_seed")
    lights = [{**light, "world_from_light": [[row[0], -row[1], -row[2], row[3]] for row in light["world_from_light"]]}
              for light in data["lights"]]
    return {**data, "format": SPEC_FORMAT, "render": render, "lights": lights}
