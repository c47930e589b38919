"""Recipe values: a constant or a distribution, drawn from a caller-owned RNG only.

In YAML a value is either a number or a one-key mapping naming the distribution::

    0.3                                  # constant
    {uniform: [0.1, 0.5]}                # continuous uniform on [lo, hi]
    {loguniform: [0.01, 1.0]}            # uniform in log space, 0 < lo <= hi
    {normal: [mean, std], clip: [lo, hi]}  # clip is optional
    {randint: [lo, hi]}                  # integer, both ends included
    {choice: [a, b, c], weights: [2, 1, 1]}  # weights are optional

A *vector* (a 3D point or offset) is three numbers, each drawn on its own, or a joint draw::

    [0, {uniform: [-1, 1]}, 0.5]
    {uniform_box: {low: [x, y, z], high: [x, y, z]}}     # uniform in an axis-aligned box
    {on_sphere: {radius: 2, center: [0, 0, 0], hemisphere: true}}  # uniform on a sphere (z >= centre)

A *rotation* is ``yaw`` (uniform about +Z), ``so3`` (uniform over all orientations) or
``{yaw_deg: number}`` (about +Z by a drawn angle).

A *source* (of files: HDRIs, images, textures, assets) is a path or a weighted choice of paths,
each a file or a folder, relative to the recipe::

    assets/hdri/sky.hdr                                  # one file
    assets/hdri/                                         # a folder: any of its files
    {choice: [assets/hdri/a.hdr, assets/hdri/indoor/], weights: [2, 1]}  # one option per scene
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

DISTRIBUTION_HELP = (
    "expected a number or a distribution: {uniform: [lo, hi]}, {loguniform: [lo, hi]}, "
    "{normal: [mean, std], clip: [lo, hi]}, {randint: [lo, hi]}, {choice: [...], weights: [...]}"
)
INTEGER_HELP = "expected an integer, {randint: [lo, hi]} or {choice: [...], weights: [...]}"


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Uniform(_Distribution):
    uniform: tuple[float, float] = Field(description="[lo, hi]: uniform between them")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.uniform[0] <= self.uniform[1]:
            raise ValueError("needs lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One value from [lo, hi]."""
        return float(rng.uniform(*self.uniform))


class LogUniform(_Distribution):
    loguniform: tuple[float, float] = Field(description="[lo, hi], 0 < lo: uniform in log space")

    @model_validator(mode="after")
    def _positive_ordered(self) -> LogUniform:
        lo, hi = self.loguniform
        if not 0 < lo <= hi:
            raise ValueError("needs 0 < lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One value, uniform in log space."""
        lo, hi = self.loguniform
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class Normal(_Distribution):
    normal: tuple[float, float] = Field(description="[mean, standard deviation]")
    clip: tuple[float, float] | None = Field(None, description="[lo, hi]: draws are clamped to it")

    @model_validator(mode="after")
    def _valid(self) -> Normal:
        if self.normal[1] < 0:
            raise ValueError("the standard deviation must be >= 0")
        if self.clip is not None and not self.clip[0] <= self.clip[1]:
            raise ValueError("clip needs lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One value, clipped to ``clip`` when given."""
        value = float(rng.normal(*self.normal))
        return value if self.clip is None else min(max(value, self.clip[0]), self.clip[1])


class RandInt(_Distribution):
    randint: tuple[int, int] = Field(description="[lo, hi]: an integer between them, both included")

    @model_validator(mode="after")
    def _ordered(self) -> RandInt:
        if not self.randint[0] <= self.randint[1]:
            raise ValueError("needs lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        """One integer from lo to hi, both included."""
        return int(rng.integers(self.randint[0], self.randint[1], endpoint=True))


class _ChoiceBase(_Distribution):
    weights: list[float] | None = Field(None, description="one per option, >= 0; default: all equal")

    @model_validator(mode="after")
    def _weights_match(self) -> _ChoiceBase:
        options = self.choice  # type: ignore[attr-defined]
        if not options:
            raise ValueError("needs at least one option")
        if self.weights is not None:
            if len(self.weights) != len(options):
                raise ValueError(
                    f"{len(options)} options but {len(self.weights)} weights"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        return self

    def draw(self, rng: np.random.Generator) -> Any:
        """One of the options, with the given weights."""
        options = self.choice  # type: ignore[attr-defined]
        p = None if self.weights is None else np.asarray(self.weights) / sum(self.weights)
        return options[int(rng.choice(len(options), p=p))]


class Choice(_ChoiceBase):
    choice: list[float] = Field(description="the options, one drawn")


class IntChoice(_ChoiceBase):
    choice: list[int] = Field(description="the options, one drawn")


class PathChoice(_ChoiceBase):
    choice: list[Annotated[str, Field(min_length=1)]] = Field(
        description="the options, files or folders relative to the recipe: one drawn per scene"
    )


SOURCE_HELP = "expected a file or folder path, or {choice: [path, ...], weights: [...]}"
Source = Annotated[
    Union[Annotated[str, Field(min_length=1), Tag("path")], Annotated[PathChoice, Tag("choice")]],
    Discriminator(
        lambda v: "path" if isinstance(v, str) else "choice" if isinstance(v, (dict, PathChoice)) else None,
        custom_error_type="source", custom_error_message=SOURCE_HELP,
    ),
]
"""Files of a recipe field: a file, a folder (its files) or a weighted ``choice`` of files and folders."""


def source_options(value: str | PathChoice) -> list[tuple[str, float]]:
    """(path, weight) of each option of a source: a plain path is one option of weight 1."""
    if isinstance(value, str):
        return [(value, 1.0)]
    weights = value.weights or [1.0] * len(value.choice)
    return list(zip(value.choice, map(float, weights)))


def _kind(value: Any) -> str | None:
    """Which union member a raw value is meant to be, so errors name one member only."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return "constant"
    if isinstance(value, dict):
        return next((key for key in value if key in _KINDS), None)
    if isinstance(value, _Distribution):
        return next(key for key in type(value).model_fields if key in _KINDS)
    return None


_KINDS = ("uniform", "loguniform", "normal", "randint", "choice")

Number = Annotated[
    Union[
        Annotated[float, Tag("constant")],
        Annotated[Uniform, Tag("uniform")],
        Annotated[LogUniform, Tag("loguniform")],
        Annotated[Normal, Tag("normal")],
        Annotated[RandInt, Tag("randint")],
        Annotated[Choice, Tag("choice")],
    ],
    Discriminator(_kind, custom_error_type="number", custom_error_message=DISTRIBUTION_HELP),
]
"""A real-valued recipe field: a constant or any distribution."""


def _int_kind(value: Any) -> str | None:
    kind = _kind(value)
    if kind == "constant" and not float(value).is_integer():
        return None
    return kind if kind in ("constant", "randint", "choice") else None


Integer = Annotated[
    Union[
        Annotated[int, Tag("constant")],
        Annotated[RandInt, Tag("randint")],
        Annotated[IntChoice, Tag("choice")],
    ],
    Discriminator(_int_kind, custom_error_type="integer", custom_error_message=INTEGER_HELP),
]
"""An integer-valued recipe field (counts): a constant, randint or choice of integers."""


def draw(value: float | int | _Distribution, rng: np.random.Generator) -> Any:
    """The value of a recipe field for one scene: constants pass through, distributions draw."""
    return value.draw(rng) if isinstance(value, _Distribution) else value


def bounds(value: float | int | _Distribution) -> tuple[float, float]:
    """The smallest and largest value a number field can take (a normal without clip is unbounded)."""
    if isinstance(value, (Uniform, LogUniform, RandInt)):
        return tuple(map(float, next(iter(value.model_dump().values()))))  # type: ignore[return-value]
    if isinstance(value, Normal):
        if value.clip is not None:
            return value.clip
        return (value.normal[0], value.normal[0]) if value.normal[1] == 0 else (-math.inf, math.inf)
    if isinstance(value, _ChoiceBase):
        return float(min(value.choice)), float(max(value.choice))  # type: ignore[attr-defined]
    return float(value), float(value)


def check_within(value: Any, lo: float, hi: float) -> Any:
    """``value`` if every value it can take lies in [lo, hi]; a ValueError naming the range otherwise."""
    low, high = bounds(value)
    if not lo <= low <= high <= hi:
        hint = " (clip the normal)" if isinstance(value, Normal) and value.clip is None else ""
        raise ValueError(f"must lie in [{lo:g}, {hi:g}], this value can be {low:g} .. {high:g}{hint}")
    return value


def check_positive(value: Any) -> Any:
    """``value`` if every value it can take is > 0; a ValueError naming what it can take otherwise."""
    low, high = bounds(value)
    if not low > 0:
        hint = " (clip the normal)" if isinstance(value, Normal) and value.clip is None else ""
        raise ValueError(f"must be > 0, this value can be {low:g} .. {high:g}{hint}")
    return value


Positive = Annotated[Number, AfterValidator(check_positive)]
"""A number field that every draw must keep > 0 (sizes, distances), checked when the recipe loads."""
NonNegative = Annotated[Number, AfterValidator(lambda value: check_within(value, 0.0, math.inf))]
UnitInterval = Annotated[Number, AfterValidator(lambda value: check_within(value, 0.0, 1.0))]
Elevation = Annotated[Number, AfterValidator(lambda value: check_within(value, -90.0, 90.0))]


VECTOR_HELP = (
    "expected a vector: [x, y, z] (each a number), {uniform_box: {low: [x, y, z], high: [x, y, z]}} "
    "or {on_sphere: {radius: r, center: [x, y, z], hemisphere: false}}"
)
Point = tuple[float, float, float]


class _BoxLimits(_Distribution):
    low: Point = Field(description="[x, y, z] corner with the smallest coordinates")
    high: Point = Field(description="[x, y, z] corner with the largest coordinates")


class UniformBox(_Distribution):
    uniform_box: _BoxLimits = Field(description="a point uniform in the box from low to high")

    @model_validator(mode="after")
    def _ordered(self) -> UniformBox:
        if not all(lo <= hi for lo, hi in zip(self.uniform_box.low, self.uniform_box.high)):
            raise ValueError("needs low <= high in every coordinate")
        return self

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A point uniform in the box."""
        return rng.uniform(self.uniform_box.low, self.uniform_box.high)


class _Sphere(_Distribution):
    radius: float = Field(1.0, gt=0, description="metres")
    center: Point = Field((0.0, 0.0, 0.0), description="[x, y, z]")
    hemisphere: bool = Field(False, description="only the upper half, z >= the centre's z")


class OnSphere(_Distribution):
    on_sphere: _Sphere = Field(description="a point uniform on the sphere's surface")

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """A point uniform on the sphere (or its upper half): a normalised Gaussian is isotropic."""
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        if self.on_sphere.hemisphere:
            direction[2] = abs(direction[2])
        return np.asarray(self.on_sphere.center) + self.on_sphere.radius * direction


def _vector_kind(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        return "components"
    if isinstance(value, dict):
        return next((key for key in value if key in ("uniform_box", "on_sphere")), None)
    return {UniformBox: "uniform_box", OnSphere: "on_sphere"}.get(type(value))


Vector = Annotated[
    Union[
        Annotated[tuple[Number, Number, Number], Tag("components")],
        Annotated[UniformBox, Tag("uniform_box")],
        Annotated[OnSphere, Tag("on_sphere")],
    ],
    Discriminator(_vector_kind, custom_error_type="vector", custom_error_message=VECTOR_HELP),
]
"""A 3D point or offset: three numbers drawn one by one, or a box or sphere distribution."""


def draw_vector(value: tuple | UniformBox | OnSphere, rng: np.random.Generator) -> np.ndarray:
    """The 3-vector of a vector field for one draw."""
    if isinstance(value, _Distribution):
        return value.draw(rng)
    return np.array([draw(component, rng) for component in value], dtype=float)


def rotation_about_z(angle: float) -> np.ndarray:
    """The 3x3 rotation by ``angle`` radians about +Z (x turns towards y)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Yaw(_Distribution):
    yaw_deg: Number = Field(description="turn about +Z, degrees")


ROTATION_HELP = "expected a rotation: yaw, so3 or {yaw_deg: number}"
Rotation = Annotated[
    Union[Annotated[Literal["yaw", "so3"], Tag("named")], Annotated[Yaw, Tag("yaw_deg")]],
    Discriminator(
        lambda v: "named" if isinstance(v, str) else "yaw_deg" if isinstance(v, (dict, Yaw)) else None,
        custom_error_type="rotation", custom_error_message=ROTATION_HELP,
    ),
]
"""An orientation: uniform about +Z (``yaw``), uniform over SO(3) (``so3``) or about +Z by a number of degrees."""


def draw_rotation(value: str | Yaw, rng: np.random.Generator) -> np.ndarray:
    """A 3x3 rotation matrix drawn from a rotation field."""
    if isinstance(value, Yaw):
        return rotation_about_z(math.radians(draw(value.yaw_deg, rng)))
    if value == "yaw":
        return rotation_about_z(rng.uniform(0.0, 2 * math.pi))
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)  # a uniform unit quaternion
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
