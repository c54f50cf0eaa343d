import json
import math

import numpy as np
import pytest

from undo.schema.errors import UserError
from undo.schema.curves import Snapshot
from undo.analysis.robustness import (BestCurve, Curve, RetainCap, area_under, attacker_best, normalised_robustness,
                             snapshots, value_at)

STEPS = [0, 10, 20, 30]


def grid():
    """Three LRs on the same steps. Per step the winner is: 0: tie of all (smallest LR), 10: 1e-4,
    20: tie of 1e-5 and 1e-3 (smaller LR), 30: 1e-3. Inserted out of order on purpose."""
    return {
        1e-3: Curve(STEPS, [0.1, 0.2, 0.6, 0.9]),
        1e-5: Curve(STEPS, [0.1, 0.3, 0.6, 0.4]),
        1e-4: Curve(STEPS, [0.1, 0.5, 0.5, 0.7]),
    }


# --- Curve validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, values, hint", [
    ([0, 10], [0.1], "2 steps but 1 values"),
    ([0, 10, 10], [0.1, 0.2, 0.3], "strictly increasing, got 10 then 10"),
    ([0, 20, 10], [0.1, 0.2, 0.3], "strictly increasing, got 20 then 10"),
    ([0, 10], [0.1, math.nan], "finite number"),
    ([0, 10], [0.1, math.inf], "finite number"),
    ([0, 10], [0.1, "x"], "expected a number"),
    ([0, 1.5], [0.1, 0.2], "integers"),
    ([-5, 0], [0.1, 0.2], ">= 0"),
    ([], [], "no points"),
])
def test_curve_validation_one_line(steps, values, hint):
    with pytest.raises(UserError) as err:
        Curve(steps, values)
    assert hint in str(err.value) and "\n" not in str(err.value)


def test_curve_normalises_numpy_to_plain_json():
    curve = Curve(np.array([0, 5]), np.array([0.25, 0.5], dtype=np.float32))
    assert curve.steps == [0, 5] and curve.values == [0.25, 0.5]
    assert type(curve.steps[0]) is int and type(curve.values[0]) is float
    assert json.loads(json.dumps(curve.to_dict())) == {"steps": [0, 5], "values": [0.25, 0.5]}


# --- attacker_best ------------------------------------------------------------------------------------------

def test_attacker_best_is_per_step_max_with_argmax_lr_and_smaller_lr_on_ties():
    best = attacker_best(grid())
    assert best.steps == STEPS
    assert best.values == [0.1, 0.5, 0.6, 0.9]
    assert best.best_lr == [1e-5, 1e-4, 1e-5, 1e-3]
    assert best.retain_cap is None
    # Independent check against numpy: max over the grid per step.
    curves = grid()
    assert best.values == list(np.max([c.values for c in curves.values()], axis=0))


def test_attacker_best_single_lr_is_that_curve():
    best = attacker_best({3e-4: Curve([0, 5], [0.2, 0.1])})
    assert best.values == [0.2, 0.1] and best.best_lr == [3e-4, 3e-4]


def test_attacker_best_with_negative_ce_picks_lowest_ce():
    ce = {1e-4: [3.0, 2.0], 1e-3: [3.0, 2.5]}
    best = attacker_best({lr: Curve([0, 5], [-v for v in ce[lr]]) for lr in ce})
    assert best.values == [-3.0, -2.0] and best.best_lr == [1e-4, 1e-4]


def test_attacker_best_mismatched_steps_names_the_lrs():
    curves = grid()
    curves[1e-3] = Curve([0, 10, 20, 40], [0.1, 0.2, 0.3, 0.4])
    curves[1e-4] = Curve([0, 10, 20], [0.1, 0.2, 0.3])
    with pytest.raises(UserError) as err:
        attacker_best(curves)
    message = str(err.value)
    assert "same steps" in message and "\n" not in message
    assert "lr 0.0001, 0.001 differ from lr 1e-05" in message


@pytest.mark.parametrize("curves, hint", [
    ({}, "no learning rates"),
    ({-1e-3: Curve([0], [0.1])}, "positive finite"),
    ({math.nan: Curve([0], [0.1])}, "positive finite"),
    ({1e-3: [0.1]}, "not a Curve"),
])
def test_attacker_best_rejects_bad_grids(curves, hint):
    with pytest.raises(UserError, match=hint):
        attacker_best(curves)


def test_best_curve_round_trips_through_json():
    best = attacker_best(grid(), retain_curves=retain_grid(), max_retain_drop=0.1)
    data = json.loads(json.dumps(best.to_dict()))
    again = BestCurve.from_dict(data)
    assert again == best
    assert data["retain_cap"]["removed_points"] == 3


# --- retain cap ---------------------------------------------------------------------------------------------

def retain_grid():
    """Retain curves for grid(), step 0 = 0.8. With a cap of 0.1 (drop > 0.1 removed):
    1e-3 loses steps 20 (drop 0.3) and 30 (drop 0.5); 1e-4 loses step 30 (drop 0.2); 1e-5 keeps all;
    1e-4 at step 20 drops exactly 0.1 (0.8 - 0.7 in floating point), which is allowed."""
    return {
        1e-3: Curve(STEPS, [0.8, 0.75, 0.5, 0.3]),
        1e-4: Curve(STEPS, [0.8, 0.8, 0.7, 0.6]),
        1e-5: Curve(STEPS, [0.8, 0.8, 0.8, 0.79]),
    }


def test_retain_cap_removes_exactly_the_damaging_points():
    best = attacker_best(grid(), retain_curves=retain_grid(), max_retain_drop=0.1)
    cap = best.retain_cap
    assert isinstance(cap, RetainCap)
    assert cap.max_retain_drop == 0.1
    assert cap.removed == {1e-3: [20, 30], 1e-4: [30]}
    assert cap.removed_points == 3
    assert cap.steps_without_valid_lr == []
    # Step 20: 1e-3 (0.6) is gone, 1e-5 (0.6) still wins. Step 30: 1e-3 (0.9) and 1e-4 (0.7) gone, 1e-5 (0.4).
    assert best.values == [0.1, 0.5, 0.6, 0.4]
    assert best.best_lr == [1e-5, 1e-4, 1e-5, 1e-5]
    uncapped = attacker_best(grid())
    assert uncapped.values[3] == 0.9 and uncapped.best_lr[3] == 1e-3


def test_retain_cap_loose_enough_removes_nothing():
    best = attacker_best(grid(), retain_curves=retain_grid(), max_retain_drop=0.5)
    assert best.retain_cap.removed_points == 0
    assert best.values == attacker_best(grid()).values


def test_retain_cap_step_where_every_lr_is_removed_falls_back_to_step_zero():
    curves = {1e-4: Curve([0, 5, 10], [0.1, 0.3, 0.5]), 1e-3: Curve([0, 5, 10], [0.2, 0.6, 0.9])}
    retain = {1e-4: Curve([0, 5, 10], [0.8, 0.8, 0.5]), 1e-3: Curve([0, 5, 10], [0.8, 0.4, 0.4])}
    best = attacker_best(curves, retain_curves=retain, max_retain_drop=0.05)
    assert best.values == [0.2, 0.3, 0.2]
    assert best.best_lr == [1e-3, 1e-4, None]
    assert best.retain_cap.steps_without_valid_lr == [10]
    assert best.retain_cap.removed == {1e-4: [10], 1e-3: [5, 10]}


@pytest.mark.parametrize("change, hint", [
    (lambda r, d: (r, None), "needs both"),
    (lambda r, d: (None, 0.1), "needs both"),
    (lambda r, d: (r, -0.1), ">= 0"),
    (lambda r, d: (r, math.nan), "finite"),
    (lambda r, d: ({k: v for k, v in r.items() if k != 1e-4}, d), "must match"),
    (lambda r, d: ({**r, 1e-4: Curve([0, 10, 20], [0.8, 0.8, 0.8])}, d), "not evaluated at"),
])
def test_retain_cap_rejects_bad_inputs(change, hint):
    retain, drop = change(retain_grid(), 0.1)
    with pytest.raises(UserError, match=hint):
        attacker_best(grid(), retain_curves=retain, max_retain_drop=drop)


def test_retain_cap_needs_step_zero():
    curves = {1e-3: Curve([5, 10], [0.1, 0.2])}
    with pytest.raises(UserError, match="from step 0"):
        attacker_best(curves, retain_curves={1e-3: Curve([5, 10], [0.8, 0.8])}, max_retain_drop=0.1)


# --- value_at, snapshots ------------------------------------------------------------------------------------

def test_value_at_picks_last_evaluated_step_at_or_before_budget():
    curve = Curve([0, 5, 40, 45, 500], [0.0, 0.1, 0.4, 0.45, 0.9])
    assert value_at(curve, 0) == 0.0
    assert value_at(curve, 4) == 0.0
    assert value_at(curve, 5) == 0.1
    assert value_at(curve, 39) == 0.1
    assert value_at(curve, 40) == 0.4
    assert value_at(curve, 44) == 0.4
    assert value_at(curve, 500) == 0.9


def test_value_at_refuses_budgets_outside_the_attack():
    curve = Curve([10, 20], [0.1, 0.2])
    with pytest.raises(UserError, match="before the first evaluated step 10"):
        value_at(curve, 9)
    with pytest.raises(UserError, match="past the end of the attack"):
        value_at(curve, 21)
    with pytest.raises(UserError, match="whole number"):
        value_at(curve, 12.5)


def test_snapshots_default_budgets_record_step_and_lr():
    steps = list(range(0, 511, 30))  # 40 and 500 are not evaluated: the snapshots use steps 30 and 480
    forget = {1e-4: Curve(steps, [s / 1000 for s in steps]), 1e-3: Curve(steps, [0.05] * len(steps))}
    rows = snapshots(attacker_best(forget))
    assert rows == [Snapshot(budget=40, step=30, value=0.05, lr=1e-3), Snapshot(budget=500, step=480, value=0.48, lr=1e-4)]
    assert [Snapshot.model_validate_json(row.model_dump_json()) for row in rows] == rows
    assert snapshots(Curve([0, 10], [0.1, 0.2]), budgets=[10]) == [Snapshot(budget=10, step=10, value=0.2)]
    # Tokens are those read by the evaluated step the value is taken at, not by the budget (issue 28, bug 6).
    assert snapshots(Curve([0, 10, 20], [0.1, 0.2, 0.3]), budgets=[15], tokens_per_step=4)[0].tokens == 40


# --- area_under ---------------------------------------------------------------------------------------------

def test_area_of_linear_curve_is_its_mean_level():
    # v = 0.2 + 0.001 * s on [0, 100]: mean = 0.2 + 0.001 * 50 = 0.25, exact for the trapezoid rule.
    steps = [0, 20, 50, 100]  # uneven spacing on purpose
    curve = Curve(steps, [0.2 + 0.001 * s for s in steps])
    assert area_under(curve) == pytest.approx(0.25, abs=1e-12)
    # Up to 50: mean over [0, 50] = 0.2 + 0.025.
    assert area_under(curve, up_to=50) == pytest.approx(0.225, abs=1e-12)
    # Up to 80 (between evaluated steps): interpolation keeps it exact: 0.2 + 0.04.
    assert area_under(curve, up_to=80) == pytest.approx(0.24, abs=1e-12)


def test_area_of_step_shaped_curve_by_hand():
    # Trapezoids: [0,10] (0+1)/2*10 = 5; [10,30] (1+1)/2*20 = 20; total 25 over span 30.
    curve = Curve([0, 10, 30], [0.0, 1.0, 1.0])
    assert area_under(curve) == pytest.approx(25 / 30, abs=1e-12)
    assert area_under(curve, up_to=5) == pytest.approx(0.25, abs=1e-12)  # (0 + 0.5) / 2
    # Span starts at the first evaluated step, not at 0.
    assert area_under(Curve([10, 20], [1.0, 3.0])) == pytest.approx(2.0, abs=1e-12)


def test_area_degenerate_and_out_of_range():
    assert area_under(Curve([0], [0.3])) == 0.3
    assert area_under(Curve([0, 10], [0.3, 0.9]), up_to=0) == 0.3
    with pytest.raises(UserError, match="past the end"):
        area_under(Curve([0, 10], [0.3, 0.9]), up_to=11)


# --- normalised_robustness ----------------------------------------------------------------------------------

@pytest.mark.parametrize("p_method, expected", [
    (0.8, 0.0),     # relearns like unlearn-only
    (0.2, 1.0),     # relearns like the oracle
    (0.65, 0.25),   # a quarter of the way from unlearn-only to oracle
    (0.95, -0.25),  # relearns more than unlearn-only
    (0.05, 1.25),   # relearns less than the oracle
])
def test_normalised_robustness_accuracy(p_method, expected):
    assert normalised_robustness(p_method, p_unlearn_only=0.8, p_oracle=0.2) == pytest.approx(expected, abs=1e-12)


def test_normalised_robustness_endpoints_are_exact():
    assert normalised_robustness(0.8, 0.8, 0.2) == 0.0
    assert normalised_robustness(0.2, 0.8, 0.2) == 1.0
    assert normalised_robustness(-2.0, -2.0, -4.0) == 0.0
    assert normalised_robustness(-4.0, -2.0, -4.0) == 1.0


def test_normalised_robustness_with_negative_ce():
    # CE after attack: unlearn-only 2.0 (relearned), oracle 4.0, method 2.5: a quarter of the way.
    assert normalised_robustness(-2.5, -2.0, -4.0) == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("unlearn_only, oracle", [(0.5, 0.5), (0.5, 0.5 + 1e-13)])
def test_normalised_robustness_refuses_zero_denominator(unlearn_only, oracle):
    with pytest.raises(UserError) as err:
        normalised_robustness(0.4, unlearn_only, oracle)
    message = str(err.value)
    assert "unlearn-only model and the oracle relearn equally at this budget" in message
    assert "robustness is undefined" in message and "\n" not in message


def test_normalised_robustness_rejects_non_finite():
    with pytest.raises(UserError, match="finite"):
        normalised_robustness(math.nan, 0.8, 0.2)


def test_pipeline_robustness_at_budget_and_for_area():
    """End to end on hand-made curves: attacker-best per model, then snapshot and area normalised."""
    steps = [0, 20, 40]

    def model(*per_lr):
        return attacker_best({lr: Curve(steps, values) for lr, values in zip([1e-4, 1e-3], per_lr)})

    unlearn_only = model([0.0, 0.5, 0.8], [0.0, 0.6, 0.7])  # best: 0, 0.6, 0.8
    oracle = model([0.0, 0.1, 0.2], [0.0, 0.1, 0.1])        # best: 0, 0.1, 0.2
    method = model([0.0, 0.3, 0.65], [0.0, 0.2, 0.5])       # best: 0, 0.3, 0.65
    at40 = normalised_robustness(*(value_at(c, 40) for c in (method, unlearn_only, oracle)))
    assert at40 == pytest.approx(0.25, abs=1e-12)
    # Areas (span 40): unlearn-only (0+0.6)*10 + (0.6+0.8)*10 = 20 -> 0.5; oracle 4 -> 0.1; method 12.5 -> 0.3125.
    areas = [area_under(c) for c in (method, unlearn_only, oracle)]
    assert areas == pytest.approx([0.3125, 0.5, 0.1], abs=1e-12)
    assert normalised_robustness(*areas) == pytest.approx(0.46875, abs=1e-12)


def test_the_attackers_cost_is_the_first_step_at_the_halfway_target_or_a_lower_bound():
    from undo.analysis.robustness import recovery_target, steps_to_reach

    target = recovery_target(base=0.9, oracle=0.1)
    assert target == pytest.approx(0.5)
    curve = Curve([0, 2, 4, 6], [0.2, 0.45, 0.5, 0.8])
    assert steps_to_reach(curve, target) == (4, True)  # reached exactly at the target, at step 4
    assert steps_to_reach(Curve([0, 2, 4], [0.2, 0.3, 0.49]), target) == (4, False)  # not within the budget
    assert steps_to_reach(Curve([0, 2], [0.7, 0.9]), target) == (0, True)  # no attack needed
    assert recovery_target(base=0.1, oracle=0.1) is None  # nothing to recover
    assert recovery_target(base=-2.0, oracle=-4.0, fraction=0.25) == pytest.approx(-3.5)  # -CE works the same
