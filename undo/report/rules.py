"""The claims and their decision rules in words, kept apart from the code that decides them (`claims.py`): what the
report prints before any number. `floor_note` says how forget scores below a chance level count, `units` what a
difference of scores is measured in."""

from __future__ import annotations

INTERVAL_RULE = ("95 % Student-t interval over seeds: held when it lies above 0, did not hold when below 0, "
                 "inconclusive when it contains 0 or with a single seed (no interval)")
ALL_OF_RULE = ("held when every {part} held, did not hold when some {part} did not hold and none held, else "
               "inconclusive")
ONE_SEED = "a single seed: no interval over seeds to decide on"

PAPER_LABELLED_FRACTION = 1e-4  # the paper: labels for ~0.01 % of the pretraining data
OUR_LABELLED_FRACTION = 1e-2  # ours: 1 %, since our pretraining is tiny (see R6's rule)

R1_CLAIM = ("the base model distilled toward the oracle relearns faster than a random-init student distilled from "
            "the oracle")
R2_CLAIM = "Unlearn-and-Distill relearns more slowly than unlearn-only"
R3_CLAIM = "UNDO's compute and robustness rise with alpha"
R4_CLAIM = "UNDO lies on or beyond the Pareto frontier of the unlearn-only baselines after the attack"
R5_CLAIM = ("UNDO's strongest alpha matches data filtering's robustness (1 by definition) with less than its compute "
            "(the paper: 60-80 %)")
R6_CLAIM = ("UNDO needs labels only for the unlearning step: a small fraction of the pretraining tokens (data "
            "filtering labels all of them)")
R7_CLAIM = ("UNDO relearns less than a data filter trained on the same labels (a classifier fitted on exactly the "
            "documents the unlearning step read, run on the whole pretraining corpus, and the oracle of what it kept)")


def r1_rule(floor_note: str, units: str) -> str:
    return (f"per seed, the attacker-best forget score{floor_note} of the finetuned base minus the random init's (in "
            f"{units}; claimed above 0: the finetuned base relearned more), at each budget and for the area under the "
            f"curve (the keys); each key, on its {INTERVAL_RULE}; R1 overall: " + ALL_OF_RULE.format(part="key"))


def r2_rule(floor_note: str, units: str) -> str:
    return (f"per seed and family, the attacker-best forget score{floor_note} of the unlearn-only teacher minus its "
            f"Unlearn-and-Distill student's (in {units}; claimed above 0: the student relearned less), at each budget "
            f"and for the area (the keys); each key, on its {INTERVAL_RULE}; a family: "
            + ALL_OF_RULE.format(part="key") + "; R2 overall: " + ALL_OF_RULE.format(part="family"))


R3_RULE = ("per seed, Kendall tau-b across that seed's UNDO alphas of alpha vs compute (share of the oracle's "
           "pretraining FLOPs) and of alpha vs robustness (area; a constant series counts as tau 0, no rise); each "
           f"tau, on its {INTERVAL_RULE}; R3 overall: " + ALL_OF_RULE.format(part="tau"))


def r4_rule(floor_note: str) -> str:
    return ("at each budget, every UNDO model (each seed and alpha) against the attacked unlearn-only runs of the "
            "same seed, with retain as shipped (higher is better) and attacker-best forget after the attack"
            f"{floor_note} (lower is better): a point is dominated when some baseline has retain >= and forget <= it, "
            "not both equal; held when more than half of the UNDO points are undominated at every budget, else did "
            "not hold (the share is the result; no interval)")


R5_RULE = ("per alpha, the 95 % Student-t interval over seeds of UNDO's robustness (area; 0 = unlearn-only, 1 = the "
           "data-filtered oracle); held when some alpha's interval reaches 1 (upper end >= 1: not distinguishable from "
           "data filtering, or beyond), reported at the mean compute (share of the oracle's pretraining FLOPs) of the "
           "cheapest such alpha; did not hold when no alpha's interval reaches 1; inconclusive with a single seed "
           "(no interval)")
R6_RULE = ("the largest labelled fraction of an UNDO model's lineage over alphas and seeds (labelled tokens, read only "
           "by the unlearning step, / the base model's pretraining tokens); held when below 1 %, our threshold rather "
           "than the paper's < 0.01 %, because this study's pretraining is tiny and so its unlearning step is a large "
           "share of it; also compared with the paper's 0.01 %")


def r7_rule(floor_note: str, units: str) -> str:
    return (f"per seed and alpha, the attacker-best forget score{floor_note} of the budget-matched filter's oracle "
            f"minus UNDO's (in {units}; claimed above 0: UNDO relearned less), at each budget and for the area (the "
            f"keys); each key, on its {INTERVAL_RULE}; an alpha: " + ALL_OF_RULE.format(part="key")
            + "; R7 overall: held when some alpha held, did not hold when every alpha did not hold, else inconclusive")
