"""The paper's claims R1-R6 (and R7: UNDO against a data filter trained on its labels), decided from a study's
records under one attack kind, with their uncertainty over seeds.

Every claim is a record of `undo.schema.claims` with the claim in words, its decision rule (stated before any
number, worded in `undo.report.rules`), its verdict ("held", "did not hold", "inconclusive" or "not measured"), why
where the verdict needs a reason, and its numbers. R1-R3, R5 and R7 are decided on 95 % Student-t intervals over
seeds (`verdict_from_interval`): a difference between two models is taken per seed (paired: same seed, same data
order), so the interval is that of the paired difference.

Scores are oriented so that higher means more of the capability (accuracy, or minus the cross-entropy), so a
difference of forget scores is in accuracy or in nats of -CE. After an attack, "forget" is the attacker-best value
at the budget; R4 compares retain as shipped with forget after the attack (the defender chooses what it ships, the
attacker what it does to it). Forget scores below a multiple-choice chance level count as chance (`Score.floored`),
as in robustness: lower than guessing is noise, not more forgetting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from undo.analysis.stats import kendall_tau, verdict_from_interval
from undo.report import rules
from undo.report.aggregate import by_model, by_seed, finished, interval, paired, seed_mean
from undo.report.records import floored_area
from undo.schema.claims import (
    R1, R2, R3, R4, R5, R6, R7, AlphaAgainstFilter, AlphaRobustness, Cheapest, Claim, DecidedInterval, DistillKey,
    FamilyComparison, FilterKey, FilterSide, Interval, OracleMatchingKey, PairedKey, ParetoAtBudget, ParetoPoint,
    UndoPoint, Verdict,
)
from undo.schema.report import ModelRecord, Results
from undo.schema.score import Score
from undo.schema.study import Role


def decided(stats: Interval, direction: int = 1) -> Verdict:
    """The verdict of an interval on the claimed side of 0."""
    return verdict_from_interval(stats.mean, stats.half_width, direction)


def all_of(verdicts: list[Verdict]) -> Verdict:
    """Several parts (budgets, families, trends) into one verdict (`rules.ALL_OF_RULE`): held only when every part
    held; did not hold when some part did not hold and none held; not measured when no part was; else
    inconclusive."""
    if not verdicts or all(v == "not measured" for v in verdicts):
        return "not measured"
    if all(v == "held" for v in verdicts):
        return "held"
    if "did not hold" in verdicts and "held" not in verdicts:
        return "did not hold"
    return "inconclusive"


def any_of(verdicts: list[Verdict]) -> Verdict:
    """Alternatives (UNDO's alphas) into one verdict: held when some alternative held; did not hold when every
    measured one did not hold; not measured when none was; else inconclusive."""
    measured = [v for v in verdicts if v != "not measured"]
    if not measured:
        return "not measured"
    if "held" in measured:
        return "held"
    if all(v == "did not hold" for v in measured):
        return "did not hold"
    return "inconclusive"


def reason(verdict: Verdict, intervals: list[Interval], missing: str) -> str | None:
    """Why a verdict is "not measured" (`missing`) or inconclusive for want of seeds; None otherwise."""
    if verdict == "not measured":
        return missing
    if verdict == "inconclusive":
        if all(len(i.seeds) == 1 for i in intervals):
            return rules.ONE_SEED
        if any(not i.seeds for i in intervals):
            return "some of its numbers are not measured"
    return None


def forget_after(kind: str, key: str, score: Score) -> Callable[[ModelRecord], float | None]:
    """Reads a record's attacker-best forget score at a budget (or the area under its curve), floored at chance;
    None where the record was not attacked."""
    def get(r: ModelRecord) -> float | None:
        attack = r.attack(kind)
        if attack is None:
            return None
        if key == "area":
            return floored_area(attack, score, attack.area_up_to)
        return score.floored(attack.at[key].forget)
    return get


def compared(first: list[ModelRecord], second: list[ModelRecord], record: type[PairedKey], names: tuple[str, str],
             keys: list[str], kind: str, score: Score) -> dict[str, PairedKey]:
    """Per budget and for the area: both groups' mean forget score (under `record`'s `names`), their paired per-seed
    difference (first minus second) with its interval, and its verdict (claimed: above 0)."""
    numbers = {}
    for key in keys:
        get = forget_after(kind, key, score)
        difference = interval(paired(first, second, get))
        numbers[key] = record(**{names[0]: seed_mean(first, get), names[1]: seed_mean(second, get)},
                              difference=difference, verdict=decided(difference))
    return numbers


def verdict_of_keys(numbers: dict[str, PairedKey], missing: str) -> tuple[Verdict, str | None]:
    verdict = all_of([n.verdict for n in numbers.values()])
    return verdict, reason(verdict, [n.difference for n in numbers.values()], missing)


def claims(results: Results, kind: str) -> dict[str, Claim]:
    """Every claim this study speaks to under the attack `kind`: claim id -> claim (see the module docstring).
    A claim whose models the study did not make is left out (the report says "not measured")."""
    records, budgets = results.models, results.budgets
    keys = [str(b) for b in budgets]
    score = results.scoring
    floor_note = (f" (forget scores below chance, {100 * score.chance:.0f} %, count as chance)"
                  if score.chance is not None else "")
    units = "accuracy" if not score.relative else "nats of -CE"
    not_attacked = f"no seed has both models attacked ({kind})"

    out: dict[str, Claim] = {}
    # R1: oracle matching.
    fin, rnd = finished(records, Role.ORACLE_MATCH_BASE), finished(records, Role.ORACLE_MATCH_RANDOM)
    if fin and rnd:
        numbers = compared(fin, rnd, OracleMatchingKey, ("finetuned_base", "random_init"), keys + ["area"], kind,
                           score)
        verdict, why = verdict_of_keys(numbers, not_attacked)
        out["R1"] = R1(claim=rules.R1_CLAIM, rule=rules.r1_rule(floor_note, units), score=results.score,
                       verdict=verdict, why=why, numbers=numbers)
    # R2: Unlearn-and-Distill vs unlearn-only, per family.
    r2 = {}
    for family in sorted({r.family for r in records if r.role == Role.DISTILLED}):
        student = finished(records, Role.DISTILLED, family=family)
        teacher = finished(records, Role.TEACHER, family=family)
        if student and teacher:
            numbers = compared(teacher, student, DistillKey, ("unlearn_only", "unlearn_and_distill"), keys + ["area"],
                               kind, score)
            verdict, why = verdict_of_keys(numbers, not_attacked)
            r2[family] = FamilyComparison(verdict=verdict, why=why, numbers=numbers)
    if r2:
        verdict = all_of([v.verdict for v in r2.values()])
        out["R2"] = R2(claim=rules.R2_CLAIM, rule=rules.r2_rule(floor_note, units), score=results.score,
                       verdict=verdict, by_family=r2,
                       why=reason(verdict, [n.difference for v in r2.values() for n in v.numbers.values()],
                                  not_attacked))
    # R3 and R5: UNDO's alpha sweep; the points table gives seed means.
    undo_models = finished(records, Role.UNDO)
    points = []
    for group in by_model(undo_models).values():
        points.append(UndoPoint(
            alpha=group[0].alpha, compute=seed_mean(group, lambda r: r.stage_compute),
            steps=seed_mean(group, lambda r: r.steps),
            robustness={k: seed_mean(group, lambda r, k=k: r.robustness_at(kind, k)) for k in keys + ["area"]},
            retain=seed_mean(group, lambda r: r.metric("retain")),
            labelled_fraction=seed_mean(group, lambda r: r.labelled_fraction)))
    points.sort(key=lambda p: p.alpha)
    unanchored = ("there is no data-filtered oracle to measure compute and robustness against"
                  if not finished(records, Role.ORACLE)
                  else "some of its numbers are not measured: robustness needs the oracle and the unlearn-only "
                       "teacher attacked, and is undefined where the two relearn equally")
    if len(points) >= 2:
        out["R3"] = r3(undo_models, kind, points, unanchored)
    if points:
        out["R5"] = r5(undo_models, kind, unanchored)
    # R4: Pareto frontier of the baselines (retain as shipped vs forget after the attack).
    baselines = [r for r in records if r.role in (Role.UNLEARN, Role.TEACHER) and r.attack(kind) and r.metrics]
    attacked_undo = [r for r in undo_models if r.attack(kind) and r.metrics]
    if baselines and attacked_undo:
        out["R4"] = r4(baselines, attacked_undo, kind, keys, score, floor_note)
    # R6: labels.
    if points:
        out["R6"] = r6(undo_models, points)
    # R7: UNDO against the data filter trained on the same labels.
    budget_matched = [r for r in finished(records, Role.FILTERED) if r.classifier]
    if points and budget_matched:
        out["R7"] = r7(undo_models, budget_matched, kind, keys, score, results.score, floor_note, units,
                       not_attacked)
    return dict(sorted(out.items()))  # R1 to R7


def r3(undo_models: list[ModelRecord], kind: str, points: list[UndoPoint], unanchored: str) -> R3:
    """Per seed, Kendall tau-b of alpha against compute and against robustness (area) across that seed's UNDO
    models; each tau's interval over seeds decides (claimed: above 0)."""
    seeds: dict[int, list[ModelRecord]] = defaultdict(list)
    for r in undo_models:
        seeds[r.seed].append(r)
    taus: dict[str, dict[int, float]] = {"compute": {}, "robustness_area": {}}
    for seed, models in sorted(seeds.items()):
        if len(models) < 2:
            continue  # one alpha of this seed finished: no trend to read
        models.sort(key=lambda r: r.alpha)
        alphas = [r.alpha for r in models]
        series = {"compute": [r.stage_compute for r in models],
                  "robustness_area": [r.robustness_at(kind, "area") for r in models]}
        for name, values in series.items():
            if None not in values:
                # A constant series has no tau-b (`kendall_tau` gives None): no rise, counted as 0.
                taus[name][seed] = kendall_tau(alphas, values) or 0.0
    kendall = {}
    for name, per_seed in taus.items():
        stats = interval(per_seed)
        kendall[name] = DecidedInterval(**stats.model_dump(), verdict=decided(stats))
    verdict = all_of([k.verdict for k in kendall.values()])
    return R3(claim=rules.R3_CLAIM, rule=rules.R3_RULE, verdict=verdict, kendall_tau=kendall, points=points,
              why=reason(verdict, list(kendall.values()), unanchored))


def r4(baselines: list[ModelRecord], undo_models: list[ModelRecord], kind: str, keys: list[str], score: Score,
       floor_note: str) -> R4:
    """At each budget, the share of UNDO models (each seed and alpha) that no baseline of the same seed dominates."""
    by_budget = {}
    for k in ["before", *keys]:
        def point(r: ModelRecord, k=k) -> tuple[float, float]:  # every model here has its metrics and this attack
            forget = r.metrics["forget"] if k == "before" else r.attack(kind).at[k].forget
            return r.metrics["retain"], score.floored(forget)

        rows = {}
        for u in undo_models:
            ur, uf = point(u)
            # Dominated: a baseline keeps at least as much retain and leaves at most as much forget, not a tie.
            dominated_by = [b.id for b in baselines if b.seed == u.seed
                            and point(b)[0] >= ur and point(b)[1] <= uf and point(b) != (ur, uf)]
            rows[f"{u.id} (seed {u.seed})"] = ParetoPoint(retain=ur, forget=uf, dominated_by=dominated_by)
        undominated = sum(not row.dominated_by for row in rows.values())
        by_budget[k] = ParetoAtBudget(undominated=undominated, points=len(rows), share=undominated / len(rows),
                                      by_point=rows)
    held = all(by_budget[k].share > 0.5 for k in keys)
    return R4(claim=rules.R4_CLAIM, rule=rules.r4_rule(floor_note), verdict="held" if held else "did not hold",
              by_budget=by_budget, baselines=sorted({b.id for b in baselines}))


def r5(undo_models: list[ModelRecord], kind: str, unanchored: str) -> R5:
    """Per alpha, UNDO's robustness (area) interval over seeds: does some alpha reach data filtering's 1, and at
    what compute?"""
    by_alpha = sorted((AlphaRobustness(alpha=group[0].alpha,
                                       robustness=interval(by_seed(group, lambda r: r.robustness_at(kind, "area"))),
                                       compute=interval(by_seed(group, lambda r: r.stage_compute)))
                       for group in by_model(undo_models).values()), key=lambda a: a.alpha)
    measured = [a for a in by_alpha if a.robustness.mean is not None]
    reaching = [a for a in measured if a.robustness.half_width is not None
                and a.robustness.mean + a.robustness.half_width >= 1]
    claim = R5(claim=rules.R5_CLAIM, rule=rules.R5_RULE, verdict="not measured", by_alpha=by_alpha,
               reaching_1=[a.alpha for a in reaching],
               strongest=max(measured, key=lambda a: a.robustness.mean).alpha if measured else None)
    if reaching:
        # Cheapest by mean compute; an alpha with no compute measured sorts last.
        cheapest = min(reaching, key=lambda a: (a.compute.mean is None, a.compute.mean or 0.0))
        return claim.model_copy(update={"verdict": "held",
                                        "cheapest": Cheapest(alpha=cheapest.alpha, compute=cheapest.compute.mean)})
    if not measured:
        return claim.model_copy(update={"why": unanchored})
    if any(a.robustness.half_width is None for a in measured):
        return claim.model_copy(update={"verdict": "inconclusive", "why": rules.ONE_SEED})
    return claim.model_copy(update={"verdict": "did not hold"})


def r6(undo_models: list[ModelRecord], points: list[UndoPoint]) -> R6:
    """The largest labelled fraction of an UNDO model's lineage, against 1 % (ours) and the paper's 0.01 %."""
    fractions = [r.labelled_fraction for r in undo_models]
    largest = None if None in fractions else max(fractions)
    claim = R6(claim=rules.R6_CLAIM, rule=rules.R6_RULE, verdict="not measured",
               labelled_fraction={f"{p.alpha:g}": p.labelled_fraction for p in points},  # seed means
               largest=largest, data_filtering=1.0,
               thresholds={"ours": rules.OUR_LABELLED_FRACTION, "paper": rules.PAPER_LABELLED_FRACTION})
    if largest is None:  # no pretraining token count to divide by
        return claim.model_copy(update={
            "why": "the base model's pretraining tokens are unknown (set model.pretraining_tokens)"})
    return claim.model_copy(update={"verdict": "held" if largest < rules.OUR_LABELLED_FRACTION else "did not hold",
                                    "below_ours": largest < rules.OUR_LABELLED_FRACTION,
                                    "below_paper": largest < rules.PAPER_LABELLED_FRACTION})


def r7(undo_models: list[ModelRecord], budget_matched: list[ModelRecord], kind: str, keys: list[str], score: Score,
       score_name: str, floor_note: str, units: str, not_attacked: str) -> R7:
    """Per UNDO alpha, at each attack budget and for the area: does UNDO relearn less than the oracle of a data
    filter whose classifier was trained on exactly that seed's unlearning labels? With each side's compute and
    labelled fraction, so the budgets where UNDO wins can be read off."""
    by_alpha = {}
    for group in by_model(undo_models).values():
        numbers = compared(budget_matched, group, FilterKey, ("budget_matched_filter", "undo"), keys + ["area"], kind,
                           score)
        verdict, why = verdict_of_keys(numbers, not_attacked)
        by_alpha[f"{group[0].alpha:g}"] = AlphaAgainstFilter(
            verdict=verdict, why=why, numbers=numbers,
            beats_at=[k for k, n in numbers.items() if n.verdict == "held"],
            loses_at=[k for k, n in numbers.items() if n.verdict == "did not hold"],
            compute=seed_mean(group, lambda r: r.compute),
            labelled_fraction=seed_mean(group, lambda r: r.labelled_fraction))
    by_alpha = dict(sorted(by_alpha.items(), key=lambda item: float(item[0])))
    verdict = any_of([a.verdict for a in by_alpha.values()])
    return R7(claim=rules.R7_CLAIM, rule=rules.r7_rule(floor_note, units), score=score_name, verdict=verdict,
              by_alpha=by_alpha,
              filter=FilterSide(compute=seed_mean(budget_matched, lambda r: r.compute),
                                labelled_fraction=seed_mean(budget_matched, lambda r: r.labelled_fraction),
                                precision=seed_mean(budget_matched, lambda r: r.classifier.precision),
                                recall=seed_mean(budget_matched, lambda r: r.classifier.recall),
                                forget_removed=seed_mean(budget_matched, lambda r: r.filter_removed)),
              why=reason(verdict, [n.difference for a in by_alpha.values() for n in a.numbers.values()],
                         not_attacked))
