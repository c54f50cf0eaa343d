"""Curves of the relearning attack: a model's score after each evaluated attack step (`Curve`), the attacker-best
curve over an LR grid (`BestCurve`, with the LR chosen at each step and the retain cap applied, `RetainCap`), and the
value at an attack budget (`Snapshot`).

Curves are frozen dataclasses that check themselves (a `UserError` names what is wrong); they are also pydantic
field types, so a stage result holds a `BestCurve` and its meta.json holds `to_dict()`'s JSON, read back by
`from_dict`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict

from undo.schema.errors import UserError


class _PydanticField:
    """Lets a curve dataclass be a pydantic field: validated from its JSON dict (`from_dict`), dumped as `to_dict`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        from pydantic_core import core_schema

        def validate(value: Any):
            if isinstance(value, cls):
                return value
            if not isinstance(value, Mapping):
                raise ValueError(f"expected a {cls.__name__} record, got {type(value).__name__}")
            return cls.from_dict(value)

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda curve: curve.to_dict()))


def _steps(raw: Any, what: str) -> list[int]:
    try:
        items = list(raw)
        if any(isinstance(s, bool) for s in items):
            raise TypeError
        return [operator.index(s) for s in items]
    except TypeError:
        raise UserError(f"{what}: steps must be a list of integers, got {raw!r}") from None


def finite_number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise UserError(f"{what}: expected a finite number, got {value!r}")
    return number


def lr_text(lr: Any) -> str:
    return f"{lr:g}" if isinstance(lr, (int, float)) else repr(lr)


@dataclass(frozen=True)
class Curve(_PydanticField):
    """Performance after each evaluated attack step. `steps` strictly increasing and >= 0 (step 0 is the model
    before the attack), `values` finite, same length, at least one point. Lists of plain int/float after init."""

    steps: list[int]
    values: list[float]

    def __post_init__(self) -> None:
        name = type(self).__name__
        steps = _steps(self.steps, name)
        try:
            raw_values = list(self.values)
        except TypeError:
            raise UserError(f"{name}: values must be a list of numbers, got {self.values!r}") from None
        if len(steps) != len(raw_values):
            raise UserError(f"{name}: {len(steps)} steps but {len(raw_values)} values; they must pair up")
        values = [finite_number(v, f"{name} value at step {s}") for s, v in zip(steps, raw_values)]
        if not steps:
            raise UserError(f"{name}: no points; a curve needs at least the step-0 evaluation")
        if steps[0] < 0:
            raise UserError(f"{name}: steps must be >= 0, got {steps[0]}")
        for prev, cur in zip(steps, steps[1:]):
            if cur <= prev:
                raise UserError(f"{name}: steps must be strictly increasing, got {prev} then {cur}")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "values", values)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Curve:
        return cls(steps=list(data["steps"]), values=list(data["values"]))


@dataclass(frozen=True)
class RetainCap(_PydanticField):
    """Record of a retain cap applied by `attacker_best`.

    `removed` maps each LR to the steps whose forget point was discarded because retain performance had fallen
    more than `max_retain_drop` below its step-0 value. `steps_without_valid_lr` are steps where every LR was
    discarded; there the attacker-best value falls back to the step-0 value (an attack that does not count
    leaves the model as it was) and `best_lr` is None."""

    max_retain_drop: float
    removed: dict[float, list[int]]
    steps_without_valid_lr: list[int]

    @property
    def removed_points(self) -> int:
        return sum(len(steps) for steps in self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_retain_drop": self.max_retain_drop,
            "removed_points": self.removed_points,
            # A list, not a dict: JSON keys are strings and an LR must read back as the same float.
            "removed": [{"lr": lr, "steps": list(steps)} for lr, steps in sorted(self.removed.items())],
            "steps_without_valid_lr": list(self.steps_without_valid_lr),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetainCap:
        return cls(max_retain_drop=float(data["max_retain_drop"]),
                   removed={float(row["lr"]): list(row["steps"]) for row in data["removed"]},
                   steps_without_valid_lr=list(data["steps_without_valid_lr"]))


@dataclass(frozen=True)
class BestCurve(Curve):
    """The attacker-best curve: a `Curve` (so `value_at` and `area_under` take it) plus, per step, the LR that
    gave the best value (None only where a retain cap discarded every LR), and the retain cap if one was used."""

    best_lr: list[float | None] = field(default_factory=list)
    retain_cap: RetainCap | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.best_lr) != len(self.steps):
            raise UserError(f"BestCurve: {len(self.steps)} steps but {len(self.best_lr)} best LRs")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "best_lr": list(self.best_lr),
                "retain_cap": None if self.retain_cap is None else self.retain_cap.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BestCurve:
        cap = data.get("retain_cap")
        return cls(steps=list(data["steps"]), values=list(data["values"]), best_lr=list(data["best_lr"]),
                   retain_cap=None if cap is None else RetainCap.from_dict(cap))


def index_at(curve: Curve, budget: int) -> int:
    """The index of the last evaluated step <= `budget`: where "the value after a budget of attack steps" is read.
    Refuses a budget before the first evaluated step, and one past the last (the attack never got that far, so the
    value would silently be that of a smaller budget). The one implementation every reader of a budget uses."""
    what = "the value at a budget"
    try:
        steps = operator.index(budget)
    except TypeError:
        raise UserError(f"{what}: the budget must be a whole number of steps, got {budget!r}") from None
    if isinstance(budget, bool):
        raise UserError(f"{what}: the budget must be a whole number of steps, got {budget!r}")
    if steps < curve.steps[0]:
        raise UserError(f"{what}: budget {steps} steps is before the first evaluated step {curve.steps[0]}")
    if steps > curve.steps[-1]:
        raise UserError(f"{what}: budget {steps} steps is past the end of the attack (last evaluated step "
                        f"{curve.steps[-1]}); attack for longer or lower the budget")
    return max(i for i, step in enumerate(curve.steps) if step <= steps)


class Snapshot(BaseModel):
    """The attacker-best forget score after a budget of attack steps: the value at the last evaluated step <= the
    budget (`step`), the LR chosen there, and the tokens the attacker had read by then (`step` x tokens per step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: int
    step: int
    value: float
    lr: float | None = None
    tokens: int | None = None


class Normalised(BaseModel):
    """Robustness between the unlearn-only model (0) and the oracle (1); None, with a note, where it is undefined
    (the two relearn equally there)."""

    robustness: float | None
    note: str | None = None


class SnapshotRobustness(Snapshot, Normalised):
    """A model's attacker-best value at a budget and its robustness there."""


class AreaRobustness(Normalised):
    up_to: int
    value: float


class RobustnessSummary(BaseModel):
    """One attacked model against the unlearn-only model and the oracle: at each budget and for the area."""

    before: float
    budgets: list[SnapshotRobustness]
    area: AreaRobustness
