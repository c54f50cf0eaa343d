"""`study.rounds` (the responsive loop: unlearn what one observes, round after round, then distil once) against the
study's one combined unlearning of the same family, then the same distillations.

Each model made after the rounds is paired with the same model made after the combined unlearning (the
unlearn-only teacher, Unlearn-and-Distill, UNDO at each alpha), seed by seed: both face the same attack (same
data, same order, same LR grid), so the per-seed difference of attacker-best forget scores is paired, as in the
claims. Compute and labels are compared along each model's whole lineage: a round's run starts from the previous
round's teacher, so its FLOPs and labelled tokens add to that teacher's.
"""

from __future__ import annotations

from undo.report.aggregate import by_seed, finished, interval, paired, seed_mean
from undo.report.claims import decided, forget_after
from undo.schema.report import ModelRecord, Results, RoundsComparison, RoundsKey, RoundsPair
from undo.schema.study import Role


def pairs_of(records: list[ModelRecord], family: str,
             last: int) -> list[tuple[str, list[ModelRecord], list[ModelRecord]]]:
    """(what both are, the rounds' records, the combined unlearning's records) for each model made both ways; the
    rounds' teacher is the one after round `last`."""
    out = [("unlearn-only teacher", finished(records, Role.ROUND_TEACHER, family=family, round=last),
            finished(records, Role.TEACHER, family=family)),
           ("Unlearn-and-Distill", finished(records, Role.ROUNDS_DISTILLED, family=family),
            finished(records, Role.DISTILLED, family=family))]
    for alpha in sorted({r.alpha for r in records if r.role == Role.ROUNDS_UNDO}):
        out.append((f"UNDO a={alpha:g}", finished(records, Role.ROUNDS_UNDO, family=family, alpha=alpha),
                    finished(records, Role.UNDO, family=family, alpha=alpha)))
    return [(name, rounds, combined) for name, rounds, combined in out if rounds and combined]


def ratio(first: list[ModelRecord], second: list[ModelRecord], get) -> dict[int, float]:
    """Per seed, `get(first) / get(second)`, over the seeds where both are measured (and the second is not 0)."""
    a, b = by_seed(first, get), by_seed(second, get)
    return {seed: a[seed] / b[seed] for seed in sorted(a.keys() & b.keys()) if b[seed]}


def lineage_flops(r: ModelRecord) -> float | None:
    return None if r.accounting is None else r.accounting.lineage_flops


def labelled_tokens(r: ModelRecord) -> float | None:
    return None if r.accounting is None else r.accounting.labelled_tokens


def rounds_comparison(results: Results) -> RoundsComparison | None:
    """The comparison, or None for a study without rounds (or whose rounds made no model yet)."""
    family = next((r.family for r in results.models if r.role == Role.ROUND_TEACHER), None)
    if not results.rounds or family is None:
        return None
    records, score = results.models, results.scoring
    keys = [*(str(b) for b in results.budgets), "area"]
    pairs: dict[str, list[RoundsPair]] = {}
    for kind in results.attack_kinds:
        pairs[kind] = []
        for name, rounds, combined in pairs_of(records, family, len(results.rounds)):
            numbers = {}
            for key in keys:
                get = forget_after(kind, key, score)
                difference = interval(paired(rounds, combined, get))
                numbers[key] = RoundsKey(rounds=seed_mean(rounds, get), combined=seed_mean(combined, get),
                                         difference=difference, verdict=decided(difference))
            pairs[kind].append(RoundsPair(
                model=name, rounds=rounds[0].id, combined=combined[0].id, forget_after=numbers,
                lineage_flops_ratio=interval(ratio(rounds, combined, lineage_flops)),
                labelled_tokens_ratio=interval(ratio(rounds, combined, labelled_tokens))))
    return RoundsComparison(family=family, rounds=results.rounds, pairs=pairs)
