"""Recipe schema and loading: YAML with line/column positions, validated into typed models.

Every problem is reported as ``FILE:LINE:COL: field.path: what was expected``; the YAML is read
with a safe loader, explicit tags are refused, and file size and node count are bounded.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from sceneforge.floor.devices import DEVICE_HELP, parse_device
from sceneforge.floor.errors import MAX_LISTED, SourcePosition, UserError
from sceneforge.floor.images import checked_image_size

from .assets import (
    MAX_LIBRARY_FILES,
    PRIMITIVE_KEYPOINTS,
    USD_SUFFIXES,
    AssetError,
    Keypoints,
    check_asset_file,
    library_files,
    texture_candidates,
)
from .distributions import (
    Elevation,
    Integer,
    NonNegative,
    Number,
    PathChoice,
    Positive,
    Rotation,
    Source,
    UnitInterval,
    Vector,
    bounds,
    check_within,
    source_options,
)
from .library import LibraryFile, folder_categories, read_manifest
from .camera import lens_problem
from .spec import LENS_COEFFICIENTS, CameraSpec, LensSpec, Matrix3

MAX_RECIPE_BYTES = 256 << 10  # ruamel.yaml (pure Python) parses about 50 KB/s here: validate stays within seconds
MAX_VARIANT_COMBINATIONS = 1000
MAX_RECIPE_NODES = 100_000
MAX_RECIPE_DEPTH = 32  # nested mappings and lists; the deepest real recipe field is 7 levels down
MAX_INSTANCES = 32_767  # Blender's object pass index is a 15-bit integer.
MAX_LIGHTS = 1000
# The range of the Planckian-locus approximation used for colour temperatures (Kang et al. 2002).
KELVIN_RANGE = (1667.0, 25000.0)
HDRI_SUFFIXES = (".hdr", ".exr")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
Options = tuple[tuple[float, tuple[str, ...]], ...]  # a source's options: (weight, the files each stands for)


class Section(BaseModel):
    """A recipe mapping: unknown keys are errors with a "did you mean" hint."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f", did you mean '{close[0]}'?" if close else f"; expected one of: {', '.join(allowed)}"
                    raise PydanticCustomError("unknown_key", f"unknown key '{key}'{hint}", {"key": key})
        return data


Vec3 = tuple[Number, Number, Number]
UnitVec3 = tuple[UnitInterval, UnitInterval, UnitInterval]


class HSV(Section):
    """A colour drawn in HSV (each component in [0, 1]; the hue wraps around); converted to linear RGB."""

    hsv: tuple[Number, UnitInterval, UnitInterval] = Field(description="[hue, saturation, value], each 0..1")


Color = Annotated[
    Union[Annotated[UnitVec3, Tag("rgb")], Annotated[HSV, Tag("hsv")]],
    Discriminator(
        lambda v: "hsv" if isinstance(v, (Mapping, HSV)) else "rgb",
        custom_error_type="color",
        custom_error_message="expected [r, g, b] (linear, 0..1) or {hsv: [h, s, v]}",
    ),
]


class Material(Section):
    """Changes to an asset's own material; a field left out keeps the asset's value."""

    color: Color | None = Field(None, description="base colour; replaces the asset's colour, texture and vertex colours")
    roughness: UnitInterval | None = Field(None, description="0..1")
    metallic: UnitInterval | None = Field(None, description="0..1")
    specular: UnitInterval | None = Field(None, description="0..1, Blender's Specular IOR Level (0.5: IOR 1.5)")
    texture_folder: Source | None = Field(
        None,
        description="textures (relative to the recipe): a folder of images (each object takes one at random as base "
                    "colour), an image, a texture set (*_Color, *_Roughness, *_NormalGL, ... maps, all used together), "
                    "a folder of texture sets (each object takes one), or {choice: [any of these, ...], weights: [...]} "
                    "(one option per scene; docs/materials.md)",
    )
    texture_size: float = Field(1.0, gt=0, description="metres per texture copy on surfaces without UVs")
    # Material randomisation (docs/materials.md), drawn per object per scene from stream (15, ...).
    roughness_scale: Positive | None = Field(
        None, description="multiplies the roughness (factor and map, or `roughness`), clamped to 0..1; "
                          "e.g. {uniform: [0.6, 1.4]}")
    hue_shift_deg: Number | None = Field(
        None, description="turns the hue of the base colour (factor, texture, vertex colours), degrees; "
                          "e.g. {uniform: [-30, 30]}")
    # Transparency (docs/recipes.md, "Glass and cut-outs"):
    transmission: UnitInterval | None = Field(None, description="0..1: 0 opaque, 1 glass (light passes through, refracted)")
    ior: Number | None = Field(None, description="index of refraction of glass, 1..5 (water 1.33, glass 1.5)")
    alpha: UnitInterval | None = Field(
        None, description="0..1, coverage; multiplies opacity_texture (or the base texture's alpha)")
    alpha_mode: Literal["OPAQUE", "MASK", "BLEND"] | None = Field(
        None, description="OPAQUE: alpha ignored; MASK: a hole where alpha < alpha_cutoff, opaque elsewhere; BLEND: "
                          "partly transparent. Default: MASK with opacity_texture, BLEND with alpha, else the asset's")
    alpha_cutoff: UnitInterval | None = Field(None, description="0..1, MASK: opaque where alpha >= this (asset default 0.5)")
    opacity_texture: Source | None = Field(
        None, description="opacity image(s) relative to the recipe file, their red channel the opacity (white opaque): "
                          "an image (png, jpg, tif, bmp), a folder of images (each object takes one at random) or "
                          "{choice: [any of these, ...], weights: [...]} (one option per scene); box-projected like "
                          "texture_folder images on surfaces without UVs")
    _options: Options = PrivateAttr(())  # texture_folder's options, listed by load_recipe
    _textures: tuple[str, ...] = PrivateAttr(())  # every option's textures, in order
    _opacities: Options = PrivateAttr(())  # opacity_texture's options, listed by load_recipe

    @field_validator("ior")
    @classmethod
    def _ior(cls, value: Any) -> Any:
        return None if value is None else check_within(value, 1.0, 5.0)


class Box(Section):
    primitive: Literal["box"] = Field(description="a box")
    extents: tuple[Positive, Positive, Positive] = Field((0.2, 0.2, 0.2), description="x, y, z sizes, metres")


class Sphere(Section):
    primitive: Literal["sphere"] = Field(description="a sphere")
    radius: Positive = Field(0.1, description="metres")


class Cylinder(Section):
    primitive: Literal["cylinder"] = Field(description="a cylinder")
    radius: Positive = Field(0.1, description="metres")
    height: Positive = Field(0.2, description="metres")


class Cone(Section):
    primitive: Literal["cone"] = Field(description="a cone")
    radius: Positive = Field(0.1, description="of the base, metres")
    height: Positive = Field(0.2, description="metres")


class Capsule(Section):
    primitive: Literal["capsule"] = Field(description="a capsule: a cylinder with hemispherical caps")
    radius: Positive = Field(0.05, description="metres")
    height: Positive = Field(0.2, description="total height, caps included, metres")


class Torus(Section):
    primitive: Literal["torus"] = Field(description="a torus")
    major_radius: Positive = Field(0.1, description="from the centre to the middle of the tube, metres")
    minor_radius: Positive = Field(0.03, description="of the tube, metres")


Primitive = Annotated[Union[Box, Sphere, Cylinder, Cone, Capsule, Torus], Field(discriminator="primitive")]


def primitive_size(primitive: Box | Sphere | Cylinder | Cone | Capsule | Torus,
                   value: Callable[[Any], float]) -> np.ndarray:
    """The x, y, z sizes of a primitive standing upright, each of its number fields read by
    ``value`` (such as the largest value the field's distribution can draw)."""
    p = {name: value(v) for name, v in primitive if name not in ("primitive", "extents")}
    if isinstance(primitive, Box):
        return np.array([value(v) for v in primitive.extents], dtype=float)
    if isinstance(primitive, Sphere):
        return np.full(3, 2 * p["radius"])
    if isinstance(primitive, Torus):
        outer = 2 * (p["major_radius"] + p["minor_radius"])
        return np.array([outer, outer, 2 * p["minor_radius"]])
    height = max(p["height"], 2 * p["radius"]) if isinstance(primitive, Capsule) else p["height"]
    return np.array([2 * p["radius"], 2 * p["radius"], height])


class LibraryAsset(Section):
    """A random asset of one category of the recipe's ``assets`` library, drawn per object."""

    library: str = Field(min_length=1, max_length=128, description="a category of the recipe's `assets` library")


# The tags are not recipe keys, so error positions skip them (see _describe).
AssetChoice = Annotated[
    Union[Annotated[Primitive, Tag("built-in")], Annotated[LibraryAsset, Tag("from library")]],
    Discriminator(
        lambda v: "from library" if isinstance(v, LibraryAsset) or (isinstance(v, Mapping) and "library" in v)
        else "built-in"
    ),
]


KeypointName = Annotated[str, Field(min_length=1, max_length=64)]


class AssetEntry(Section):
    """Asset files of the library, with their categories and how to load them."""

    category: str | None = Field(
        None, min_length=1, max_length=128,
        description="library category the files belong to (with a manifest: of rows without one)",
    )
    path: Source | None = Field(
        None,
        description="a file, a folder (its asset files), a glob such as 'cars/**/*.usdz', or {choice: [...], "
                    "weights: [...]} of them (one option per scene), relative to the recipe",
    )
    category_from: Literal["folder"] | None = Field(
        None, description="folder: path is a folder of category folders, each file's category is its folder's name",
    )
    manifest: str | None = Field(
        None, min_length=1,
        description="instead of path: a CSV (with a header row) or JSON list naming file, category and optionally "
                    "scale, size, up_axis of each asset; files relative to the manifest",
    )
    variants: dict[str, Union[str, Annotated[list[str], Field(min_length=1)]]] = Field(
        {}, description="USD variant selections on the default prim; a list: each choice is one more asset",
    )
    up_axis: Literal["Y", "Z"] | None = Field(None, description="the files' up axis; default: USD's upAxis, else Y")
    scale: float = Field(1.0, gt=0, description="multiplies the size in metres (after USD's metersPerUnit)")
    size: float | None = Field(None, gt=0, description="scale each asset so that its longest side is this many metres")
    keypoints: dict[KeypointName, tuple[float, float, float]] | None = Field(
        None, description="named 3D keypoints {name: [x, y, z]} in metres in the asset's own frame after scale/size "
                          "(+Z up, origin at the centre of its base); replace those a USD file declares",
    )
    skeleton: list[tuple[KeypointName, KeypointName]] = Field(
        [], description="pairs of keypoint names joined by a skeleton edge: [[name_a, name_b], ...]",
    )
    _options: tuple[tuple[float, tuple[LibraryFile, ...]], ...] = PrivateAttr(())  # listed by load_recipe

    @model_validator(mode="after")
    def _bounded(self) -> AssetEntry:
        if self.size is not None and "scale" in self.model_fields_set:
            raise ValueError("give scale or size, not both")
        if (self.path is None) == (self.manifest is None):
            raise ValueError("give path or manifest (one of them)")
        if self.category_from is not None and self.path is None:
            raise ValueError("category_from goes with path (a manifest names each row's category)")
        if self.category_from is not None and self.category is not None:
            raise ValueError("give category or category_from, not both")
        if self.path is not None and self.category_from is None and self.category is None:
            raise ValueError("give the files' category (or category_from: folder)")
        if math.prod(len(v) if isinstance(v, list) else 1 for v in self.variants.values()) > MAX_VARIANT_COMBINATIONS:
            raise ValueError(f"more than {MAX_VARIANT_COMBINATIONS} variant combinations")
        return self

    def variant_choices(self) -> list[dict[str, str]]:
        """Every combination of the listed variants, in order."""
        names = sorted(self.variants)
        options = [v if isinstance(v, list) else [v] for v in (self.variants[n] for n in names)]
        return [dict(zip(names, combo)) for combo in itertools.product(*options)]


class ObjectGroup(Section):
    """Objects of one category: how many, which shape, which material, what they stand on."""

    category: str = Field(min_length=1, max_length=128, description="class name of these objects in the labels")
    count: Integer = Field(1, description="objects per scene, >= 0 (an integer or {randint: [lo, hi]})")
    asset: AssetChoice = Field(description="a built-in primitive ({primitive: box, ...}) or {library: category}")
    material: Material = Field(Material(), description="changes to the asset's material")
    place_on: str = Field(
        "ground",
        description="what the objects stand on: ground, the name of a support, or the category of an earlier group "
                    "(formerly `on`, which YAML 1.1 loaders such as PyYAML read as the boolean true)",
    )
    distractor: bool = Field(False, description="drawn (and occluding) but never labeled")
    motion: Motion | None = Field(None, description="how the objects move in a sequence (needs `sequence`)")
    board: int | None = Field(
        None, ge=0, le=49, description="with place_on a shelf: the board the objects stand on (0: the lowest); "
                                       "default: any board",
    )
    arrange: ArrangeChoice | None = Field(
        None, description="rows: line the objects up in rows facing the surface's front (`rows` or a section); "
                          "default: scattered at random",
    )

    @field_validator("arrange")
    @classmethod
    def _arrange_section(cls, arrange: Any) -> Any:
        return Arrange(type="rows") if arrange == "rows" else arrange

    @field_validator("count")
    @classmethod
    def _not_negative(cls, count: Any) -> Any:
        smallest = count if isinstance(count, int) else min(getattr(count, "randint", None) or count.choice)
        if smallest < 0:
            raise ValueError("counts must be >= 0")
        return count


class Arrange(Section):
    """Objects lined up in rows on their surface, each turned to face its front (a shelf's open
    side, the -Y side of a bin or of the ground's area): a row fills from side to side (centred),
    the next row stands behind it, then the next board (lowest first) or layer.

    An object's own front is its -Y side (glTF's forward +Z, loaded +Z up). Spacing, jitter and
    facing are drawn per scene from their own stream; positions never overlap by jitter (each
    slot is widened by it)."""

    type: Literal["rows"] = Field(description="rows (and columns) facing the front")
    spacing: NonNegative = Field(0.01, description="gap between neighbours in a row, edge to edge, metres "
                                                   "(at least placement.min_gap)")
    row_spacing: NonNegative | None = Field(None, description="gap between rows, front to back, metres; "
                                                              "default: spacing")
    rows: int | None = Field(None, ge=1, le=1000, description="rows per board (or layer) at most; default: as many as fit")
    layers: int = Field(1, ge=1, le=100, description="layers stacked on each other: each object of a layer stands on "
                                                     "the one below it (boxes on a pallet)")
    facing: Number = Field(0.0, description="degrees about +Z from facing the front (180: the back), drawn per object")
    jitter: NonNegative = Field(0.0, description="largest position offset along and across a row, metres, per object")
    yaw_jitter_deg: NonNegative = Field(0.0, description="largest turn off the facing, degrees, per object")


ArrangeChoice = Annotated[
    Union[Annotated[Literal["rows"], Tag("shorthand")], Annotated[Arrange, Tag("section")]],
    Discriminator(lambda v: "shorthand" if isinstance(v, str) else "section"),
]


class Motion(Section):
    """How the objects of a group move during a sequence: a velocity (and a spin), or a keyed path.

    With ``sequence.physics`` the velocities are where the simulation starts (objects are thrown);
    without it the motion is exactly this: straight at constant speed, spinning about the centre
    of the object's box, or smoothly through the path's points.
    """

    velocity: Vector = Field((0.0, 0.0, 0.0), description="m/s, world frame")
    angular_velocity_deg: Vector = Field((0.0, 0.0, 0.0), description="deg/s about the world axes through the object's centre")
    path: list[tuple[float, float, float]] | None = Field(
        None, min_length=2, max_length=1000,
        description="offsets (metres, world) from the placed position, passed through at evenly spaced times "
                    "from the first to the last frame; replaces velocity",
    )

    @model_validator(mode="after")
    def _one_motion(self) -> Motion:
        if self.path is not None and "velocity" in self.model_fields_set:
            raise ValueError("give velocity or path, not both")
        return self


class Physics(Section):
    """Drop the placed objects and simulate them to rest; the resting poses are the scene."""

    drop_height: float = Field(0.0, ge=0, le=10, description="objects start up to this high above their surface")
    seconds: float = Field(3.0, gt=0, le=60, description="simulated time limit")
    attempts: int = Field(3, ge=1, le=100, description="drops of a scene before giving up on it")


class Placement(Section):
    """Objects stand on their surface without touching each other (real mesh collision)."""

    area: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (1.0, 1.0), description="the patch of ground objects are placed on (metres, centred on the origin)"
    )
    rotation: Rotation = Field("yaw", description="yaw: upright, turned about +Z; so3: any orientation; {yaw_deg: number}")
    min_gap: float = Field(0.01, ge=0, description="smallest distance between two objects' surfaces")
    max_tries: int = Field(200, ge=1, le=100_000, description="attempts to place one object")
    physics: Physics | None = Field(None, description="settle the objects with a rigid-body simulation")


class _Support(Section):
    name: str = Field(min_length=1, max_length=128, description="what object groups name in `place_on`")
    position: tuple[Number, Number] = Field((0.0, 0.0), description="centre of its footprint on the ground (x, y)")
    yaw_deg: Number = Field(0.0, description="turn about +Z, degrees")
    thickness: float = Field(0.02, gt=0, description="of its boards, metres")
    material: Material = Field(Material(color=(0.6, 0.45, 0.3), roughness=0.7), description="its material")


class Bin(_Support):
    """An open box, a floor and four walls: objects placed on it stand on the floor inside."""

    type: Literal["bin"] = Field(description="an open box")
    size: Vec3 = Field((0.4, 0.3, 0.15), description="outside width (x), depth (y) and height (z), metres")


class Shelf(_Support):
    """``boards`` evenly spaced boards (the lowest on the ground, the top one at the full height)
    between two side panels, in front of a back panel: objects placed on it stand on any board, or
    on the one ``objects[].board`` names. Its front (the open side) faces its own -Y."""

    type: Literal["shelf"] = Field(description="a shelf")
    size: Vec3 = Field((0.8, 0.3, 1.0), description="outside width (x), depth (y) and height (z), metres")
    boards: int = Field(3, ge=1, le=50, description="number of boards, 1..50")
    back: bool = Field(True, description="a back panel on the +Y side, the full height (false: open at the back)")
    sides: bool = Field(True, description="side panels at both ends, the full height (false: the boards hang on "
                                          "the back panel)")

    @model_validator(mode="after")
    def _held_up(self) -> Shelf:
        if not (self.back or self.sides):
            raise ValueError("a shelf needs its sides or its back: nothing would hold the boards up")
        return self

    def board_bottoms(self, height: float) -> list[float]:
        """The heights of the boards' undersides, lowest first, for a shelf ``height`` tall (a
        single board is at the top)."""
        if self.boards == 1:
            return [height - self.thickness]
        step = (height - self.thickness) / (self.boards - 1)
        return [k * step for k in range(self.boards)]


Support = Annotated[Union[Bin, Shelf], Field(discriminator="type")]


class Walls(Section):
    """Four walls standing on the ground's edges, facing inwards: drawn, never labeled."""

    height: float = Field(2.5, gt=0, le=100, description="metres")
    thickness: float = Field(0.05, gt=0, le=10, description="metres, outside the ground's square")
    material: Material = Field(Material(color=(0.8, 0.8, 0.8), roughness=0.9), description="the walls' material")


class Ground(Section):
    size: float = Field(4.0, gt=0, description="side of the ground's square, metres")
    material: Material = Field(Material(color=(0.5, 0.5, 0.5), roughness=0.8), description="the ground's material")
    walls: Walls | None = Field(None, description="four walls on the ground's edges (a room)")


class Light(Section):
    """``count`` lights of one type, each aimed at ``target`` from ``position`` or from
    (elevation, azimuth, distance) around the target."""

    type: Literal["sun", "point", "spot", "area"] = Field(description="sun, point, spot or area light")
    count: Integer = Field(1, description="how many such lights, each drawn on its own")
    energy: NonNegative = Field(description="W/m2 for sun, W for point, spot and area lights")
    color: Color | None = Field(None, description="white unless kelvin is given")
    kelvin: Number | None = Field(None, description="colour temperature instead of color, 1667..25000 K")
    position: Vector | None = Field(None, description="where the light is; replaces elevation/azimuth/distance")
    target: Vector = Field((0.0, 0.0, 0.0), description="the point the light is aimed at")
    elevation_deg: Elevation = Field(60.0, description="degrees above the target's horizontal plane, -90..90")
    azimuth_deg: Number = Field(0.0, description="degrees about +Z around the target, from +X towards +Y")
    distance: Positive = Field(3.0, description="metres from the target")
    size: float = Field(0.5, gt=0, description="area lights: side length in metres")
    spot_size_deg: Number = Field(45.0, description="spot lights: full cone angle, 1..180 degrees")
    spot_blend: Number = Field(0.15, description="spot lights: softness of the cone edge, 0..1")

    @field_validator("count")
    @classmethod
    def _count(cls, count: Any) -> Any:
        return check_within(count, 0, MAX_LIGHTS)

    @field_validator("kelvin")
    @classmethod
    def _kelvin(cls, kelvin: Any) -> Any:
        return None if kelvin is None else check_within(kelvin, *KELVIN_RANGE)

    @field_validator("spot_size_deg")
    @classmethod
    def _spot_size(cls, size: Any) -> Any:
        return check_within(size, 1.0, 180.0)

    @field_validator("spot_blend")
    @classmethod
    def _spot_blend(cls, blend: Any) -> Any:
        return check_within(blend, 0.0, 1.0)

    @model_validator(mode="after")
    def _one_colour(self) -> Light:
        if self.kelvin is not None and self.color is not None:
            raise ValueError("give color or kelvin, not both")
        return self


def resolve_source(value: str | PathChoice, base: Path, candidates: Callable[[Path], tuple[str, ...]]) -> Options:
    """The options of a source field (a file, a folder, or a weighted choice of them), relative
    paths taken from ``base``, each resolved by ``candidates`` to the files it stands for.
    Raises AssetError naming the option."""
    return tuple((weight, candidates(base / Path(option).expanduser())) for option, weight in source_options(value))


def image_candidates(suffixes: tuple[str, ...]) -> Callable[[Path], tuple[str, ...]]:
    """What a path of an image field stands for: the file itself, or a folder's files with these
    suffixes; each checked to declare a size within the image limits (absolute paths, sorted)."""
    kinds = " or ".join(suffixes)

    def candidates(path: Path) -> tuple[str, ...]:
        path = path.resolve()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise AssetError(f"{path}: holds no {kinds} files")
            if len(files) > MAX_LIBRARY_FILES:
                raise AssetError(f"{path}: holds {len(files)} files, more than {MAX_LIBRARY_FILES}")
        elif path.suffix.lower() not in suffixes:
            what = "no such file or folder" if not path.exists() else f"expected a {kinds} file or a folder of them"
            raise AssetError(f"{what}: {path.name!r}" if path.exists() else f"{what}: {path}")
        elif not path.is_file():
            raise AssetError(f"file not found: {path}")
        else:
            files = [path]
        for file in files:
            try:
                checked_image_size(file)
            except (OSError, ValueError) as exc:
                raise AssetError(f"{file}: {exc}") from None
        return tuple(map(str, files))

    return candidates


class Background(Section):
    """The world: a colour or an HDRI that lights the scene and shows behind it, or a backdrop image
    that shows behind the scene while the world still lights it."""

    color: Color | None = Field(None, description="[0.05, 0.05, 0.05] unless hdri is given")
    strength: Number = Field(1.0, description="multiplies the world's light (colour or HDRI), >= 0")
    hdri: Source | None = Field(
        None, description="equirectangular .hdr/.exr: a file, a folder of them or {choice: [...], weights: [...]}, "
                          "relative to the recipe file; one drawn per scene",
    )
    hdri_level: Positive | None = Field(
        None, description="scale each HDRI so that its measured level (cosine-weighted mean luminance of its upper "
                          "hemisphere) is this, before strength; default: the map as it is",
    )
    rotation_deg: Number = Field(0.0, description="HDRI turn about +Z (only with hdri)")
    image: Source | None = Field(
        None, description="backdrop image (png, jpg, tif, bmp): a file, a folder of them or {choice: [...]}, relative "
                          "to the recipe file; one drawn per scene",
    )
    _hdris: Options = PrivateAttr(())  # listed by load_recipe
    _images: Options = PrivateAttr(())

    @model_validator(mode="after")
    def _one_world(self) -> Background:
        if self.hdri is not None and self.color is not None:
            raise ValueError("give color or hdri, not both")
        if self.hdri_level is not None and self.hdri is None:
            raise ValueError("hdri_level needs an hdri")
        return self


Dimension = Annotated[int, Field(ge=1, le=16384)]


class Intrinsics(Section):
    """Pinhole intrinsics in pixels, OpenCV convention (integer coordinates at pixel centres)."""

    fx: float = Field(gt=0, description="focal length in pixels, x")
    fy: float = Field(gt=0, description="focal length in pixels, y")
    cx: float = Field(description="principal point x, pixels")
    cy: float = Field(description="principal point y, pixels")


class Visibility(Section):
    """A frame is kept only if at least ``min_objects`` objects are each at least ``min_fraction``
    visible (visible / unoccluded pixels, estimated on a coarse ray grid before rendering)."""

    min_objects: int = Field(1, ge=1, le=MAX_INSTANCES, description="objects that must be visible enough")
    min_fraction: float = Field(0.5, ge=0, le=1, description="visible share of each such object, 0..1")
    max_tries: int = Field(20, ge=1, le=1000, description="camera poses drawn before giving up")


class DepthOfField(Section):
    """A thin lens; the aperture is that of a 36 mm wide sensor with the camera's field of view."""

    fstop: Number = Field(description="f-number, > 0")
    focus: Literal["target"] | Number = Field("target", description="target: the look-at point; or metres")

    @field_validator("fstop")
    @classmethod
    def _fstop(cls, fstop: Any) -> Any:
        return check_within(fstop, 1e-3, 1e6)

    @field_validator("focus")
    @classmethod
    def _focus(cls, focus: Any) -> Any:
        return focus if focus == "target" else check_within(focus, 1e-3, 1e6)


class MotionBlur(Section):
    """The camera moves at ``velocity`` during the exposure, centred on the frame's pose."""

    exposure_s: float = Field(1 / 60, gt=0, le=10, description="shutter open time in seconds")
    velocity: Vector = Field((0.0, 0.0, 0.0), description="camera velocity in m/s, world frame")


class Shake(Section):
    """Handheld shake: smooth seeded wobble of the camera's orientation and position."""

    amplitude_deg: NonNegative = Field(0.5, description="largest turn off the trajectory's orientation")
    amplitude_m: NonNegative = Field(0.0, description="largest offset from the trajectory's position")
    frequency_hz: Positive = Field(2.0, description="main frequency of the wobble")


class Trajectory(Section):
    """How the camera moves during a sequence, starting from the pose drawn as for a still.

    orbit: around the look-at target at ``degrees_per_second`` of azimuth (and elevation drift);
    line: straight at ``velocity`` (a dolly or a flyover); spline: smoothly through ``keys`` poses,
    each drawn like the first, reached at evenly spaced times. The camera looks at the start's
    target, or follows (looks at) an object, or with ``look: fixed`` keeps its start orientation.
    """

    type: Literal["orbit", "line", "spline"] = Field(description="orbit, line or spline")
    degrees_per_second: Number = Field(30.0, description="orbit: azimuth speed")
    elevation_deg_per_second: Number = Field(0.0, description="orbit: elevation drift")
    velocity: Vector = Field((0.0, 0.0, 0.0), description="line: m/s, world frame")
    keys: int = Field(4, ge=2, le=100, description="spline: key poses, the first being the start pose")
    look: Literal["target", "fixed"] = Field("target", description="target: at the start's look-at point; fixed: "
                                                                     "keep the start orientation")
    follow: str | None = Field(None, min_length=1, description="category whose first object the camera looks at")
    shake: Shake | None = Field(None, description="handheld shake on top of the trajectory")

    @model_validator(mode="after")
    def _follow_or_fixed(self) -> Trajectory:
        if self.follow is not None and self.look == "fixed":
            raise ValueError("follow an object or keep a fixed orientation, not both")
        return self


def _within(value: Any, lo: float, hi: float) -> Any:
    """``check_within`` that lets None (an optional field left out) pass."""
    return None if value is None else check_within(value, lo, hi)


# The ranges of the sensor models' values (each drawn value is checked on its distribution's support).
SENSOR_RANGES = {"full_well": (1.0, 1e7), "read_noise": (0.0, 1e4), "gain": (0.01, 1000.0), "blur_sigma_px": (0.0, 50.0),
                 "vignetting": (0.0, 1.0), "chromatic_aberration_px": (-50.0, 50.0), "jpeg_quality": (1, 100)}
DEPTH_SENSOR_RANGES = {"min_m": (1e-3, 1e4), "max_m": (1e-3, 1e4), "noise": (0.0, 1.0), "dark_threshold": (0.0, 1.0),
                       "baseline_m": (1e-3, 10.0), "disparity_step_px": (1e-3, 100.0), "edge_threshold_px": (1e-3, 1e3),
                       "edge_band_px": (0, 100), "grazing_deg": (0.0, 90.0), "specular_metallic": (0.0, 1.0)}


class Sensor(Section):
    """The image sensor applied after the render (docs/cameras.md, "Sensor model"): optical blur,
    vignetting and lateral chromatic aberration on the linear image, then Poisson-Gaussian shot
    and read noise, then the tone curve to 8 bits, then JPEG. The clean image is kept as
    ``rgb_clean``. Each number is drawn per frame."""

    full_well: Number | None = Field(
        10000.0, description="electrons collected at white (linear 1.0) at gain 1, 1..1e7; null: no noise (shot or read)")
    read_noise: Number = Field(2.0, description="read noise, electrons RMS (added before the gain), 0..1e4")
    gain: Number = Field(1.0, description="analog gain (ISO over base ISO), 0.01..1000: white collects "
                                          "full_well / gain electrons, so noise variance grows with the gain")
    blur_sigma_px: Number = Field(0.0, description="optical blur: Gaussian standard deviation in pixels, 0..50")
    vignetting: Number = Field(0.0, description="0..1: weight of the cos^4 falloff of each pixel's ray angle "
                                                "(1 = the full natural vignetting of the camera's field of view)")
    chromatic_aberration_px: Number = Field(
        0.0, description="lateral chromatic aberration: red moves out and blue in by this many pixels at the "
                         "image corner farthest from the principal point (radially, proportional to the radius), "
                         "-50..50")
    jpeg_quality: Integer | None = Field(None, description="JPEG-compress the 8-bit image at this quality, 1..100; "
                                                           "null: no JPEG")

    @field_validator(*SENSOR_RANGES)
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        return _within(value, *SENSOR_RANGES[info.field_name])


class DepthSensor(Section):
    """A depth sensor's model (docs/cameras.md, "Depth sensor"), written as the ``depth_sensor``
    pass beside the exact depth: holes (0) at depth discontinuities, on dark surfaces, at grazing
    incidence, on metallic objects and outside [min_m, max_m]; noise of standard deviation
    ``noise * z^2``; quantisation in disparity (``fx * baseline_m / z``) steps. Drawn per frame."""

    min_m: Number = Field(0.2, description="nearest depth measured, metres (> 0); nearer: a hole")
    max_m: Number = Field(10.0, description="farthest depth measured, metres; farther: a hole")
    noise: Number = Field(0.0015, description="1/m, 0..1: the depth noise's standard deviation is noise * z^2 "
                                              "(0.0015: 1.5 mm at 1 m, 6 mm at 2 m)")
    baseline_m: Number = Field(0.075, description="projector-camera (stereo) baseline in metres, 0.001..10, for the "
                                                   "disparity quantisation")
    disparity_step_px: Number | None = Field(
        0.125, description="disparity quantum in pixels, 0.001..100 (0.125: 1/8-pixel subpixel matching); "
                           "null: no quantisation")
    edge_threshold_px: Number = Field(
        1.0, description="a discontinuity: neighbouring pixels whose disparities (fx * baseline_m / depth) differ by "
                         "more than this many pixels, 0.001..1000 (a plane farther than baseline_m never has one)")
    edge_band_px: Integer = Field(1, description="holes within this many pixels of a discontinuity, 0..100 "
                                                 "(1: the pixels on both sides of the jump; 0: no edge holes)")
    dark_threshold: Number = Field(0.01, description="holes where the clean image's linear luminance is below this, "
                                                     "0..1 (0: none)")
    grazing_deg: Number | None = Field(80.0, description="holes where the view ray meets the surface more than this "
                                                         "many degrees off its normal, 0..90; null: none")
    specular_metallic: Number | None = Field(
        0.9, description="holes on labeled objects whose drawn material has metallic >= this, 0..1; null: none")

    @field_validator(*DEPTH_SENSOR_RANGES)
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        return _within(value, *DEPTH_SENSOR_RANGES[info.field_name])

    @model_validator(mode="after")
    def _ordered(self) -> DepthSensor:
        if not bounds(self.min_m)[1] < bounds(self.max_m)[0]:
            raise ValueError(f"min_m (up to {bounds(self.min_m)[1]:g}) must stay below max_m (from "
                             f"{bounds(self.max_m)[0]:g})")
        return self


MIN_CAMERA_SEPARATION = 1e-3  # metres: rig cameras closer than this are "inside each other"
CameraName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64,
                                  description="file-name safe: letters, digits, _ and -")]


class RigCamera(Section):
    """One camera of a rig: a fixed pose relative to the rig (the rig's OpenCV axes: +x right,
    +y down, +z forward) and optionally its own intrinsics and resolution (default: the recipe's)."""

    name: CameraName
    position: Vec3 = Field((0.0, 0.0, 0.0), description="metres from the rig origin, rig axes")
    rotation_deg: Vec3 = Field((0.0, 0.0, 0.0), description="turns about the rig's +x, +y, +z (fixed axes, x first)")
    fov_deg: float | None = Field(None, gt=0, lt=180, description="horizontal field of view (default: the recipe's)")
    intrinsics: Intrinsics | None = Field(None, description="fx, fy, cx, cy in pixels instead of fov_deg")
    resolution: tuple[Dimension, Dimension] | None = Field(None, description="width, height (default: render.resolution)")

    @model_validator(mode="after")
    def _one_lens(self) -> RigCamera:
        if self.intrinsics is not None and self.fov_deg is not None:
            raise ValueError("give fov_deg or intrinsics, not both")
        return self


def pinhole_matrix(fov_deg: float, intrinsics: Intrinsics | None, width: int, height: int) -> Matrix3:
    """K (OpenCV convention) from intrinsics, or from a horizontal field of view centred on a
    width x height image."""
    if intrinsics is None:
        focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
        # OpenCV convention: integer pixel coordinates are pixel centres, so the centre is (W-1)/2.
        return ((focal, 0.0, (width - 1) / 2), (0.0, focal, (height - 1) / 2), (0.0, 0.0, 1.0))
    i = intrinsics
    return ((i.fx, 0.0, i.cx), (0.0, i.fy, i.cy), (0.0, 0.0, 1.0))


class Stereo(Section):
    """A rectified stereo pair (OpenCV convention): two cameras with the rig's intrinsics and
    resolution, the left at the rig origin, the right ``baseline`` metres along the left's +x."""

    baseline: Positive = Field(description="metres between the two optical centres, > 0")
    names: tuple[CameraName, CameraName] = Field(("left", "right"), description="left, right")


class Lens(Section):
    """Lens distortion in OpenCV's models and coefficient order, each coefficient a number or a
    distribution drawn once per scene: ``brown_conrady`` (k1, k2, p1, p2, k3: ``cv2.projectPoints``)
    or ``fisheye`` (k1..k4, Kannala-Brandt: ``cv2.fisheye.projectPoints``). The image is rendered as a
    wider pinhole view and warped; coefficients that fold the image are refused."""

    model: Literal["brown_conrady", "fisheye"] = Field(description="brown_conrady (k1, k2, p1, p2, k3) or fisheye (k1..k4)")
    k1: Number = Field(0.0, description="radial: r² (brown_conrady) or θ² (fisheye) term")
    k2: Number = Field(0.0, description="radial: r⁴ or θ⁴ term")
    p1: Number = Field(0.0, description="brown_conrady only: tangential")
    p2: Number = Field(0.0, description="brown_conrady only: tangential")
    k3: Number = Field(0.0, description="radial: r⁶ or θ⁶ term")
    k4: Number = Field(0.0, description="fisheye only: θ⁸ term")

    @model_validator(mode="after")
    def _model_coefficients(self) -> Lens:
        foreign = sorted(self.model_fields_set & ({"k4"} if self.model == "brown_conrady" else {"p1", "p2"}))
        if foreign:
            raise ValueError(f"a {self.model} lens has no {', '.join(foreign)}; its coefficients are "
                             f"{', '.join(LENS_COEFFICIENTS[self.model])}")
        return self

    @property
    def coefficients(self) -> tuple[Number, ...]:
        """The coefficient fields in OpenCV's order for the model."""
        return tuple(getattr(self, name) for name in LENS_COEFFICIENTS[self.model])


class AutoExposure(Section):
    """Auto-exposure: the EV is chosen from each frame's linear render (render/develop.py).

    Give ``clipped`` (the brightest EV whose image has at most this fraction of pixels with a
    channel at 255) or ``mean`` (the EV whose image has this mean Rec. 709 luminance of the 8-bit
    values / 255), searched within [min_ev, max_ev].
    """

    clipped: Number | None = Field(None, description="largest share of clipped pixels, 0..0.5")
    mean: Number | None = Field(None, description="mean luminance of the developed image, 0.01..0.99")
    min_ev: float = Field(-10.0, ge=-20, le=20, description="darkest EV the search may choose")
    max_ev: float = Field(10.0, ge=-20, le=20, description="brightest EV the search may choose")

    @field_validator("clipped")
    @classmethod
    def _clipped(cls, clipped: Any) -> Any:
        return None if clipped is None else check_within(clipped, 0.0, 0.5)

    @field_validator("mean")
    @classmethod
    def _mean(cls, mean: Any) -> Any:
        return None if mean is None else check_within(mean, 0.01, 0.99)

    @model_validator(mode="after")
    def _one_target(self) -> AutoExposure:
        if (self.clipped is None) == (self.mean is None):
            raise ValueError("give one target: clipped (a fraction of pixels) or mean (a luminance)")
        if not self.min_ev <= self.max_ev:
            raise ValueError(f"min_ev ({self.min_ev:g}) must not exceed max_ev ({self.max_ev:g})")
        return self


class Exposure(Section):
    """How the linear render becomes the 8-bit image: ``2 ** ev`` times brighter, then a view transform.

    Without ``ev`` or ``auto`` the default protects highlights: the Standard view at EV 0, darkened
    (never brightened) just enough that at most 1 % of the pixels clip. A fixed ``ev`` turns it off.
    """

    ev: Number | None = Field(None, description="exposure in stops, -20..20 (not with auto); none: 0")
    view_transform: Literal["standard", "filmic", "agx"] = Field(
        "standard", description="standard: the sRGB curve, values above 1 clip; filmic, agx: Blender's views")
    auto: AutoExposure | None = Field(AutoExposure(clipped=0.01, max_ev=0.0),
                                      description="choose the EV per frame from the render; null: use ev")

    @field_validator("ev")
    @classmethod
    def _ev(cls, ev: Any) -> Any:
        return None if ev is None else check_within(ev, -20.0, 20.0)

    @model_validator(mode="before")
    @classmethod
    def _ev_or_auto(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("ev") is not None:  # a fixed EV turns the default auto-exposure off
            if data.get("auto") is not None:
                raise ValueError("give ev or auto, not both (auto chooses the EV)")
            return {**data, "auto": None}
        return data


LookAtMode = Literal["scene_center", "random_object", "all_objects"]
LookAt = Annotated[
    Union[Annotated[LookAtMode, Tag("mode")], Annotated[Vector, Tag("point")]],
    Discriminator(lambda v: "mode" if isinstance(v, str) else "point"),
]


class Camera(Section):
    """A camera (a pinhole, or with a `lens`) on a sphere around its target, looking at it, world +Z up."""

    fov_deg: float = Field(50.0, gt=0, lt=180, description="horizontal field of view")
    intrinsics: Intrinsics | None = Field(None, description="fx, fy, cx, cy in pixels instead of fov_deg")
    look_at: LookAt = Field((0.0, 0.0, 0.0), description="a point (vector), scene_center, random_object or all_objects")
    target_jitter: Vector = Field((0.0, 0.0, 0.0), description="offset added to the look-at point")
    distance: Positive = Field(2.0, description="metres from the target (not used by look_at: all_objects)")
    fit_margin: Positive = Field(1.1, description="look_at: all_objects only: the distance that just fits them, times this")
    elevation_deg: Elevation = Field(45.0, description="degrees above the target's horizontal plane, -90..90")
    azimuth_deg: Number = Field(0.0, description="degrees about +Z around the target, from +X towards +Y")
    roll_deg: Number = Field(0.0, description="turn about the optical axis")
    clip_start: float = Field(0.01, gt=0, description="nearest distance rendered, metres")
    clip_end: float = Field(100.0, gt=0, description="farthest distance rendered, metres")
    frames_per_scene: int = Field(1, ge=1, le=100_000, description="camera poses per scene")
    visibility: Visibility | None = Field(None, description="redraw the camera pose until enough objects are visible")
    dof: DepthOfField | None = Field(None, description="depth of field; none = everything sharp")
    motion_blur: MotionBlur | None = Field(None, description="camera motion during the exposure")
    trajectory: Trajectory | None = Field(None, description="how the camera moves in a sequence (needs `sequence`)")
    sensor: Sensor | None = Field(None, description="image sensor model (noise, blur, vignetting, chromatic "
                                                    "aberration, JPEG); none = the ideal image")
    depth_sensor: DepthSensor | None = Field(None, description="depth sensor model: also write the depth_sensor pass")
    rig: list[RigCamera] | None = Field(None, min_length=1, description="named cameras posed relative to the rig; "
                                                                        "the rig is posed like a single camera")
    stereo: Stereo | None = Field(None, description="shorthand for a rectified two-camera rig")
    lens: Lens | None = Field(None, description="lens distortion; none = an ideal pinhole")
    exposure: Exposure = Field(Exposure(), description="exposure (EV, auto-exposure) and view transform")

    @model_validator(mode="after")
    def _one_lens(self) -> Camera:
        if self.intrinsics is not None and "fov_deg" in self.model_fields_set:
            raise ValueError("give fov_deg or intrinsics, not both")
        if not self.clip_start < self.clip_end:
            raise ValueError(f"clip_start ({self.clip_start:g}) must be smaller than clip_end ({self.clip_end:g})")
        return self


class Sequence(Section):
    """Each scene is a video: ``frames`` frames at ``fps``, camera and objects moving."""

    frames: int = Field(ge=2, le=10_000, description="frames per sequence")
    fps: float = Field(24.0, gt=0, le=1000, description="frames per second")
    physics: bool = Field(False, description="simulate the objects over time (dropped from placement.physics."
                                             "drop_height, thrown with their motion's velocities)")
    flow: bool = Field(True, description="write forward and backward optical flow")
    point_tracks: int = Field(256, ge=0, le=100_000, description="query points tracked through each sequence (0: none)")


class RenderSettings(Section):
    """Path-tracing settings (the render stage maps them to Cycles); bounce defaults are Blender's (glossy and transmission are not 0)."""

    resolution: tuple[Dimension, Dimension] = Field((320, 240), description="[width, height] in pixels, 1..16384")
    samples: int = Field(16, ge=1, le=65536, description="path-tracing samples per pixel")
    adaptive_threshold: float = Field(0.01, ge=0, le=1, description="noise level to stop at; 0 = off")
    denoise: bool = Field(False, description="run Cycles' denoiser on the image")
    albedo: bool = Field(False, description="also write the albedo (base colour) pass")
    max_bounces: int = Field(12, ge=0, le=1024, description="most bounces of a light path in all")
    diffuse_bounces: int = Field(4, ge=0, le=1024, description="most diffuse bounces")
    glossy_bounces: int = Field(4, ge=0, le=1024, description="most glossy bounces")
    transmission_bounces: int = Field(12, ge=0, le=1024, description="most transmission (glass) bounces")
    transparent_bounces: int = Field(8, ge=0, le=1024, description="most transparent (alpha) bounces")
    behind: bool = Field(
        False, description="also write depth_behind and instance_behind: the labels with glass (transmission > 0) "
                           "and blended (alpha_mode BLEND) bodies left out, from a 1-sample second view layer")


class RefineSettings(Section):
    """Refine every frame with a trained refiner before ``sceneforge run`` exports (docs/refiner.md)."""

    checkpoint: str = Field(min_length=1, max_length=4096,
                            description="checkpoint file or training-run folder; relative paths start at the recipe's folder")
    batch: int = Field(8, ge=1, le=4096, description="frames per refiner batch")
    device: str = Field("auto", description=DEVICE_HELP)
    min_edge_agreement: float = Field(0.6, ge=0, description="reject a refined frame whose edge agreement at the instance boundaries, refined / render, is lower (docs/refiner.md, Acceptance)")
    min_structure_ssim: float = Field(0.6, ge=0, le=1, description="reject a refined frame whose structure SSIM against the render is lower")
    max_colour_drift: float = Field(60.0, ge=0, description="reject a refined frame where an object's mean colour strays further (8-bit levels) from what the frame's colour change predicts")
    max_size_drift: float = Field(0.2, ge=0, le=1, description="reject a refined frame where an object's extent found by colour loses more IoU with its exact mask than this, render to refined")

    def acceptance(self) -> dict[str, float]:
        """The acceptance thresholds, the keyword arguments of ``refine.acceptance.Acceptance``."""
        return {name: getattr(self, name) for name in ("min_edge_agreement", "min_structure_ssim", "max_colour_drift", "max_size_drift")}

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        try:
            return str(parse_device(device, "refine.device"))
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("refine.device: ")) from None


_Source = tuple[Path, Any, set[tuple[str, ...]]]  # recipe file, its YAML tree, the overridden paths


class Recipe(Section):
    """A whole scene recipe: what to place, how to light and film it, how many frames."""

    seed: int = Field(0, ge=0, lt=2**63, description="seed of every random draw: same recipe and seed, same dataset")
    count: int = Field(10, ge=1, le=10_000_000, description="number of frames")
    render: RenderSettings = Field(RenderSettings(), description="image size, samples and other path-tracing settings")
    camera: Camera = Field(Camera(), description="the camera (or rig) and how its pose is drawn")
    assets: list[AssetEntry] = Field([], description="the asset library: files by category, for objects[].asset.library")
    objects: list[ObjectGroup] = Field([], description="groups of objects of one category each")
    supports: list[Support] = Field([], description="bins and shelves that objects can stand on")
    placement: Placement = Field(Placement(), description="where and how objects are placed")
    ground: Ground | None = Field(Ground(), description="the ground square; null: none drawn")
    lights: list[Light] = Field([Light(type="sun", energy=3.0)], description="light groups; default: one sun")
    background: Background = Field(Background(), description="the world: a colour, an HDRI or a backdrop image")
    sequence: Sequence | None = Field(None, description="optional: make each scene a video sequence")
    refine: RefineSettings | None = Field(None, description="optional: refine the RGB before export (sceneforge run)")
    _source: _Source | None = PrivateAttr(None)
    _base_dir: Path = PrivateAttr(Path("."))  # asset and texture paths are relative to this folder

    @property
    def categories(self) -> list[str]:
        """Labeled category names in order of first appearance; category id = position + 1."""
        return list(dict.fromkeys(group.category for group in self.objects if not group.distractor))

    @property
    def frames_per_scene(self) -> int:
        """Frames that show one scene: a sequence's frames, or the camera's poses of a still scene."""
        return self.camera.frames_per_scene if self.sequence is None else self.sequence.frames

    def source(self, *loc: str | int) -> SourcePosition:
        """Where a field of a loaded recipe is (file, line, column, field path), for errors found later."""
        if self._source is None:
            return SourcePosition("recipe", field=_field_path(loc))
        return replace(_locate(*self._source, loc), field=_field_path(loc))

    def where(self, *loc: str | int) -> str:
        """``FILE:LINE:COL: field.path`` of a field of a loaded recipe (see ``source``)."""
        return _field_path(loc) if self._source is None else str(self.source(*loc))

    def intrinsic_matrix(self) -> Matrix3:
        """The 3x3 camera matrix K (OpenCV convention) of the recipe's camera and resolution."""
        return pinhole_matrix(self.camera.fov_deg, self.camera.intrinsics, *self.render.resolution)

    def lens_camera(self, lens: LensSpec | None) -> CameraSpec:
        """The recipe's camera (K, resolution, clipping) with ``lens``, at the world origin: what
        ``lens_problem`` checks and what sampling poses."""
        width, height = self.render.resolution
        identity = tuple(tuple(float(row == column) for column in range(4)) for row in range(4))
        return CameraSpec(K=self.intrinsic_matrix(), world_from_camera=identity, width=width, height=height,
                          clip_start=self.camera.clip_start, clip_end=self.camera.clip_end, lens=lens)

    def lens_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) when a lens of constant coefficients folds the image (drawn
        ones are checked per scene when sampled)."""
        lens = self.camera.lens
        if lens is None or not all(isinstance(c, (int, float)) for c in lens.coefficients):
            return []
        problem = lens_problem(self.lens_camera(LensSpec(model=lens.model, coefficients=tuple(map(float, lens.coefficients)))))
        return [] if problem is None else [(("camera", "lens"), problem)]

    def limit_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) when the groups can draw more objects per scene than the limit,
        found before any placement work."""
        most = [int(bounds(group.count)[1]) for group in self.objects]
        if sum(most) <= MAX_INSTANCES:
            return []
        largest = max(range(len(most)), key=most.__getitem__)
        return [(("objects", largest, "count"), f"the object groups can draw up to {sum(most)} objects in a "
                                                f"scene, more than the {MAX_INSTANCES} a scene can hold")]

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of every ``place_on`` and name that refers to nothing or clashes."""
        problems = []
        support_names = [support.name for support in self.supports]
        labeled = {group.category for group in self.objects if not group.distractor}
        for i, support in enumerate(self.supports):
            if support.name == "ground" or support.name in support_names[:i]:
                problems.append((("supports", i, "name"), f"'{support.name}' is taken; give each support its own name"))
            elif any(support.name == group.category for group in self.objects):
                problems.append((("supports", i, "name"), f"'{support.name}' is also an object category"))
        for i, group in enumerate(self.objects):
            earlier = [other.category for other in self.objects[:i]]
            if group.distractor and group.category in labeled:
                problems.append((("objects", i, "category"), f"'{group.category}' is a labeled category; distractors need their own name"))
            if group.place_on != "ground" and group.place_on not in support_names and group.place_on not in earlier:
                choices = ", ".join(dict.fromkeys(["ground", *support_names, *earlier]))
                problems.append((("objects", i, "place_on"), f"'{group.place_on}' is not ground, a support or an earlier group's category; expected one of: {choices}"))
        return problems + self._arrangement_problems() + self._motion_problems() + self._rig_problems()

    def _arrangement_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of ``board`` and ``arrange`` fields that do not fit their surface."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        supports = {support.name: support for support in self.supports}
        for i, group in enumerate(self.objects):
            support = supports.get(group.place_on)
            if group.board is not None:
                if not isinstance(support, Shelf):
                    problems.append((("objects", i, "board"), f"'{group.place_on}' is not a shelf; `board` chooses "
                                                              "a shelf's board"))
                elif group.board >= support.boards:
                    problems.append((("objects", i, "board"), f"shelf '{support.name}' has {support.boards} board(s), "
                                                              f"numbered 0 (the lowest) to {support.boards - 1}"))
            arrange = group.arrange
            if arrange is None:
                continue
            if support is None and group.place_on != "ground":
                problems.append((("objects", i, "arrange"), f"rows stand on a surface (ground or a support), not on "
                                                            f"the '{group.place_on}' objects"))
            smallest = min(bounds(arrange.spacing)[0],
                           bounds(arrange.spacing if arrange.row_spacing is None else arrange.row_spacing)[0])
            if smallest < self.placement.min_gap:
                problems.append((("objects", i, "arrange"), f"spacing can be {smallest:g} m, less than "
                                                            f"placement.min_gap ({self.placement.min_gap:g} m)"))
            if arrange.layers > 1 and isinstance(support, Shelf) and group.board is None and support.boards > 1:
                problems.append((("objects", i, "arrange", "layers"), "layers stack up to the board above: choose "
                                                                      "the board (board: N)"))
        return problems

    def fit_problems(self, libraries: bool = False) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of object groups that can draw an object taller than the clear
        height above a shelf board they may stand on (the gap up to the next board's underside),
        checked with the largest size the group can draw and the smallest shelf. Groups drawing
        from an asset library only with ``libraries`` (it parses every file of the library, which
        loading a recipe never does; ``validate --check-assets`` does)."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        supports = {support.name: (i, support) for i, support in enumerate(self.supports)}
        for i, group in enumerate(self.objects):
            j, shelf = supports.get(group.place_on, (None, None))
            if not isinstance(shelf, Shelf) or shelf.boards == 1 or (group.board is not None and group.board == shelf.boards - 1):
                continue  # nothing above the top board
            if isinstance(group.asset, LibraryAsset) and not libraries:
                continue
            tall, how = self._tallest(group)
            layers = group.arrange.layers if group.arrange is not None else 1
            shortest = bounds(shelf.size[2])[0]
            bottoms = shelf.board_bottoms(shortest)
            gap = bottoms[1] - bottoms[0] - shelf.thickness
            if tall * layers <= gap:
                continue
            board = group.board if group.board is not None else 0
            stack = f"{layers} layers of " if layers > 1 else ""
            some = "" if group.board is not None else f" (every board but the top one, {shelf.boards - 1}, has this gap)"
            smallest = f" (its smallest: size z {shortest:g} m)" if bounds(shelf.size[2])[1] > shortest else ""
            problems.append((("objects", i), (
                f"{stack}'{group.category}' objects {how.format(f'{tall * layers:.4g} m')}; the gap above board {board} of "
                f"shelf '{shelf.name}' (supports[{j}]){smallest}, from its top at {bottoms[board] + shelf.thickness:.4g} m "
                f"to board {board + 1}'s underside at {bottoms[board + 1]:.4g} m, is {gap:.4g} m{some}; choose the top "
                f"board (board: {shelf.boards - 1}), smaller objects, a taller shelf or fewer boards")))
        return problems

    def _tallest(self, group: ObjectGroup) -> tuple[float, str]:
        """The largest height a group's object can have as it is placed, and how to say so: upright
        (yaw rotations, rows) the largest z size; turned at random (so3) its smallest side, the
        least height it can stand at."""
        if isinstance(group.asset, LibraryAsset):
            sizes = [file.model()[1].mesh.extents for entry in self.assets for _, files in entry._options
                     for file in files if file.category == group.asset.library]
            how = "are up to {} tall (the tallest of their library's assets)"
        else:
            sizes = [primitive_size(group.asset, lambda v: bounds(v)[1])]
            fixed = all(bounds(v)[0] == bounds(v)[1] for name, value in group.asset if name != "primitive"
                        for v in (value if isinstance(value, tuple) else (value,)))
            how = "are {} tall" if fixed else "can be {} tall (the largest size their distributions can draw)"
        if not sizes:
            return 0.0, how
        if group.arrange is None and self.placement.rotation == "so3":
            return max(float(np.min(size)) for size in sizes), how + ", even lying on their smallest side (rotation: so3)"
        return max(float(size[2]) for size in sizes), how

    def _rig_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of rig cameras that clash: both forms, names, positions, lenses."""
        camera = self.camera
        if camera.stereo is not None:
            if camera.rig is not None:
                return [(("camera", "stereo"), "give rig or stereo, not both")]
            if camera.lens is not None:
                return [(("camera", "lens"), "a stereo pair is rectified, without lens distortion; use camera.rig "
                                             "for distorted cameras")]
            left, right = camera.stereo.names
            return [(("camera", "stereo", "names"), f"both cameras are named '{left}'")] if left == right else []
        problems: list[tuple[tuple[str | int, ...], str]] = []
        rig = camera.rig or []
        for i, view in enumerate(rig):
            if view.name in [other.name for other in rig[:i]]:
                problems.append((("camera", "rig", i, "name"), f"'{view.name}' is taken; give each camera its own name"))
            own = view.resolution is not None and tuple(view.resolution) != tuple(self.render.resolution)
            if own and view.intrinsics is None and view.fov_deg is None and camera.intrinsics is not None:
                problems.append((("camera", "rig", i, "resolution"), "camera.intrinsics are in pixels of "
                                 "render.resolution; give this camera its own fov_deg or intrinsics"))
            if camera.lens is not None and (own or view.intrinsics is not None or view.fov_deg is not None):
                problems.append((("camera", "rig", i), "with camera.lens every rig camera shares the recipe's "
                                 "intrinsics and resolution (the lens is checked for those)"))
        fixed = {i: [float(bounds(v)[0]) for v in view.position] for i, view in enumerate(rig)
                 if all(bounds(v)[0] == bounds(v)[1] for v in view.position)}
        if (pair := cameras_too_close({i: tuple(p) for i, p in fixed.items()})) is not None:
            problems.append((("camera", "rig", pair[1], "position"), cameras_inside_message(rig, pair)))
        return problems

    @property
    def camera_names(self) -> list[str]:
        """The names of a frame's views in rig order: [""] for a single camera."""
        camera = self.camera
        if camera.stereo is not None:
            return list(camera.stereo.names)
        return [view.name for view in camera.rig] if camera.rig else [""]

    @property
    def stereo_pairs(self) -> list[tuple[str, str]]:
        """(left, right) names of the recipe's stereo pairs."""
        return [tuple(self.camera.stereo.names)] if self.camera.stereo is not None else []  # type: ignore[list-item]

    def _motion_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of motion fields that do not fit together."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        moving = [(("camera", "trajectory"), self.camera.trajectory)]
        moving += [(("objects", i, "motion"), group.motion) for i, group in enumerate(self.objects)]
        if self.sequence is None:
            return [(loc, "moves only in a sequence; add a `sequence:` section with frames and fps")
                    for loc, value in moving if value is not None]
        if self.camera.frames_per_scene != 1:
            problems.append((("camera", "frames_per_scene"), "a sequence's frames are sequence.frames; leave "
                                                             "camera.frames_per_scene out"))
        blur = self.camera.motion_blur
        if blur is not None and "velocity" in blur.model_fields_set:
            problems.append((("camera", "motion_blur", "velocity"), "in a sequence the blur follows the real motion; "
                                                                    "leave the velocity out"))
        if blur is not None and blur.exposure_s > 1 / self.sequence.fps:
            problems.append((("camera", "motion_blur", "exposure_s"), f"{blur.exposure_s:g} s is longer than a frame "
                                                                      f"(1 / fps = {1 / self.sequence.fps:g} s)"))
        trajectory = self.camera.trajectory
        if trajectory is not None and trajectory.follow is not None:
            categories = [group.category for group in self.objects]
            if trajectory.follow not in categories:
                problems.append((("camera", "trajectory", "follow"),
                                 f"no object group has the category '{trajectory.follow}'; expected one of: "
                                 f"{', '.join(dict.fromkeys(categories)) or '(no objects)'}"))
        if self.sequence.physics:
            problems += [(("objects", i, "motion", "path"), "a keyed path cannot be simulated; with sequence.physics "
                                                             "give a velocity")
                         for i, group in enumerate(self.objects) if group.motion is not None and group.motion.path is not None]
        return problems

    @property
    def library(self) -> dict[str, tuple[LibraryFile, ...]]:
        """The listed asset files of each library category, every option of every entry (empty
        before ``load_recipe``); a scene draws from its entries' drawn options only."""
        library: dict[str, list[LibraryFile]] = {}
        for entry in self.assets:
            for _, files in entry._options:
                for file in files:
                    library.setdefault(file.category, []).append(file)
        return {category: tuple(files) for category, files in library.items()}

    def _group_keypoint_lists(self) -> list[tuple[tuple, str, tuple[str, ...], tuple[tuple[str, str], ...]]]:
        """(field location, labeled category, keypoint names, skeleton) of every kind of asset each
        labeled group can draw: its primitive's canonical keypoints, or each library asset's."""
        found = []
        for i, group in enumerate(self.objects):
            if group.distractor:
                continue
            if isinstance(group.asset, LibraryAsset):
                for j, entry in enumerate(self.assets):
                    field = "keypoints" if entry.keypoints is not None else "manifest" if entry.manifest else "path"
                    found += [(("assets", j, field), group.category, names, skeleton)
                              for names, skeleton in dict.fromkeys(
                                  (file.keypoints.names, file.keypoints.skeleton) for _, files in entry._options
                                  for file in files if file.category == group.asset.library)]
            else:
                found.append((("objects", i, "asset", "primitive"), group.category,
                              *PRIMITIVE_KEYPOINTS[group.asset.primitive]))
        return found

    def category_keypoints(self) -> dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
        """Keypoint names and skeleton (name pairs) of each labeled category, in ``categories`` order
        (one list per category: ``keypoint_problems`` refuses a category mixing lists)."""
        first: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {}
        for _, category, names, skeleton in self._group_keypoint_lists():
            first.setdefault(category, (names, skeleton))
        return {category: first.get(category, ((), ())) for category in self.categories}

    def keypoint_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of skeletons naming unknown keypoints and of categories whose
        assets have different keypoint lists (call after ``load_recipe`` has read the assets)."""
        problems = []
        for i, entry in enumerate(self.assets):
            for names in dict.fromkeys(file.keypoints.names for _, files in entry._options for file in files):
                for j, pair in enumerate(entry.skeleton):
                    if unknown := [name for name in pair if name not in names]:
                        known = ", ".join(names) or "none"
                        problems.append((("assets", i, "skeleton", j), f"no keypoint {unknown[0]!r}; the asset's "
                                                                       f"keypoints are: {known}"))
        first: dict[str, tuple[tuple, tuple[str, ...], tuple]] = {}
        for loc, category, names, skeleton in self._group_keypoint_lists():
            where, known, known_skeleton = first.setdefault(category, (loc, names, skeleton))
            if (names, skeleton) != (known, known_skeleton):
                what = "keypoints" if names != known else "skeleton"
                problems.append((loc, f"category '{category}' mixes assets with different {what}: "
                                      f"{list(names if what == 'keypoints' else skeleton)} here, "
                                      f"{list(known if what == 'keypoints' else known_skeleton)} at {_field_path(where)}; "
                                      "a category's objects must share one keypoint list"))
                first[category] = (loc, names, skeleton)  # report each change once
        return list(dict.fromkeys(problems))

    def asset_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of every listed library file that cannot be parsed (each is
        parsed now: ``validate --check-assets``; the mesh cache keeps what it converts), else of the
        library groups whose objects can be too tall for their shelf board (``fit_problems``)."""
        problems = []
        for i, entry in enumerate(self.assets):
            for _, files in entry._options:
                for file in files:
                    try:
                        file.model()
                    except AssetError as exc:
                        problems.append((("assets", i, file.field), str(exc)))
        return problems or self.fit_problems(libraries=True)

    def materials(self) -> list[tuple[tuple, Material]]:
        """(field location, material) of every material of the recipe."""
        found = [(("objects", i, "material"), group.material) for i, group in enumerate(self.objects)]
        found += [(("supports", i, "material"), support.material) for i, support in enumerate(self.supports)]
        if self.ground is not None:
            found.append((("ground", "material"), self.ground.material))
            if self.ground.walls is not None:
                found.append((("ground", "walls", "material"), self.ground.walls.material))
        return found

    def content_hash(self) -> str:
        """Hash of everything that decides the rendered frames (frame count and refiner excluded),
        asset files included."""
        content = self.model_dump(mode="json", exclude={"count", "refine"})
        try:  # the files' bytes, read now (listing the library read none)
            content["asset_hashes"] = [[file.content_hash for _, files in entry._options for file in files]
                                       for entry in self.assets]
        except AssetError as exc:
            raise UserError(str(exc)) from None
        content["world_files"] = [[Path(f).name for _, files in options for f in files]
                                  for options in (self.background._hdris, self.background._images)]
        content["textures"] = [[Path(t).name for t in m._textures] for _, m in self.materials()]
        content["opacities"] = [[Path(f).name for _, files in m._opacities for f in files] for _, m in self.materials()]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def cameras_too_close(positions: Mapping[int, tuple[float, float, float]]) -> tuple[int, int] | None:
    """The first two rig cameras (by index) whose centres are closer than MIN_CAMERA_SEPARATION."""
    items = sorted(positions.items())
    for k, (j, b) in enumerate(items):
        for i, a in items[:k]:
            if math.dist(a, b) < MIN_CAMERA_SEPARATION:
                return i, j
    return None


def cameras_inside_message(rig: list[RigCamera], pair: tuple[int, int]) -> str:
    """What is wrong when ``cameras_too_close`` found ``pair``."""
    first, second = (rig[k].name for k in pair)
    return (f"cameras '{first}' and '{second}' are inside each other (centres less than "
            f"{MIN_CAMERA_SEPARATION * 1000:g} mm apart); move one")


def recipe_json_schema() -> dict:
    """JSON Schema (2020-12) of recipes, for editors (yaml-language-server) and other tools."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **Recipe.model_json_schema(),
        "title": "SceneForge recipe",
    }


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"render.samples=32"`` -> ``("render.samples", 32)``; the value is read as YAML (safely)."""
    path, equals, value = text.partition("=")
    if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*", path.strip()):
        raise UserError(f"--set: expected FIELD.PATH=VALUE such as render.samples=32, got {text!r}")
    if len(value) > MAX_RECIPE_BYTES:
        raise UserError(f"--set {path}: the value is larger than {MAX_RECIPE_BYTES} bytes")
    try:
        parsed = YAML(typ="safe", pure=True).load(value)
    except YAMLError as exc:
        raise UserError(f"--set {path}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"--set {path}: the value is nested too deeply") from None
    if not _all_finite(parsed):
        raise UserError(f"--set {path}: {value.strip()!r} holds a number that is not finite (nan or inf)")
    return path.strip(), parsed


def _all_finite(value: Any) -> bool:
    """Whether every float inside a plain value (lists, mappings) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    return True


DICT_SOURCE = "dict"  # where the errors of a recipe given as Python data are: "dict: objects[0].count: ..."


def load_recipe(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read, check and validate a recipe file; ``overrides`` maps dotted field paths to values.

    Asset files and texture folders are resolved relative to the recipe's folder and read now,
    so a missing or damaged file is reported at the recipe line naming it. Raises UserError
    listing every problem as ``FILE:LINE:COL: field.path: message``.
    """
    path = Path(path)
    return _validated(_read_yaml(path), path, path.parent, overrides or {}, set())


def recipe_from_dict(data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                     base_dir: str | Path = ".") -> Recipe:
    """A recipe from Python data shaped as the YAML would be (``{"count": 4, "objects": [...]}``),
    checked as ``load_recipe`` checks a file; files are resolved relative to ``base_dir``.
    Problems are UserErrors naming ``dict: field.path``."""
    if not isinstance(data, Mapping):
        raise UserError(f"{DICT_SOURCE}: the recipe must be a mapping of fields (seed, objects, ...), "
                        f"got {type(data).__name__}")
    return _validated(copy.deepcopy(dict(data)), Path(DICT_SOURCE), Path(base_dir), overrides or {}, set())


def override_recipe(recipe: Recipe, overrides: Mapping[str, Any]) -> Recipe:
    """A new recipe: ``recipe`` with dotted field paths set (``{"camera.fov_deg": 60}``, as
    ``--set``), checked again; errors in the overridden fields name the command line."""
    if recipe._source is None:  # built from typed objects: its fields as the YAML would give them
        path, tree, overridden = Path(DICT_SOURCE), recipe.model_dump(mode="json", exclude_unset=True), set()
    else:
        path, tree, overridden = recipe._source
    return _validated(copy.deepcopy(tree), path, recipe._base_dir, overrides, set(overridden))


def _validated(tree: Any, path: Path, base: Path, overrides: Mapping[str, Any],
               overridden: set[tuple[str, ...]]) -> Recipe:
    """The checked recipe of a YAML tree (or plain data) read from ``path``, with ``overrides`` set."""
    overridden |= _apply_overrides(tree, overrides)
    _rename_deprecated_on(tree, path)
    try:
        recipe = Recipe.model_validate(_plain(tree, path), context={"recipe_dir": base})
    except ValidationError as exc:
        errors = exc.errors()
        raise UserError.listing([_describe(path, tree, error, overridden) for error in errors[:MAX_LISTED]],
                                total=len(errors)) from None
    recipe._source = (path, tree, overridden)
    recipe._base_dir = base
    if problems := recipe.limit_problems() or _load_files(recipe, base) + recipe.reference_problems() + recipe.lens_problems():
        raise UserError.listing([(recipe.source(*loc), message) for loc, message in problems])
    if problems := recipe.keypoint_problems() + recipe.fit_problems():
        raise UserError.listing([(recipe.source(*loc), message) for loc, message in problems])
    return recipe


class RecipeDeprecationWarning(FutureWarning):
    """A recipe uses a key that still works but will go (shown to users by default)."""


def _rename_deprecated_on(tree: Any, path: Path) -> None:
    """``objects[].on`` (read by YAML 1.1 loaders as the boolean true) becomes ``place_on`` in the
    tree, at the same position; one warning per recipe names where. In plain data the key True
    (what PyYAML made of ``on``) counts as ``on``."""
    groups = tree.get("objects") if isinstance(tree, Mapping) else None
    found = []
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        olds = [key for key in group if key == "on" or key is True] if isinstance(group, MutableMapping) else []
        if not olds:
            continue
        old = olds[0]
        found.append(replace(_locate(path, tree, set(), ["objects", i, old], at_key=True), field=f"objects[{i}].on"))
        if "place_on" in group:
            raise UserError("give place_on or the deprecated on, not both", source=found[-1])
        position = list(group).index(old)
        value = group.pop(old)
        if isinstance(group, CommentedMap):
            group.insert(position, "place_on", value)
            if old in group.lc.data:
                group.lc.data["place_on"] = group.lc.data.pop(old)
        else:
            group["place_on"] = value
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        warnings.warn(f"{found[0]}{more}: the key `on:` is deprecated (YAML 1.1 loaders such as PyYAML read it as "
                      "the boolean true); rename it to `place_on:`", RecipeDeprecationWarning, stacklevel=2)


def _load_files(recipe: Recipe, base: Path) -> list[tuple[tuple, str]]:
    """List the asset library, the texture folders and the world's files into the recipe's private
    fields (checking each file cheaply, parsing none but USD files whose keypoints are needed);
    returns the problems as (field location, message)."""
    problems = []
    unlisted = False  # an entry whose categories are unknown, as its files could not be listed
    for i, entry in enumerate(recipe.assets):
        field = "manifest" if entry.manifest is not None else "path"
        try:
            entry._options = _entry_options(entry, i, base)
        except AssetError as exc:
            problems.append((("assets", i, field), str(exc)))
            unlisted |= entry.category is None
    declared = list(dict.fromkeys([*recipe.library, *(e.category for e in recipe.assets if e.category is not None)]))
    for i, group in enumerate(recipe.objects):
        if isinstance(group.asset, LibraryAsset) and group.asset.library not in declared and not unlisted:
            known = ", ".join(repr(c) for c in declared) or "none (add an assets section)"
            message = f"no asset category {group.asset.library!r}; the assets section has: {known}"
            problems.append((("objects", i, "asset", "library"), message))
    for loc, material in recipe.materials():
        if material.texture_folder is not None:
            try:
                material._options = resolve_source(material.texture_folder, base, texture_candidates)
            except AssetError as exc:
                problems.append(((*loc, "texture_folder"), str(exc)))
            material._textures = tuple(t for _, textures in material._options for t in textures)
        if material.opacity_texture is not None:
            try:
                material._opacities = resolve_source(material.opacity_texture, base, image_candidates(IMAGE_SUFFIXES))
            except AssetError as exc:
                problems.append(((*loc, "opacity_texture"), str(exc)))
    background = recipe.background
    for name, suffixes in (("hdri", HDRI_SUFFIXES), ("image", IMAGE_SUFFIXES)):
        if (value := getattr(background, name)) is not None:
            try:
                setattr(background, f"_{name}s", resolve_source(value, base, image_candidates(suffixes)))
            except AssetError as exc:
                problems.append((("background", name), str(exc)))
    return problems


def _entry_options(entry: AssetEntry, index: int, base: Path) -> tuple[tuple[float, tuple[LibraryFile, ...]], ...]:
    """The files of a library entry, per option of its path (one option for a manifest), listed
    and checked cheaply (a USD file is parsed only for keypoints the entry does not declare)."""
    if entry.manifest is not None:
        rows = read_manifest((base / entry.manifest).resolve())
        missing = [row.where for row in rows if row.category is None and entry.category is None]
        if missing:
            raise AssetError(f"{missing[0]}: no category (give a category column, or the entry's category)")
        listed = [(row.file, row.category or entry.category, row.where,
                   {"up_axis": row.up_axis or entry.up_axis,
                    **({"scale": entry.scale, "size": entry.size} if row.scale is None and row.size is None
                       else {"scale": row.scale or 1.0, "size": row.size})}) for row in rows]
        return ((1.0, _library_files(entry, index, "manifest", listed)),)
    options = []
    for option, weight in source_options(entry.path):
        if entry.category_from == "folder":
            found = folder_categories((base / option).resolve(), option)
        else:
            found = [(file, entry.category) for file in library_files(base, option)]
        options_of_entry = {"up_axis": entry.up_axis, "scale": entry.scale, "size": entry.size}
        listed = [(file, category, "", options_of_entry) for file, category in found]
        options.append((weight, _library_files(entry, index, "path", listed)))
    return tuple(options)


def _library_files(entry: AssetEntry, index: int, field: str, listed: list[tuple[Path, str, str, dict]]
                   ) -> tuple[LibraryFile, ...]:
    """One LibraryFile per listed (absolute file, category, manifest row, load options) and variant
    choice, with its keypoints: those the entry declares, else the file's own (USD files only:
    they are parsed for them now), with the entry's skeleton."""
    skeleton = tuple(entry.skeleton)
    if entry.keypoints is not None:
        keypoints = Keypoints(tuple(entry.keypoints), np.array(list(entry.keypoints.values()),
                                                               dtype=np.float64).reshape(-1, 3), skeleton)
    else:
        keypoints = Keypoints(skeleton=skeleton)
    choices = [tuple(sorted(choice.items())) for choice in entry.variant_choices()]
    files = []
    for path, category, row, options in listed:
        try:
            check_asset_file(path)
        except AssetError as exc:
            raise AssetError(f"{row}: {exc}" if row else str(exc)) from None
        for choice in choices:
            file = LibraryFile(str(path), category, index, field, row, choice, **options, keypoints=keypoints)
            if entry.keypoints is None and path.suffix.lower() in USD_SUFFIXES:
                own = file.model()[1].keypoints
                file = replace(file, keypoints=Keypoints(own.names, own.positions, skeleton))
            files.append(file)
    return tuple(files)


def _read_yaml(path: Path) -> CommentedMap:
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: recipe is larger than {MAX_RECIPE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if _flow_depth(text) > 4 * MAX_RECIPE_DEPTH:  # refused before the parser recurses that deep
        raise UserError(f"{path}: the recipe is nested too deeply (more than {MAX_RECIPE_DEPTH} levels)")
    try:
        tree = YAML(typ="rt", pure=True).load(text)
    except RecursionError:
        raise UserError(f"{path}: the recipe is nested too deeply (more than {MAX_RECIPE_DEPTH} levels)") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = SourcePosition(str(path), mark.line + 1, mark.column + 1) if mark else SourcePosition(str(path))
        raise UserError(f"YAML error: {exc.problem or exc.context}", source=where) from None
    except YAMLError as exc:
        raise UserError(f"{path}: YAML error: {exc}") from None
    if tree is None:
        raise UserError("the recipe is empty", source=SourcePosition(str(path), 1, 1))
    if not isinstance(tree, CommentedMap):
        raise UserError("the recipe must be a mapping of fields (seed, objects, ...)", source=SourcePosition(str(path), 1, 1))
    return tree


def _flow_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest in YAML text, quoted strings skipped (a cheap upper bound
    for flow collections: brackets in plain scalars count too)."""
    depth = deepest = 0
    quote = None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _plain(tree: Any, path: Path) -> Any:
    """Plain Python data from the YAML tree, refusing explicit tags and alias bombs."""
    budget = [MAX_RECIPE_NODES]

    def convert(node: Any, where: tuple[int, int], depth: int = 0) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise UserError(f"{path}: more than {MAX_RECIPE_NODES} values (an alias bomb?)")
        if depth > MAX_RECIPE_DEPTH:
            raise UserError(f"nested more than {MAX_RECIPE_DEPTH} levels deep", source=_at(path, where))
        tag = getattr(node, "tag", None)
        if isinstance(node, TaggedScalar) or (isinstance(node, CommentedBase) and getattr(tag, "value", tag)):
            raise UserError(f"YAML tags such as '{getattr(tag, 'value', tag)}' are not allowed", source=_at(path, where))
        if isinstance(node, CommentedMap):
            return {key: convert(value, _value_pos(node, key, where), depth + 1) for key, value in node.items()}
        if isinstance(node, CommentedSeq):
            return [convert(value, _item_pos(node, i, where), depth + 1) for i, value in enumerate(node)]
        if isinstance(node, Mapping):  # an override value
            return {key: convert(value, where, depth + 1) for key, value in node.items()}
        if isinstance(node, (list, tuple)):  # tuples: plain data from Python
            return [convert(value, where, depth + 1) for value in node]
        if isinstance(node, float) and not math.isfinite(node):
            raise UserError(f"{node} is not a finite number: every number in a recipe must be finite",
                            source=_at(path, where))
        if node is None or isinstance(node, (str, int, float, bool)):
            return node
        raise UserError(f"unsupported YAML value {type(node).__name__} ({node!r})", source=_at(path, where))

    return convert(tree, (0, 0))


def _at(path: Path, position: tuple[int, int]) -> SourcePosition:
    """The SourcePosition of a 0-based (line, column) of ruamel.yaml."""
    return SourcePosition(str(path), position[0] + 1, position[1] + 1)


def _value_pos(node: CommentedMap, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    try:
        return tuple(node.lc.value(key))  # type: ignore[return-value]
    except (KeyError, TypeError, AttributeError):
        return default


def _item_pos(node: CommentedSeq, index: int, default: tuple[int, int]) -> tuple[int, int]:
    try:
        return tuple(node.lc.item(index))  # type: ignore[return-value]
    except (KeyError, TypeError, AttributeError):
        return default


def _apply_overrides(tree: CommentedMap, overrides: Mapping[str, Any]) -> set[tuple[str, ...]]:
    """Set dotted field paths in the tree (numbers index lists: ``objects.0.count``); returns the
    overridden paths, whose errors are reported as coming from the command line."""
    done = set()
    for dotted, value in overrides.items():
        keys = tuple(dotted.split("."))
        node: Any = tree
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise UserError(f"--set {dotted}: '{'.'.join(keys[:depth])}' has no item {key} (it has {len(node)})")
                if last:
                    node[int(key)] = value
                node = node[int(key)]
            elif isinstance(node, Mapping):
                if last:
                    node[key] = value
                elif node.get(key) is None:  # a section the recipe leaves out
                    node[key] = CommentedMap()
                node = node[key]
            else:
                raise UserError(f"--set {dotted}: '{'.'.join(keys[:depth])}' is a value, not a mapping or list")
        done.add(keys)
    return done


def _describe(path: Path, tree: Any, error: Mapping[str, Any], overridden: set[tuple[str, ...]]) -> tuple[SourcePosition, str]:
    """One validation error: where it is, and its message."""
    loc = list(error["loc"])
    unknown_key = error["type"] == "unknown_key"
    if unknown_key:
        loc.append(error["ctx"]["key"])
    source = _locate(path, tree, overridden, loc, at_key=unknown_key)
    if error["type"] == "missing" and isinstance(loc[-1], str):  # name the field that is not there
        source = replace(source, field=f"{source.field}.{loc[-1]}" if source.field != "(top level)" else loc[-1])
    return source, _message(error)


def _field_path(loc: Any) -> str:
    """``("objects", 2, "count")`` -> ``objects[2].count``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or "(top level)"


def _locate(path: Path, tree: Any, overridden: set[tuple[str, ...]], loc: Any, at_key: bool = False) -> SourcePosition:
    """Where the deepest part of ``loc`` is in the recipe (the key's position when ``at_key``), or
    the command line for ``--set`` fields; parts not in the tree (union tags) are skipped."""
    node, pos, found = tree, (0, 0), []
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            pos = (_key_pos if at_key and i == len(loc) - 1 else _value_pos)(node, part, pos)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            pos = _item_pos(node, part, pos)
        else:
            continue
        node = node[part]
        found.append(part)
    keys = tuple(str(part) for part in found)
    if any(keys[: len(o)] == o for o in overridden):
        return SourcePosition("command line", field=_field_path(found))
    if not isinstance(tree, CommentedBase):  # plain data (recipe_from_dict): a field path, no line
        return SourcePosition(str(path), field=_field_path(found))
    return replace(_at(path, pos), field=_field_path(found))


def _key_pos(node: CommentedMap, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    try:
        return tuple(node.lc.key(key))  # type: ignore[return-value]
    except (KeyError, TypeError, AttributeError):
        return default


def _message(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        position = error["loc"][-1]
        return f"too few values (nothing at position {position})" if isinstance(position, int) else "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        return f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; expected one of: {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return f"required field {error['ctx']['discriminator']} is missing"
    if kind == "literal_error":
        return f"{msg.replace('Input should be', 'expected')}, got {error['input']!r}"
    if kind in ("unknown_key", "number", "integer", "color", "vector", "rotation"):
        return msg
    return f"{msg[0].lower()}{msg[1:]}, got {error['input']!r}".replace("input should be", "expected")
