"""The paper's claims R1-R6, decided from a study's records under one attack kind (None = not measurable here).

After an attack, "forget" is the attacker-best value at the budget; R4 compares retain as shipped with forget after
the attack (the defender chooses what it ships, the attacker what it does to it).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from undo.analysis.stats import kendall_tau
from undo.report.records import ModelRecord, Results
from undo.study.manifest import Role


def group_of(records: list[ModelRecord], role: Role, **match) -> list[ModelRecord]:
    """The finished models of one role (skipped ones have no artifact), optionally matching fields."""
    return [r for r in records
            if r.role == role and r.artifact and all(getattr(r, k) == v for k, v in match.items())]


def per_id(records: list[ModelRecord], role: Role, **match) -> dict[str, list[ModelRecord]]:
    """`group_of`, split by model id (one list of seeds per model)."""
    groups: dict[str, list[ModelRecord]] = defaultdict(list)
    for r in group_of(records, role, **match):
        groups[r.id].append(r)
    return groups


def seed_mean(group: list[ModelRecord], get: Callable[[ModelRecord], float | None]) -> float | None:
    """The mean over seeds of what `get` reads (records where it is missing are left out)."""
    values = []
    for r in group:
        try:
            values.append(get(r))
        except (KeyError, TypeError, AttributeError):
            pass
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def claims(results: Results, kind: str) -> dict[str, Any]:
    records, budgets = results.models, results.budgets
    keys = [str(b) for b in budgets]

    def attacked(group: list[ModelRecord]) -> bool:
        return all(r.attack(kind) for r in group)

    def forget_at(group: list[ModelRecord], key: str) -> float | None:
        if key == "area":
            return seed_mean(group, lambda r: r.attack(kind).area)
        return seed_mean(group, lambda r: r.attack(kind).at[key].forget)

    out: dict[str, Any] = {}
    # R1: oracle matching.
    fin, rnd = group_of(records, Role.ORACLE_MATCH_BASE), group_of(records, Role.ORACLE_MATCH_RANDOM)
    if fin and rnd and attacked(fin + rnd):
        numbers = {k: {"finetuned_base": forget_at(fin, k), "random_init": forget_at(rnd, k)} for k in keys + ["area"]}
        out["R1"] = {"claim": "the base model distilled toward the oracle relearns faster than a random-init "
                              "student distilled from the oracle",
                     "held": all(v["finetuned_base"] > v["random_init"] for v in numbers.values()), "numbers": numbers}
    # R2: Unlearn-and-Distill vs unlearn-only, per family.
    r2 = {}
    for family in sorted({r.family for r in records if r.role == Role.DISTILLED}):
        student = group_of(records, Role.DISTILLED, family=family)
        teacher = group_of(records, Role.TEACHER, family=family)
        if student and teacher and attacked(student + teacher):
            numbers = {k: {"unlearn_only": forget_at(teacher, k), "unlearn_and_distill": forget_at(student, k)}
                       for k in keys + ["area"]}
            r2[family] = {"held": all(v["unlearn_and_distill"] < v["unlearn_only"] for v in numbers.values()),
                          "numbers": numbers}
    if r2:
        out["R2"] = {"claim": "Unlearn-and-Distill relearns more slowly than unlearn-only", "by_family": r2,
                     "held": all(v["held"] for v in r2.values())}
    # R3 and R5: UNDO's alpha sweep.
    points = []
    for group in per_id(records, Role.UNDO).values():
        points.append({"alpha": group[0].alpha,
                       "compute": seed_mean(group, lambda r: r.accounting.stage_fraction_of_oracle),
                       "steps": seed_mean(group, lambda r: r.steps),
                       "robustness": {k: seed_mean(group, lambda r, k=k: r.robustness[kind][k])
                                      for k in keys + ["area"]},
                       "retain": seed_mean(group, lambda r: r.metrics["retain"]),
                       "labelled_fraction": seed_mean(group, lambda r: r.accounting.labelled_fraction)})
    points.sort(key=lambda p: p["alpha"])
    if len(points) >= 2:
        alphas = [p["alpha"] for p in points]
        computes = [p["compute"] for p in points]
        robust = [p["robustness"]["area"] for p in points]
        measured = all(v is not None for v in computes + robust)
        # Kendall tau-b (ties counted): None when a series is constant, which is no rise either.
        tau_c = kendall_tau(alphas, computes) if measured else None
        tau_r = kendall_tau(alphas, robust) if measured else None
        out["R3"] = {"claim": "UNDO's compute and robustness rise with alpha", "points": points,
                     "kendall_tau": {"compute": tau_c, "robustness_area": tau_r},
                     "held": None if not measured else (tau_c or 0) > 0 and (tau_r or 0) > 0}
        if not measured:
            out["R3"]["undecided_because"] = ("there is no data-filtered oracle to measure compute and robustness "
                                              "against" if not group_of(records, Role.ORACLE)
                                              else "some of its numbers are not measured yet")
    if points and any(p["robustness"]["area"] is not None for p in points):
        strongest = max((p for p in points if p["robustness"]["area"] is not None),
                        key=lambda p: p["robustness"]["area"])
        out["R5"] = {"claim": "UNDO's strongest alpha against data filtering (robustness 1 by definition, compute "
                              "= the oracle's pretraining)", "strongest": strongest,
                     "held": None}  # a comparison to report, not a yes/no claim
    # R4: Pareto frontier of the baselines (retain as shipped vs forget after the attack).
    baselines = [r for r in records if r.role in (Role.UNLEARN, Role.TEACHER) and r.attack(kind) and r.metrics]
    undo_records = [r for r in records if r.role == Role.UNDO and r.attack(kind) and r.metrics]
    if baselines and undo_records:
        r4 = {}
        for k in ["before", *keys]:
            def point(r: ModelRecord, k=k) -> tuple[float, float]:
                forget = r.metrics["forget"] if k == "before" else r.attack(kind).at[k].forget
                return r.metrics["retain"], forget

            rows = {}
            for u in undo_records:
                ur, uf = point(u)
                dominated_by = [b.id for b in baselines if b.seed == u.seed
                                and point(b)[0] >= ur and point(b)[1] <= uf and point(b) != (ur, uf)]
                rows[f"{u.id} (seed {u.seed})"] = {"retain": ur, "forget": uf, "dominated_by": dominated_by}
            r4[k] = rows
        held = {k: any(not v["dominated_by"] for v in rows.values()) for k, rows in r4.items() if k != "before"}
        out["R4"] = {"claim": "UNDO lies on or beyond the Pareto frontier of the unlearn-only baselines after the "
                              "attack", "by_budget": r4, "held_at": held, "held": all(held.values()),
                     "baselines": sorted({b.id for b in baselines})}
    # R6: labels.
    if points:
        out["R6"] = {"claim": "UNDO needs labels only for the unlearning step: a small fraction of the pretraining "
                              "tokens (data filtering labels all of them)",
                     "labelled_fraction": {f"{p['alpha']:g}": p["labelled_fraction"] for p in points},
                     "data_filtering": 1.0,
                     "held": None if any(p["labelled_fraction"] is None for p in points)  # no pretraining count
                     else all(p["labelled_fraction"] < 1.0 for p in points)}
        if out["R6"]["held"] is None:
            out["R6"]["undecided_because"] = ("the base model's pretraining tokens are unknown (set "
                                              "model.pretraining_tokens)")
    return out
