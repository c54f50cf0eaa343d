"""Robustness metrics for the relearning attack: pure functions on curves, no model and no torch.

A relearning attack fine-tunes a model on forget-domain data at each learning rate (LR) of a grid and evaluates
forget performance every k steps, from step 0. This module turns those per-LR curves into the numbers we report
(SCIENCE.md, "Robustness, as a number"):

- `attacker_best`: at each evaluated step, the best forget performance over the LR grid and the LR that gave it
  (the defender faces the worst case). Optionally an attack point only counts if retain performance at that
  LR and step has not fallen more than `max_retain_drop` below its step-0 value (issue 5, point 4).
- `value_at` / `snapshots`: the value after a budget of attack steps (default budgets 40 and 500).
- `area_under`: the area under a curve divided by its step span, i.e. the curve's mean level over the budget.
- `normalised_robustness`: (P_unlearn_only - P_method) / (P_unlearn_only - P_oracle): 0 = unlearn-only, 1 = oracle.

Convention: every value is "higher = more relearned" (forget) or "higher = better" (retain). For accuracy pass
accuracy; for cross-entropy pass -CE, so that the maximum over LRs is still the attacker's best and a retain
drop is still a decrease. With -CE, `max_retain_drop` is in nats.

Everything is JSON-serialisable through `to_dict()` and can be read back with `from_dict()`, so reports can be
regenerated from logs.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from undo.core.errors import UserError

DEFAULT_BUDGETS: tuple[int, ...] = (40, 500)
# Two floats closer than this are treated as equal: a denominator this small is zero, and a retain drop this
# close to the cap is within it (0.8 - 0.7 is 0.10000000000000009 in floating point).
EPS = 1e-12


def _steps(raw: Any, what: str) -> list[int]:
    try:
        items = list(raw)
        if any(isinstance(s, bool) for s in items):
            raise TypeError
        return [operator.index(s) for s in items]
    except TypeError:
        raise UserError(f"{what}: steps must be a list of integers, got {raw!r}") from None


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise UserError(f"{what}: expected a finite number, got {value!r}")
    return number


def _lr(lr: Any) -> str:
    return f"{lr:g}" if isinstance(lr, (int, float)) else repr(lr)


@dataclass(frozen=True)
class Curve:
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
        values = [_finite(v, f"{name} value at step {s}") for s, v in zip(steps, raw_values)]
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
class RetainCap:
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


def _check_grid(curves: Mapping[float, Curve], what: str) -> list[float]:
    if not curves:
        raise UserError(f"{what}: no learning rates; the attack needs at least one")
    for lr, curve in curves.items():
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise UserError(f"{what}: learning rates must be positive finite numbers, got {lr!r}")
        if not isinstance(curve, Curve):
            raise UserError(f"{what}: the curve for lr {_lr(lr)} is a {type(curve).__name__}, not a Curve")
    return sorted(curves)


def _describe(steps: Sequence[int]) -> str:
    if len(steps) <= 4:
        return str(list(steps))
    return f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)} points)"


def attacker_best(curves: Mapping[float, Curve], retain_curves: Mapping[float, Curve] | None = None,
                  max_retain_drop: float | None = None) -> BestCurve:
    """Per evaluated step, the maximum forget performance over learning rates and the LR that gave it.

    `curves` maps LR -> forget curve (higher = more relearned; pass -CE for CE). All curves must share the same
    evaluated steps. Ties go to the smaller LR (a deterministic choice; the value is the same either way).

    Retain cap (optional, both arguments together): `retain_curves` maps the same LRs to retain curves on the same
    steps, starting at step 0 (higher = better; pass -CE for CE). A point (LR, step) is discarded when
    retain[step 0] - retain[step] > max_retain_drop (absolute, in the metric's units; a drop equal to the cap is
    allowed). Step 0 is never discarded. At a step where every LR is discarded the value falls back to the
    attacker-best step-0 value with best_lr None. The result records the cap and what it removed.
    """
    lrs = _check_grid(curves, "attacker_best")
    reference = curves[lrs[0]].steps
    differ = [lr for lr in lrs if curves[lr].steps != reference]
    if differ:
        raise UserError(
            f"attacker_best: all learning rates must be evaluated at the same steps; lr "
            f"{', '.join(_lr(lr) for lr in differ)} differ from lr {_lr(lrs[0])} (steps {_describe(reference)})")

    keep = {lr: [True] * len(reference) for lr in lrs}
    removed: dict[float, list[int]] = {}
    limit = 0.0
    if (retain_curves is None) != (max_retain_drop is None):
        raise UserError("attacker_best: the retain cap needs both retain_curves and max_retain_drop")
    if retain_curves is not None:
        limit = _finite(max_retain_drop, "attacker_best: max_retain_drop")
        if limit < 0:
            raise UserError(f"attacker_best: max_retain_drop must be >= 0, got {max_retain_drop!r}")
        _check_grid(retain_curves, "attacker_best retain_curves")
        if set(retain_curves) != set(lrs):
            raise UserError(
                f"attacker_best: retain curves are for lr {', '.join(_lr(lr) for lr in sorted(retain_curves))} "
                f"but forget curves are for lr {', '.join(_lr(lr) for lr in lrs)}; they must match")
        bad = [lr for lr in lrs if retain_curves[lr].steps != reference]
        if bad:
            raise UserError(
                f"attacker_best: retain curves for lr {', '.join(_lr(lr) for lr in bad)} are not evaluated at "
                f"the forget curves' steps {_describe(reference)}")
        if reference[0] != 0:
            raise UserError(f"attacker_best: the retain cap measures drops from step 0, but the curves start "
                            f"at step {reference[0]}; evaluate before the attack")
        for lr in lrs:
            retain = retain_curves[lr].values
            for i, step in enumerate(reference):
                if retain[0] - retain[i] > limit + EPS:
                    keep[lr][i] = False
                    removed.setdefault(lr, []).append(step)

    values: list[float] = []
    best_lr: list[float | None] = []
    empty: list[int] = []
    for i, step in enumerate(reference):
        best: tuple[float, float] | None = None
        for lr in lrs:  # ascending, and only a strictly larger value replaces: ties keep the smaller LR
            value = curves[lr].values[i]
            if keep[lr][i] and (best is None or value > best[0]):
                best = (value, lr)
        if best is None:  # only possible under a retain cap, and never at step 0 (its drop is 0)
            empty.append(step)
            values.append(values[0])
            best_lr.append(None)
        else:
            values.append(best[0])
            best_lr.append(best[1])
    cap = None if retain_curves is None else RetainCap(limit, removed, steps_without_valid_lr=empty)
    return BestCurve(steps=list(reference), values=values, best_lr=best_lr, retain_cap=cap)


def _check_budget(curve: Curve, budget: Any, what: str) -> int:
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
    return steps


def value_at(curve: Curve, budget_steps: int) -> float:
    """The value at the last evaluated step <= budget_steps.

    Refuses a budget before the first evaluated step, and one past the last (the attack never got that far, so
    the value would silently be that of a smaller budget)."""
    budget = _check_budget(curve, budget_steps, "value_at")
    return curve.values[_last_at_or_before(curve.steps, budget)]


def _last_at_or_before(steps: Sequence[int], budget: int) -> int:
    index = 0
    for i, step in enumerate(steps):
        if step <= budget:
            index = i
    return index


def snapshots(curve: Curve, budgets: Sequence[int] = DEFAULT_BUDGETS) -> list[dict[str, Any]]:
    """`value_at` for each budget, as JSON rows {"budget", "step" (the evaluated step used), "value"}.
    A BestCurve row also gives the attacker's LR there ("lr")."""
    rows = []
    for budget in budgets:
        value = value_at(curve, budget)
        index = _last_at_or_before(curve.steps, operator.index(budget))
        row: dict[str, Any] = {"budget": operator.index(budget), "step": curve.steps[index], "value": value}
        if isinstance(curve, BestCurve):
            row["lr"] = curve.best_lr[index]
        rows.append(row)
    return rows


def area_under(curve: Curve, up_to: int | None = None) -> float:
    """Trapezoidal area under the curve from its first evaluated step to `up_to` (default: the last evaluated
    step), divided by that step span: the mean level of the curve over the budget, comparable across budgets
    and in the units of the values. A budget between two evaluated steps interpolates linearly to it. A zero
    span (one point, or up_to = the first step) gives the value there, the limit of the mean."""
    end = curve.steps[-1] if up_to is None else _check_budget(curve, up_to, "area_under")
    steps, values = curve.steps, curve.values
    start = steps[0]
    if end == start:
        return values[0]
    area = 0.0
    for (s0, v0), (s1, v1) in zip(zip(steps, values), zip(steps[1:], values[1:])):
        if s0 >= end:
            break
        if s1 > end:  # cut the last trapezoid at the budget
            v1 = v0 + (v1 - v0) * (end - s0) / (s1 - s0)
            s1 = end
        area += (s1 - s0) * (v0 + v1) / 2
    return area / (end - start)


def normalised_robustness(p_method: float, p_unlearn_only: float, p_oracle: float) -> float:
    """(P_unlearn_only - P_method) / (P_unlearn_only - P_oracle), with P the attacker-best forget performance
    after the attack (accuracy, or -CE), at one budget or as an area. 0 = relearns like the unlearn-only model,
    1 = like the data-filtered oracle; below 0 relearns more than unlearn-only, above 1 less than the oracle."""
    method = _finite(p_method, "normalised_robustness: p_method")
    unlearn_only = _finite(p_unlearn_only, "normalised_robustness: p_unlearn_only")
    oracle = _finite(p_oracle, "normalised_robustness: p_oracle")
    denominator = unlearn_only - oracle
    if abs(denominator) < EPS:
        raise UserError(
            f"normalised_robustness: the unlearn-only model and the oracle relearn equally at this budget "
            f"(both {unlearn_only:g}), so robustness is undefined there")
    return (unlearn_only - method) / denominator


def robustness_or_none(p_method: float, p_unlearn_only: float, p_oracle: float) -> float | None:
    """`normalised_robustness`, or None where it is undefined (the unlearn-only model and the oracle relearn
    equally)."""
    if abs(p_unlearn_only - p_oracle) < EPS:
        return None
    return normalised_robustness(p_method, p_unlearn_only, p_oracle)


def robustness_summary(curves: Mapping[str, BestCurve], unlearn_only: str, oracle: str,
                       budgets: Sequence[int]) -> dict[str, dict[str, Any]]:
    """For each attacked model (name -> attacker-best curve): the value (and its LR) at each budget and the area up
    to the largest budget, each with robustness normalised between the `unlearn_only` model (0) and the `oracle`
    (1); None, with the reason, where the two relearn equally."""
    for role, name in (("unlearn-only", unlearn_only), ("oracle", oracle)):
        if name not in curves:
            raise UserError(f"the {role} model {name!r} is not among the attacked models: {', '.join(curves)}")

    def normalised(p_method: float, p_unlearn_only: float, p_oracle: float) -> dict[str, Any]:
        value = robustness_or_none(p_method, p_unlearn_only, p_oracle)
        note = None if value is not None else (f"the unlearn-only model and the oracle relearn equally here (both "
                                               f"{p_unlearn_only:g}), so robustness is undefined")
        return {"robustness": value, "note": note}

    up_to = max(budgets)
    summary: dict[str, dict[str, Any]] = {}
    for name, curve in curves.items():
        rows = [{**row, **normalised(row["value"], value_at(curves[unlearn_only], row["budget"]),
                                     value_at(curves[oracle], row["budget"]))} for row in snapshots(curve, budgets)]
        area = area_under(curve, up_to)
        summary[name] = {"before": curve.values[0], "budgets": rows, "area": {
            "up_to": up_to, "value": area,
            **normalised(area, area_under(curves[unlearn_only], up_to), area_under(curves[oracle], up_to))}}
    return summary
