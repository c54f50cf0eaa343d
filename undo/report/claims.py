"""The paper's claims R1-R6 (and R7: UNDO against a data filter trained on its labels), decided from a study's
records under one attack kind, with their uncertainty over seeds.

Every claim is a JSON-ready dict with the claim in words ("claim"), its decision rule ("rule", stated before any
number), a "verdict" (`Verdict`: "held", "did not hold", "inconclusive" or "not measured"), "why" where the
verdict needs a reason, and its numbers. R1-R3 and R5 are decided on 95 % Student-t intervals over seeds
(`verdict_from_interval`): a difference between two models is taken per seed (paired: same seed, same data
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
from typing import Any

from undo.analysis.stats import Verdict, kendall_tau, verdict_from_interval
from undo.report.aggregate import by_model, by_seed, finished, interval, paired, seed_mean
from undo.report.records import floored_area
from undo.schema.report import ModelRecord, Results
from undo.schema.score import Score
from undo.schema.study import Role

PAPER_LABELLED_FRACTION = 1e-4  # the paper: labels for ~0.01 % of the pretraining data
OUR_LABELLED_FRACTION = 1e-2  # ours: 1 %, since our pretraining is tiny (see R6's rule)

INTERVAL_RULE = ("95 % Student-t interval over seeds: held when it lies above 0, did not hold when below 0, "
                 "inconclusive when it contains 0 or with a single seed (no interval)")
ALL_OF_RULE = ("held when every {part} held, did not hold when some {part} did not hold and none held, else "
               "inconclusive")
ONE_SEED = "a single seed: no interval over seeds to decide on"


def decided(stats: dict[str, Any], direction: int = 1) -> Verdict:
    """The verdict of an `interval` on the claimed side of 0."""
    return verdict_from_interval(stats["mean"], stats["half_width"], direction)


def all_of(verdicts: list[Verdict]) -> Verdict:
    """Several parts (budgets, families, trends) into one verdict (`ALL_OF_RULE`): held only when every part held;
    did not hold when some part did not hold and none held; not measured when no part was; else inconclusive."""
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


def reason(verdict: Verdict, intervals: list[dict[str, Any]], missing: str) -> str | None:
    """Why a verdict is "not measured" (`missing`) or inconclusive for want of seeds; None otherwise."""
    if verdict == "not measured":
        return missing
    if verdict == "inconclusive":
        if all(len(i["seeds"]) == 1 for i in intervals):
            return ONE_SEED
        if any(not i["seeds"] for i in intervals):
            return "some of its numbers are not measured"
    return None


def with_reason(claim: dict[str, Any], why: str | None) -> dict[str, Any]:
    return {**claim, "why": why} if why else claim


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


def compared(first: list[ModelRecord], second: list[ModelRecord], names: tuple[str, str], keys: list[str],
             kind: str, score: Score) -> dict[str, dict[str, Any]]:
    """Per budget and for the area: both groups' mean forget score, their paired per-seed difference (first minus
    second) with its interval, and its verdict (claimed: above 0)."""
    numbers = {}
    for key in keys:
        get = forget_after(kind, key, score)
        difference = interval(paired(first, second, get))
        numbers[key] = {names[0]: seed_mean(first, get), names[1]: seed_mean(second, get),
                        "difference": difference, "verdict": decided(difference)}
    return numbers


def verdict_of_keys(numbers: dict[str, dict[str, Any]], missing: str) -> tuple[Verdict, str | None]:
    verdict = all_of([n["verdict"] for n in numbers.values()])
    return verdict, reason(verdict, [n["difference"] for n in numbers.values()], missing)


def claims(results: Results, kind: str) -> dict[str, Any]:
    """Every claim this study speaks to under the attack `kind`: claim id -> claim (see the module docstring).
    A claim whose models the study did not make is left out (the report says "not measured")."""
    records, budgets = results.models, results.budgets
    keys = [str(b) for b in budgets]
    score = results.scoring
    floor_note = (f" (forget scores below chance, {100 * score.chance:.0f} %, count as chance)"
                  if score.chance is not None else "")
    units = "accuracy" if not score.relative else "nats of -CE"
    not_attacked = f"no seed has both models attacked ({kind})"

    out: dict[str, Any] = {}
    # R1: oracle matching.
    fin, rnd = finished(records, Role.ORACLE_MATCH_BASE), finished(records, Role.ORACLE_MATCH_RANDOM)
    if fin and rnd:
        numbers = compared(fin, rnd, ("finetuned_base", "random_init"), keys + ["area"], kind, score)
        verdict, why = verdict_of_keys(numbers, not_attacked)
        out["R1"] = with_reason({
            "claim": "the base model distilled toward the oracle relearns faster than a random-init student "
                     "distilled from the oracle",
            "rule": f"per seed, the attacker-best forget score{floor_note} of the finetuned base minus the random "
                    f"init's (in {units}; claimed above 0: the finetuned base relearned more), at each budget and "
                    f"for the area under the curve (the keys); each key, on its {INTERVAL_RULE}; R1 overall: "
                    + ALL_OF_RULE.format(part="key"),
            "score": results.score, "verdict": verdict, "numbers": numbers}, why)
    # R2: Unlearn-and-Distill vs unlearn-only, per family.
    r2 = {}
    for family in sorted({r.family for r in records if r.role == Role.DISTILLED}):
        student = finished(records, Role.DISTILLED, family=family)
        teacher = finished(records, Role.TEACHER, family=family)
        if student and teacher:
            numbers = compared(teacher, student, ("unlearn_only", "unlearn_and_distill"), keys + ["area"], kind,
                               score)
            verdict, why = verdict_of_keys(numbers, not_attacked)
            r2[family] = with_reason({"verdict": verdict, "numbers": numbers}, why)
    if r2:
        verdict = all_of([v["verdict"] for v in r2.values()])
        out["R2"] = with_reason({
            "claim": "Unlearn-and-Distill relearns more slowly than unlearn-only",
            "rule": f"per seed and family, the attacker-best forget score{floor_note} of the unlearn-only teacher "
                    f"minus its Unlearn-and-Distill student's (in {units}; claimed above 0: the student relearned "
                    f"less), at each budget and for the area (the keys); each key, on its {INTERVAL_RULE}; a "
                    "family: " + ALL_OF_RULE.format(part="key") + "; R2 overall: "
                    + ALL_OF_RULE.format(part="family"),
            "score": results.score, "verdict": verdict, "by_family": r2},
            reason(verdict, [n["difference"] for v in r2.values() for n in v["numbers"].values()], not_attacked))
    # R3 and R5: UNDO's alpha sweep; the points table gives seed means.
    undo_models = finished(records, Role.UNDO)
    points = []
    for group in by_model(finished(records, Role.UNDO)).values():
        points.append({"alpha": group[0].alpha,
                       "compute": seed_mean(group, lambda r: r.stage_compute),
                       "steps": seed_mean(group, lambda r: r.steps),
                       "robustness": {k: seed_mean(group, lambda r, k=k: r.robustness_at(kind, k))
                                      for k in keys + ["area"]},
                       "retain": seed_mean(group, lambda r: r.metric("retain")),
                       "labelled_fraction": seed_mean(group, lambda r: r.labelled_fraction)})
    points.sort(key=lambda p: p["alpha"])
    unanchored = ("there is no data-filtered oracle to measure compute and robustness against"
                  if not finished(records, Role.ORACLE)
                  else "some of its numbers are not measured: robustness needs the oracle and the unlearn-only "
                       "teacher attacked, and is undefined where the two relearn equally")
    if len(points) >= 2:
        out["R3"] = r3(undo_models, kind, points, unanchored)
    if points:
        out["R5"] = r5(records, kind, unanchored)
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
        out["R7"] = r7(records, budget_matched, kind, keys, score, results.score, floor_note, units,
                       not_attacked)
    return dict(sorted(out.items()))  # R1 to R7


def r3(undo_models: list[ModelRecord], kind: str, points: list[dict[str, Any]], unanchored: str) -> dict[str, Any]:
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
        kendall[name] = {**stats, "verdict": decided(stats)}
    verdict = all_of([k["verdict"] for k in kendall.values()])
    return with_reason({
        "claim": "UNDO's compute and robustness rise with alpha",
        "rule": "per seed, Kendall tau-b across that seed's UNDO alphas of alpha vs compute (share of the oracle's "
                "pretraining FLOPs) and of alpha vs robustness (area; a constant series counts as tau 0, no "
                f"rise); each tau, on its {INTERVAL_RULE}; R3 overall: " + ALL_OF_RULE.format(part="tau"),
        "verdict": verdict, "kendall_tau": kendall, "points": points},
        reason(verdict, list(kendall.values()), unanchored))


def r4(baselines: list[ModelRecord], undo_models: list[ModelRecord], kind: str, keys: list[str], score: Score,
       floor_note: str) -> dict[str, Any]:
    """At each budget, the share of UNDO models (each seed and alpha) that no baseline of the same seed dominates."""
    by_budget = {}
    for k in ["before", *keys]:
        def point(r: ModelRecord, k=k) -> tuple[float, float]:
            forget = r.metrics["forget"] if k == "before" else r.attack(kind).at[k].forget
            return r.metrics["retain"], score.floored(forget)

        rows = {}
        for u in undo_models:
            ur, uf = point(u)
            # Dominated: a baseline keeps at least as much retain and leaves at most as much forget, not a tie.
            dominated_by = [b.id for b in baselines if b.seed == u.seed
                            and point(b)[0] >= ur and point(b)[1] <= uf and point(b) != (ur, uf)]
            rows[f"{u.id} (seed {u.seed})"] = {"retain": ur, "forget": uf, "dominated_by": dominated_by}
        undominated = sum(not row["dominated_by"] for row in rows.values())
        by_budget[k] = {"undominated": undominated, "points": len(rows), "share": undominated / len(rows),
                        "by_point": rows}
    held = all(by_budget[k]["share"] > 0.5 for k in keys)
    return {"claim": "UNDO lies on or beyond the Pareto frontier of the unlearn-only baselines after the attack",
            "rule": "at each budget, every UNDO model (each seed and alpha) against the attacked unlearn-only runs "
                    "of the same seed, with retain as shipped (higher is better) and attacker-best forget after "
                    f"the attack{floor_note} (lower is better): a point is dominated when some baseline has retain "
                    ">= and forget <= it, not both equal; held when more than half of the UNDO points are "
                    "undominated at every budget, else did not hold (the share is the result; no interval)",
            "verdict": "held" if held else "did not hold", "by_budget": by_budget,
            "baselines": sorted({b.id for b in baselines})}


def r5(records: list[ModelRecord], kind: str, unanchored: str) -> dict[str, Any]:
    """Per alpha, UNDO's robustness (area) interval over seeds: does some alpha reach data filtering's 1, and at
    what compute?"""
    by_alpha = []
    for group in by_model(finished(records, Role.UNDO)).values():
        by_alpha.append({"alpha": group[0].alpha,
                         "robustness": interval(by_seed(group, lambda r: r.robustness_at(kind, "area"))),
                         "compute": interval(by_seed(group, lambda r: r.stage_compute))})
    by_alpha.sort(key=lambda a: a["alpha"])
    measured = [a for a in by_alpha if a["robustness"]["mean"] is not None]
    reaching = [a for a in measured if a["robustness"]["half_width"] is not None
                and a["robustness"]["mean"] + a["robustness"]["half_width"] >= 1]
    claim: dict[str, Any] = {
        "claim": "UNDO's strongest alpha matches data filtering's robustness (1 by definition) with less than its "
                 "compute (the paper: 60-80 %)",
        "rule": "per alpha, the 95 % Student-t interval over seeds of UNDO's robustness (area; 0 = unlearn-only, "
                "1 = the data-filtered oracle); held when some alpha's interval reaches 1 (upper end >= 1: not "
                "distinguishable from data filtering, or beyond), reported at the mean compute (share of the "
                "oracle's pretraining FLOPs) of the cheapest such alpha; did not hold when no alpha's interval "
                "reaches 1; inconclusive with a single seed (no interval)",
        "by_alpha": by_alpha, "reaching_1": [a["alpha"] for a in reaching],
        "strongest": max(measured, key=lambda a: a["robustness"]["mean"])["alpha"] if measured else None}
    if reaching:
        # Cheapest by mean compute; an alpha with no compute measured sorts last.
        cheapest = min(reaching, key=lambda a: (a["compute"]["mean"] is None, a["compute"]["mean"] or 0.0))
        return {**claim, "verdict": "held", "cheapest": {"alpha": cheapest["alpha"],
                                                         "compute": cheapest["compute"]["mean"]}}
    if not measured:
        return {**claim, "verdict": "not measured", "why": unanchored}
    if any(a["robustness"]["half_width"] is None for a in measured):
        return {**claim, "verdict": "inconclusive", "why": ONE_SEED}
    return {**claim, "verdict": "did not hold"}


def r6(undo_models: list[ModelRecord], points: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest labelled fraction of an UNDO model's lineage, against 1 % (ours) and the paper's 0.01 %."""
    fractions = [r.labelled_fraction for r in undo_models]
    largest = None if None in fractions else max(fractions)
    claim: dict[str, Any] = {
        "claim": "UNDO needs labels only for the unlearning step: a small fraction of the pretraining tokens (data "
                 "filtering labels all of them)",
        "rule": "the largest labelled fraction of an UNDO model's lineage over alphas and seeds (labelled tokens, "
                "read only by the unlearning step, / the base model's pretraining tokens); held when below 1 %, "
                "our threshold rather than the paper's < 0.01 %, because this study's pretraining is tiny and so "
                "its unlearning step is a large share of it; also compared with the paper's 0.01 %",
        "labelled_fraction": {f"{p['alpha']:g}": p["labelled_fraction"] for p in points},  # seed means
        "largest": largest, "data_filtering": 1.0,
        "thresholds": {"ours": OUR_LABELLED_FRACTION, "paper": PAPER_LABELLED_FRACTION}}
    if largest is None:  # no pretraining token count to divide by
        return {**claim, "verdict": "not measured",
                "why": "the base model's pretraining tokens are unknown (set model.pretraining_tokens)"}
    return {**claim, "verdict": "held" if largest < OUR_LABELLED_FRACTION else "did not hold",
            "below_ours": largest < OUR_LABELLED_FRACTION, "below_paper": largest < PAPER_LABELLED_FRACTION}


def r7(records: list[ModelRecord], budget_matched: list[ModelRecord], kind: str, keys: list[str], score: Score,
       score_name: str, floor_note: str, units: str, not_attacked: str) -> dict[str, Any]:
    """Per UNDO alpha, at each attack budget and for the area: does UNDO relearn less than the oracle of a data
    filter whose classifier was trained on exactly that seed's unlearning labels? With each side's compute and
    labelled fraction, so the budgets where UNDO wins can be read off."""
    by_alpha = {}
    for group in by_model(finished(records, Role.UNDO)).values():
        numbers = compared(budget_matched, group, ("budget_matched_filter", "undo"), keys + ["area"], kind, score)
        verdict, why = verdict_of_keys(numbers, not_attacked)
        by_alpha[f"{group[0].alpha:g}"] = with_reason({
            "verdict": verdict, "numbers": numbers,
            "beats_at": [k for k, n in numbers.items() if n["verdict"] == "held"],
            "loses_at": [k for k, n in numbers.items() if n["verdict"] == "did not hold"],
            "compute": seed_mean(group, lambda r: r.compute),
            "labelled_fraction": seed_mean(group, lambda r: r.labelled_fraction)}, why)
    by_alpha = dict(sorted(by_alpha.items(), key=lambda item: float(item[0])))
    verdict = any_of([a["verdict"] for a in by_alpha.values()])
    return with_reason({
        "claim": "UNDO relearns less than a data filter trained on the same labels (a classifier fitted on exactly "
                 "the documents the unlearning step read, run on the whole pretraining corpus, and the oracle of "
                 "what it kept)",
        "rule": f"per seed and alpha, the attacker-best forget score{floor_note} of the budget-matched filter's "
                f"oracle minus UNDO's (in {units}; claimed above 0: UNDO relearned less), at each budget and for the "
                f"area (the keys); each key, on its {INTERVAL_RULE}; an alpha: " + ALL_OF_RULE.format(part="key")
                + "; R7 overall: held when some alpha held, did not hold when every alpha did not hold, else "
                  "inconclusive",
        "score": score_name, "verdict": verdict, "by_alpha": by_alpha,
        "filter": {"compute": seed_mean(budget_matched, lambda r: r.compute),
                   "labelled_fraction": seed_mean(budget_matched, lambda r: r.labelled_fraction),
                   "precision": seed_mean(budget_matched, lambda r: r.classifier.precision),
                   "recall": seed_mean(budget_matched, lambda r: r.classifier.recall),
                   "forget_removed": seed_mean(budget_matched, lambda r: r.filter_removed)}},
        reason(verdict, [n["difference"] for a in by_alpha.values() for n in a["numbers"].values()], not_attacked))
