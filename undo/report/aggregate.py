"""Aggregation over a study's records, one implementation for the claims, the figures and the tables: which records
form a model (its seeds), the values a reader takes from them per seed, seed means, paired differences and 95 %
Student-t intervals over seeds, and the seed-mean attacker-best curve.

A reader (`get`) returns None where a record has no such number (`ModelRecord.metric`, `.forget_at`, ...); it is then
left out. Nothing here catches an error: a reader that fails is a bug and stops the report.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from undo.analysis.stats import mean_ci
from undo.schema.claims import Interval
from undo.schema.errors import UserError
from undo.schema.report import ModelRecord
from undo.schema.score import Score
from undo.schema.study import Role

Get = Callable[[ModelRecord], float | None]


def finished(records: Iterable[ModelRecord], role: Role, **match: Any) -> list[ModelRecord]:
    """The finished models of one role (skipped ones have no artifact), optionally matching fields."""
    return [r for r in records
            if r.role == role and r.artifact and all(getattr(r, k) == v for k, v in match.items())]


def by_model(records: Iterable[ModelRecord]) -> dict[str, list[ModelRecord]]:
    """Records split by model id: one list of seeds per model, in first-seen order."""
    groups: dict[str, list[ModelRecord]] = {}
    for r in records:
        groups.setdefault(r.id, []).append(r)
    return groups


def grouped(records: Iterable[ModelRecord], roles: Iterable[Role]) -> list[list[ModelRecord]]:
    """Finished records of these roles, one list (of seeds) per (role, model)."""
    roles = set(roles)
    groups: dict[tuple, list[ModelRecord]] = {}
    for r in records:
        if r.role in roles and r.artifact:
            groups.setdefault((r.role, r.id), []).append(r)
    return list(groups.values())


def by_seed(group: Iterable[ModelRecord], get: Get) -> dict[int, float]:
    """What `get` reads from each record, by seed (records where it is None are left out)."""
    values = {}
    for r in group:
        value = get(r)
        if value is not None:
            values[r.seed] = value
    return values


def seed_mean(group: Iterable[ModelRecord], get: Get) -> float | None:
    values = list(by_seed(group, get).values())
    return statistics.fmean(values) if values else None


def paired(first: Iterable[ModelRecord], second: Iterable[ModelRecord], get: Get) -> dict[int, float]:
    """Per seed, `get(first) - get(second)`, over the seeds where both are measured."""
    a, b = by_seed(first, get), by_seed(second, get)
    return {seed: a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())}


def interval(per_seed: dict[int, float]) -> Interval:
    """The mean and the half-width of its 95 % t-interval over seeds (None with one seed), and the values."""
    seeds = sorted(per_seed)
    values = [per_seed[s] for s in seeds]
    mean, half = mean_ci(values)
    return Interval(mean=mean, half_width=half, seeds=seeds, per_seed=values)


def seed_interval(group: Iterable[ModelRecord], get: Get, scale: float = 1.0) -> tuple[float | None, float | None]:
    """The seed mean of what `get` reads (times `scale`) and the half-width of its t-interval (None with one seed)."""
    mean, half = mean_ci(list(by_seed(group, get).values()))
    return (None if mean is None else scale * mean), (None if half is None else scale * half)


def mean_curve(group: list[ModelRecord], kind: str, score: Score) -> tuple[list[int], list[float], list | None] | None:
    """The attacker-best curve (as shown) of a model: steps, the mean over seeds and the interval's half-width per
    step (None with one seed); None when no seed was attacked."""
    curves = [r.attack(kind).best for r in group if r.attack(kind)]
    if not curves:
        return None
    steps = curves[0].steps
    if any(c.steps != steps for c in curves):
        raise UserError("attack curves of one model differ in their evaluated steps across seeds; use one attack "
                        "config for every seed")
    stats = [mean_ci([score.shown(v) for v in values]) for values in zip(*(c.values for c in curves))]
    means = [m for m, _ in stats]
    halves = [h for _, h in stats] if len(curves) > 1 else None
    return steps, means, halves
