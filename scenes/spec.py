"""SceneSpec: a pure, JSON-serialisable description of one scene, everything a renderer needs.

Matrices are row-major nested lists. Poses use the OpenCV camera convention
(+X right, +Y down, +Z forward); the world is right-handed with +Z up, in metres.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

SPEC_FORMAT = "sceneforge.scenespec/1"

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
    ``texture`` (an image file) replaces them too, tinted by ``base_color`` when both are set.
    Surfaces without UVs get the texture box-projected, one copy per ``texture_size`` metres.
    """

    base_color: Vector3 | None = None
    roughness: float | None = None
    metallic: float | None = None
    specular: float | None = None
    texture: str | None = None
    texture_size: float = 1.0


class ObjectSpec(_Spec):
    instance_id: int
    category_id: int
    category: str
    asset: AssetRef
    world_from_object: Matrix4
    material: MaterialSpec


class PropSpec(_Spec):
    """A mesh that is drawn (and occludes) but is never labeled: a distractor or a support's part."""

    name: str  # the distractor's category or the support's name
    asset: AssetRef
    world_from_object: Matrix4
    material: MaterialSpec


class CameraSpec(_Spec):
    K: Matrix3
    world_from_camera: Matrix4
    width: int
    height: int
    clip_start: float
    clip_end: float
    fstop: float | None = None  # depth of field when set
    focus_distance: float | None = None  # metres along the optical axis
    exposure_s: float = 0.0  # motion blur when > 0: the camera moves at ``velocity`` (m/s) meanwhile
    velocity: Vector3 = (0.0, 0.0, 0.0)


class LightSpec(_Spec):
    type: Literal["sun", "point", "spot", "area"]
    energy: float
    color: Vector3
    world_from_light: Matrix4  # the light shines along its local -Z (Blender's convention)
    size: float
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
    """Cycles settings of one frame (see the recipe's ``render`` section for their meaning)."""

    samples: int
    adaptive_threshold: float
    denoise: bool
    albedo: bool
    max_bounces: int
    diffuse_bounces: int
    glossy_bounces: int
    transmission_bounces: int
    transparent_bounces: int
    cycles_seed: int


class SceneSpec(_Spec):
    """One frame of one scene, regenerable alone from (recipe, index).

    Frames of the same scene (``scene_index``) share everything but the camera and the noise.
    """

    format: Literal["sceneforge.scenespec/1"] = SPEC_FORMAT
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

    def to_json(self) -> str:
        """Canonical JSON text (the same scene always gives the same bytes)."""
        return self.model_dump_json()

    def content_key(self) -> str:
        """Identity of the scene without the camera: equal keys can reuse one built scene."""
        content = self.model_dump(mode="json", exclude={"index", "camera", "render"})
        content["render"] = self.render.model_dump(mode="json", exclude={"cycles_seed"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
