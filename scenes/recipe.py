"""Recipe schema and loading: YAML with line/column positions, validated into typed models.

Every problem is reported as ``FILE:LINE:COL: field.path: what was expected``; the YAML is read
with a safe loader, explicit tags are refused, and file size and node count are bounded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedBase, CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from sceneforge.errors import UserError

from .distributions import Integer, Number

MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000
MAX_INSTANCES = 32_767  # Blender's object pass index is a 15-bit integer.


class Section(BaseModel):
    """A recipe mapping: unknown keys are errors with a "did you mean" hint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class HSV(Section):
    """A colour drawn in HSV (each component in [0, 1]); converted to linear RGB."""

    hsv: Vec3


Color = Annotated[
    Union[Annotated[Vec3, Tag("rgb")], Annotated[HSV, Tag("hsv")]],
    Discriminator(
        lambda v: "hsv" if isinstance(v, (Mapping, HSV)) else "rgb",
        custom_error_type="color",
        custom_error_message="expected [r, g, b] (linear, 0..1) or {hsv: [h, s, v]}",
    ),
]


class Material(Section):
    color: Color = (0.8, 0.8, 0.8)
    roughness: Number = 0.5
    metallic: Number = 0.0


class Box(Section):
    primitive: Literal["box"]
    extents: Vec3 = (0.2, 0.2, 0.2)


class Sphere(Section):
    primitive: Literal["sphere"]
    radius: Number = 0.1


class Cylinder(Section):
    primitive: Literal["cylinder"]
    radius: Number = 0.1
    height: Number = 0.2


class Cone(Section):
    primitive: Literal["cone"]
    radius: Number = 0.1
    height: Number = 0.2


class Capsule(Section):
    primitive: Literal["capsule"]
    radius: Number = 0.05
    height: Number = 0.2  # total height, caps included


class Torus(Section):
    primitive: Literal["torus"]
    major_radius: Number = 0.1
    minor_radius: Number = 0.03


Primitive = Annotated[Union[Box, Sphere, Cylinder, Cone, Capsule, Torus], Field(discriminator="primitive")]


class ObjectGroup(Section):
    """Objects of one category: how many, which shape, which material, what they stand on."""

    category: str = Field(min_length=1, max_length=128)
    count: Integer = 1
    asset: Primitive
    material: Material = Material()
    on: str = Field(
        "ground",
        description="what the objects stand on: ground, the name of a support, or the category of an earlier group",
    )
    distractor: bool = Field(False, description="drawn (and occluding) but never labeled")

    @field_validator("count")
    @classmethod
    def _not_negative(cls, count: Any) -> Any:
        smallest = count if isinstance(count, int) else min(getattr(count, "randint", None) or count.choice)
        if smallest < 0:
            raise ValueError("counts must be >= 0")
        return count


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
    rotation: Literal["yaw", "so3"] = Field("yaw", description="yaw: upright, turned about +Z; so3: any orientation")
    min_gap: float = Field(0.01, ge=0, description="smallest distance between two objects' surfaces")
    max_tries: int = Field(200, ge=1, le=100_000, description="attempts to place one object")
    physics: Physics | None = Field(None, description="settle the objects with a rigid-body simulation")


class _Support(Section):
    name: str = Field(min_length=1, max_length=128, description="what object groups name in `on`")
    position: tuple[Number, Number] = Field((0.0, 0.0), description="centre of its footprint on the ground (x, y)")
    yaw_deg: Number = 0.0
    thickness: float = Field(0.02, gt=0, description="of its boards, metres")
    material: Material = Material(color=(0.6, 0.45, 0.3), roughness=0.7)


class Bin(_Support):
    """An open box, a floor and four walls: objects placed on it stand on the floor inside."""

    type: Literal["bin"]
    size: Vec3 = Field((0.4, 0.3, 0.15), description="outside width (x), depth (y) and height (z), metres")


class Shelf(_Support):
    """Two side panels and ``boards`` evenly spaced boards (the lowest on the ground, the top one
    at the full height): objects placed on it stand on any board."""

    type: Literal["shelf"]
    size: Vec3 = Field((0.8, 0.3, 1.0), description="outside width (x), depth (y) and height (z), metres")
    boards: int = Field(3, ge=1, le=50)


Support = Annotated[Union[Bin, Shelf], Field(discriminator="type")]


class Ground(Section):
    size: float = Field(4.0, gt=0)
    material: Material = Material(color=(0.5, 0.5, 0.5), roughness=0.8)


class Light(Section):
    """A light aimed at the origin from (elevation, azimuth, distance)."""

    type: Literal["sun", "point", "area"]
    energy: Number = Field(description="W/m2 for sun, W for point and area lights")
    color: Color = (1.0, 1.0, 1.0)
    elevation_deg: Number = 60.0
    azimuth_deg: Number = 0.0
    distance: Number = 3.0
    size: float = Field(0.5, gt=0)


class Background(Section):
    color: Color = (0.05, 0.05, 0.05)
    strength: Number = 1.0


class Intrinsics(Section):
    """Pinhole intrinsics in pixels, OpenCV convention (integer coordinates at pixel centres)."""

    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float


class Camera(Section):
    """A pinhole camera on a sphere around ``look_at``, looking at it, world +Z up."""

    fov_deg: float = Field(50.0, gt=0, lt=180, description="horizontal field of view")
    intrinsics: Intrinsics | None = Field(None, description="fx, fy, cx, cy in pixels instead of fov_deg")
    look_at: Vec3 = (0.0, 0.0, 0.0)
    distance: Number = 2.0
    elevation_deg: Number = 45.0
    azimuth_deg: Number = 0.0
    clip_start: float = Field(0.01, gt=0)
    clip_end: float = Field(100.0, gt=0)
    frames_per_scene: int = Field(1, ge=1, le=100_000, description="camera poses per scene")

    @model_validator(mode="after")
    def _one_lens(self) -> Camera:
        if self.intrinsics is not None and "fov_deg" in self.model_fields_set:
            raise ValueError("give fov_deg or intrinsics, not both")
        return self


Dimension = Annotated[int, Field(ge=1, le=16384)]


class RenderSettings(Section):
    """Cycles settings; bounce defaults are Blender's (glossy and transmission are not 0)."""

    resolution: tuple[Dimension, Dimension] = (320, 240)
    samples: int = Field(16, ge=1, le=65536)
    adaptive_threshold: float = Field(0.01, ge=0, le=1, description="noise level to stop at; 0 = off")
    denoise: bool = False
    albedo: bool = Field(False, description="also write the albedo (base colour) pass")
    max_bounces: int = Field(12, ge=0, le=1024)
    diffuse_bounces: int = Field(4, ge=0, le=1024)
    glossy_bounces: int = Field(4, ge=0, le=1024)
    transmission_bounces: int = Field(12, ge=0, le=1024)
    transparent_bounces: int = Field(8, ge=0, le=1024)


_Source = tuple[Path, Any, set[tuple[str, ...]]]  # recipe file, its YAML tree, the overridden paths


class Recipe(Section):
    """A whole scene recipe: what to place, how to light and film it, how many frames."""

    seed: int = Field(0, ge=0, lt=2**63)
    count: int = Field(10, ge=1, le=10_000_000, description="number of frames")
    render: RenderSettings = RenderSettings()
    camera: Camera = Camera()
    objects: list[ObjectGroup] = []
    supports: list[Support] = []
    placement: Placement = Placement()
    ground: Ground | None = Ground()
    lights: list[Light] = [Light(type="sun", energy=3.0)]
    background: Background = Background()
    _source: _Source | None = PrivateAttr(None)

    @property
    def categories(self) -> list[str]:
        """Labeled category names in order of first appearance; category id = position + 1."""
        return list(dict.fromkeys(group.category for group in self.objects if not group.distractor))

    def where(self, *loc: str | int) -> str:
        """``FILE:LINE:COL: field.path`` of a field of a loaded recipe, for errors found later."""
        if self._source is None:
            return _field_path(loc)
        return f"{_locate(*self._source, loc)[0]}: {_field_path(loc)}"

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field location, message) of every ``on`` and name that refers to nothing or clashes."""
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
            if group.on != "ground" and group.on not in support_names and group.on not in earlier:
                choices = ", ".join(dict.fromkeys(["ground", *support_names, *earlier]))
                problems.append((("objects", i, "on"), f"'{group.on}' is not ground, a support or an earlier group's category; expected one of: {choices}"))
        return problems

    def content_hash(self) -> str:
        """Hash of everything that decides the frames (the frame count excluded)."""
        content = self.model_dump(mode="json", exclude={"count"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


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
        return path.strip(), YAML(typ="safe", pure=True).load(value)
    except YAMLError as exc:
        raise UserError(f"--set {path}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None


def load_recipe(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read, check and validate a recipe file; ``overrides`` maps dotted field paths to values.

    Raises UserError listing every problem as ``FILE:LINE:COL: field.path: message``.
    """
    path = Path(path)
    tree = _read_yaml(path)
    overridden = _apply_overrides(tree, overrides or {})
    try:
        recipe = Recipe.model_validate(_plain(tree, path))
    except ValidationError as exc:
        raise UserError("\n".join(_describe(path, tree, error, overridden) for error in exc.errors())) from None
    recipe._source = (path, tree, overridden)
    if problems := recipe.reference_problems():
        raise UserError("\n".join(f"{recipe.where(*loc)}: {message}" for loc, message in problems))
    return recipe


def _read_yaml(path: Path) -> CommentedMap:
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: recipe is larger than {MAX_RECIPE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        tree = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserError(f"{where}: YAML error: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise UserError(f"{path}: YAML error: {exc}") from None
    if tree is None:
        raise UserError(f"{path}:1:1: the recipe is empty")
    if not isinstance(tree, CommentedMap):
        raise UserError(f"{path}:1:1: the recipe must be a mapping of fields (seed, objects, ...)")
    return tree


def _plain(tree: Any, path: Path) -> Any:
    """Plain Python data from the YAML tree, refusing explicit tags and alias bombs."""
    budget = [MAX_RECIPE_NODES]

    def convert(node: Any, where: tuple[int, int]) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise UserError(f"{path}: more than {MAX_RECIPE_NODES} values (an alias bomb?)")
        tag = getattr(node, "tag", None)
        if isinstance(node, TaggedScalar) or (isinstance(node, CommentedBase) and getattr(tag, "value", tag)):
            line, col = where
            raise UserError(f"{path}:{line + 1}:{col + 1}: YAML tags such as '{getattr(tag, 'value', tag)}' are not allowed")
        if isinstance(node, CommentedMap):
            return {key: convert(value, _value_pos(node, key, where)) for key, value in node.items()}
        if isinstance(node, CommentedSeq):
            return [convert(value, _item_pos(node, i, where)) for i, value in enumerate(node)]
        if isinstance(node, Mapping):  # an override value
            return {key: convert(value, where) for key, value in node.items()}
        if isinstance(node, list):
            return [convert(value, where) for value in node]
        if node is None or isinstance(node, (str, int, float, bool)):
            return node
        line, col = where
        raise UserError(f"{path}:{line + 1}:{col + 1}: unsupported YAML value {type(node).__name__} ({node!r})")

    return convert(tree, (0, 0))


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


def _describe(path: Path, tree: Any, error: Mapping[str, Any], overridden: set[tuple[str, ...]]) -> str:
    """One validation error as FILE:LINE:COL: field.path: message."""
    loc = list(error["loc"])
    unknown_key = error["type"] == "unknown_key"
    if unknown_key:
        loc.append(error["ctx"]["key"])
    origin, field_path = _locate(path, tree, overridden, loc, at_key=unknown_key)
    return f"{origin}: {field_path}: {_message(error)}"


def _field_path(loc: Any) -> str:
    """``("objects", 2, "count")`` -> ``objects[2].count``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or "(top level)"


def _locate(path: Path, tree: Any, overridden: set[tuple[str, ...]], loc: Any, at_key: bool = False) -> tuple[str, str]:
    """(``FILE:LINE:COL`` or ``command line``, field.path) of the deepest part of ``loc`` in the
    recipe (the key's position when ``at_key``); parts not in the tree (union tags) are skipped."""
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
        return "command line", _field_path(found)
    return f"{path}:{pos[0] + 1}:{pos[1] + 1}", _field_path(found)


def _key_pos(node: CommentedMap, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    try:
        return tuple(node.lc.key(key))  # type: ignore[return-value]
    except (KeyError, TypeError, AttributeError):
        return default


def _message(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        ctx = error["ctx"]
        return f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; expected one of: {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return f"required field {error['ctx']['discriminator']} is missing"
    if kind == "literal_error":
        return f"{msg.replace('Input should be', 'expected')}, got {error['input']!r}"
    if kind in ("unknown_key", "number", "integer", "color"):
        return msg
    return f"{msg[0].lower()}{msg[1:]}, got {error['input']!r}".replace("input should be", "expected")
