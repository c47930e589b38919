"""Recipe values: a constant or a distribution, drawn from a caller-owned RNG only.

In YAML a value is either a number or a one-key mapping naming the distribution::

    0.3                                  # constant
    {uniform: [0.1, 0.5]}                # continuous uniform on [lo, hi]
    {loguniform: [0.01, 1.0]}            # uniform in log space, 0 < lo <= hi
    {normal: [mean, std], clip: [lo, hi]}  # clip is optional
    {randint: [lo, hi]}                  # integer, both ends included
    {choice: [a, b, c], weights: [2, 1, 1]}  # weights are optional
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Tag, model_validator

DISTRIBUTION_HELP = (
    "expected a number or a distribution: {uniform: [lo, hi]}, {loguniform: [lo, hi]}, "
    "{normal: [mean, std], clip: [lo, hi]}, {randint: [lo, hi]}, {choice: [...], weights: [...]}"
)
INTEGER_HELP = "expected an integer, {randint: [lo, hi]} or {choice: [...], weights: [...]}"


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Uniform(_Distribution):
    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.uniform[0] <= self.uniform[1]:
            raise ValueError("needs lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One value from [lo, hi]."""
        return float(rng.uniform(*self.uniform))


class LogUniform(_Distribution):
    loguniform: tuple[float, float]

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
    normal: tuple[float, float]
    clip: tuple[float, float] | None = None

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
    randint: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self) -> RandInt:
        if not self.randint[0] <= self.randint[1]:
            raise ValueError("needs lo <= hi")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        """One integer from lo to hi, both included."""
        return int(rng.integers(self.randint[0], self.randint[1], endpoint=True))


class _ChoiceBase(_Distribution):
    weights: list[float] | None = None

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
    choice: list[float]


class IntChoice(_ChoiceBase):
    choice: list[int]


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
