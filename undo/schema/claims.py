"""The paper's claims as records: what each claim says, its decision rule, its verdict and the numbers it was
decided on (`undo.report.claims` decides them; `undo.report.rules` words the rules).

Every claim has `claim` (in words), `rule` (stated before any number), `verdict` and, where the verdict needs a
reason, `why`. The numbers differ per claim: R1, R2 and R7 compare two groups per attack budget (`*Key` records
with both seed means and their paired per-seed difference); R3 reads Kendall's tau over UNDO's alphas; R4 a Pareto
frontier; R5 robustness intervals per alpha; R6 labelled fractions. An interval over seeds is an `Interval`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_serializer

Verdict = Literal["held", "did not hold", "inconclusive", "not measured"]


class Interval(BaseModel):
    """A mean over seeds and the half-width of its 95 % Student-t interval (None with one seed), with the values."""

    mean: float | None
    half_width: float | None
    seeds: list[int]
    per_seed: list[float]


class DecidedInterval(Interval):
    verdict: Verdict


class Decided(BaseModel):
    """A verdict, with why where it needs a reason. Optional parts (`why`, and a subclass's `OPTIONAL`) are left
    out of the JSON when there is none, as results.json has always written them."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("why",)

    verdict: Verdict
    why: str | None = None

    @model_serializer(mode="wrap")
    def _optional_parts_only_when_given(self, handler) -> dict[str, Any]:
        data = handler(self)
        for name in self.OPTIONAL:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class Claim(Decided):
    id: str
    claim: str
    rule: str


class PairedKey(BaseModel):
    """One key (an attack budget, or "area") of a paired comparison: the per-seed difference, first group minus
    second, with its interval and verdict (claimed: above 0). Subclasses name the two groups' seed means."""

    difference: Interval
    verdict: Verdict


class OracleMatchingKey(PairedKey):
    finetuned_base: float | None
    random_init: float | None


class DistillKey(PairedKey):
    unlearn_only: float | None
    unlearn_and_distill: float | None


class FilterKey(PairedKey):
    budget_matched_filter: float | None
    undo: float | None


class R1(Claim):
    id: Literal["R1"] = "R1"
    score: str
    numbers: dict[str, OracleMatchingKey]


class FamilyComparison(Decided):
    numbers: dict[str, DistillKey]


class R2(Claim):
    id: Literal["R2"] = "R2"
    score: str
    by_family: dict[str, FamilyComparison]


class UndoPoint(BaseModel):
    """UNDO at one alpha, seed means."""

    alpha: float | None
    compute: float | None  # share of the oracle's pretraining FLOPs
    steps: float | None
    robustness: dict[str, float | None]  # budget or "area" -> robustness
    retain: float | None
    labelled_fraction: float | None


class R3(Claim):
    id: Literal["R3"] = "R3"
    kendall_tau: dict[str, DecidedInterval]  # "compute", "robustness_area"
    points: list[UndoPoint]


class ParetoPoint(BaseModel):
    retain: float
    forget: float
    dominated_by: list[str]


class ParetoAtBudget(BaseModel):
    undominated: int
    points: int
    share: float
    by_point: dict[str, ParetoPoint]


class R4(Claim):
    id: Literal["R4"] = "R4"
    by_budget: dict[str, ParetoAtBudget]  # "before" and each budget
    baselines: list[str]


class AlphaRobustness(BaseModel):
    alpha: float | None
    robustness: Interval
    compute: Interval


class Cheapest(BaseModel):
    alpha: float | None
    compute: float | None


class R5(Claim):
    OPTIONAL: ClassVar[tuple[str, ...]] = ("why", "cheapest")

    id: Literal["R5"] = "R5"
    by_alpha: list[AlphaRobustness]
    reaching_1: list[float | None]
    strongest: float | None
    cheapest: Cheapest | None = None


class R6(Claim):
    OPTIONAL: ClassVar[tuple[str, ...]] = ("why", "below_ours", "below_paper")

    id: Literal["R6"] = "R6"
    labelled_fraction: dict[str, float | None]  # alpha -> seed mean
    largest: float | None
    data_filtering: float
    thresholds: dict[str, float]
    below_ours: bool | None = None
    below_paper: bool | None = None


class AlphaAgainstFilter(Decided):
    numbers: dict[str, FilterKey]
    beats_at: list[str]
    loses_at: list[str]
    compute: float | None
    labelled_fraction: float | None


class FilterSide(BaseModel):
    compute: float | None
    labelled_fraction: float | None
    precision: float | None
    recall: float | None
    forget_removed: float | None


class R7(Claim):
    id: Literal["R7"] = "R7"
    score: str
    by_alpha: dict[str, AlphaAgainstFilter]
    filter: FilterSide


AnyClaim = Annotated[R1 | R2 | R3 | R4 | R5 | R6 | R7, Field(discriminator="id")]
