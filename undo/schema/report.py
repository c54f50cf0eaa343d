"""The report's records: what `undo report` gathers for every model of a study (`ModelRecord`: its evaluation,
accounting, distillation summary and attacks, with robustness), the study's `Results` (what results.json holds), and
the `Accounting` of compute and labels along a model's lineage."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

from undo.schema.claims import AnyClaim, Interval, PairedKey
from undo.schema.curves import BestCurve
from undo.schema.results import HostRecord
from undo.schema.score import Score
from undo.schema.study import Role, TeacherChoice


class Accounting(BaseModel):
    stage_flops: dict[str, int]
    stage_flops_total: int
    stage_fraction_of_oracle: float | None
    lineage: list[str | None]  # artifact names, nearest first
    lineage_flops: int
    lineage_fraction_of_oracle: float | None
    oracle_pretraining_flops: int | None
    labelled_tokens: int | None
    pretraining_tokens: int | None
    labelled_fraction: float | None


class BudgetSnapshot(BaseModel):
    """The attacker-best forget score at a budget: the last evaluated step <= the budget, its LR, and the retain
    score of that LR at that step."""

    forget: float
    step: int
    lr: float | None
    retain_at_best_lr: float | None
    tokens: int
    # Every test-split metric of that LR at that step (e.g. cross-entropies beside the accuracies); empty for an
    # attack whose logs do not hold them.
    metrics: dict[str, float] = {}


class AttackRecord(BaseModel):
    kind: str
    artifact: str
    before: dict[str, float]
    best: BestCurve
    at: dict[str, BudgetSnapshot]  # budget (as text) -> snapshot
    area: float
    area_up_to: int
    wall_time_s: float
    flops_total: int
    tokens_per_step: int = 0
    flops_per_step: int = 0  # of one LR's fine-tune
    lrs_searched: list[float] = []
    lrs_added: list[float] = []  # added at the grid's edges (`attack.extend_grid`)
    edge_at: dict[str, str] = {}  # budget -> "top"/"bottom": the best LR is still an edge there
    single_lr: bool = False


class RecoveryCost(BaseModel):
    """What the attacker-best needs to bring a model's forget score back to `target` (halfway from the oracle's to
    the base model's, before the attack): the first evaluated step at or above it, and the tokens and FLOPs of one
    LR's fine-tune up to there. Not `reached`: the attack's last step, a lower bound. `times_unlearn_only`: steps
    over those of the same family's unlearn-only teacher (same seed and attack kind), where the teacher needed at
    least one step; a lower bound when this model was not reached."""

    target: float
    reached: bool
    steps: int
    tokens: int
    flops: int
    times_unlearn_only: float | None = None
    times_is_lower_bound: bool = False


class DistillSummary(BaseModel):
    init: str
    stopped_early: bool
    stop_step: int | None
    previous_probe: int | None = None  # the first qualifying step lies in (previous_probe, stop_step]
    flops: dict[str, int]
    flops_at_stop: int | None
    teacher_metrics: dict[str, float]
    teacher: str | None


class ClassifierSummary(BaseModel):
    """The classifier behind a classifier-filtered oracle: what it was trained on and how it did on held-out data."""

    training_documents: int  # labelled documents (both sides): the unlearning step's
    precision: float  # on fresh labelled documents, forget = positive
    recall: float
    artifact: str | None = None  # its own artifact (a `filter` stage)
    wall_time_s: float | None = None


class ModelRecord(BaseModel):
    id: str
    role: Role
    seed: int
    family: str | None = None
    alpha: float | None = None
    beta: float | None = None
    lr: float | None = None
    knobs: dict[str, Any] | None = None
    filter_recall: float | None = None  # an imperfect filter's oracle: its configured recall
    round: int | None = None  # a model of `study.rounds`: its round
    filter_removed: float | None = None  # an imperfect filter's oracle: share of forget documents removed
    filter_retain_removed: float | None = None  # ... and of retain documents (a classifier's false positives)
    classifier: ClassifierSummary | None = None  # a classifier filter's oracle: its classifier
    skipped: str | None = None
    artifact: str | None = None
    metrics: dict[str, float] | None = None  # under the study's evaluation set
    wall_time_s: float | None = None
    steps: int | None = None
    accounting: Accounting | None = None
    distill: DistillSummary | None = None
    attacks: dict[str, AttackRecord] = {}
    robustness: dict[str, dict[str, float | None]] = {}  # attack kind -> budget or "area" -> robustness
    recovery: dict[str, RecoveryCost] = {}  # attack kind -> the attacker's cost

    def attack(self, kind: str) -> AttackRecord | None:
        return self.attacks.get(kind)

    # What the report reads of a record; None where it was not measured (no artifact, no oracle, no attack), so
    # that a reader never has to catch an error to find out (a misspelt field is an AttributeError, not a "–").

    def metric(self, side: str) -> float | None:
        return None if self.metrics is None else self.metrics[side]

    def teacher_metric(self, side: str) -> float | None:
        return None if self.distill is None else self.distill.teacher_metrics[side]

    def forget_at(self, kind: str, key: str) -> float | None:
        """The attacker-best forget score at a budget ("40"), or the area under its curve ("area")."""
        attack = self.attack(kind)
        if attack is None:
            return None
        return attack.area if key == "area" else attack.at[key].forget

    def robustness_at(self, kind: str, key: str) -> float | None:
        return self.robustness.get(kind, {}).get(key)

    @property
    def stage_compute(self) -> float | None:
        """This stage's FLOPs as a share of the oracle's pretraining FLOPs."""
        return None if self.accounting is None else self.accounting.stage_fraction_of_oracle

    @property
    def lineage_compute(self) -> float | None:
        return None if self.accounting is None else self.accounting.lineage_fraction_of_oracle

    @property
    def labelled_fraction(self) -> float | None:
        return None if self.accounting is None else self.accounting.labelled_fraction

    @property
    def compute(self) -> float | None:
        """FLOPs spent on making this model, as a share of the oracle's pretraining FLOPs: a data filter's oracle
        counts its whole lineage (a classifier's training, classifying the corpus, pretraining); a model made from
        the base model (unlearning, distillation) its own stage, as R3 and R5 count UNDO."""
        return self.lineage_compute if self.role == Role.FILTERED else self.stage_compute


class HostCount(BaseModel):
    """A machine that made some of a study's artifacts, and how many."""

    host: HostRecord
    artifacts: int


class RoundsKey(PairedKey):
    """One budget (or the area) of "rounds, then distil" against "one combined unlearning, then distil": both seed
    means of the attacker-best forget score and their per-seed difference, rounds minus combined (the verdict's
    "held": the rounds' model relearned more; "did not hold": less)."""

    rounds: float | None
    combined: float | None


class RoundsPair(BaseModel):
    """A model made after the rounds beside the same model made after the one combined unlearning, same seeds."""

    model: str  # what both are, e.g. "Unlearn-and-Distill" or "UNDO a=0.3"
    rounds: str  # the rounds' model id
    combined: str  # the combined unlearning's model id
    forget_after: dict[str, RoundsKey]  # budget or "area" -> the comparison
    lineage_flops_ratio: Interval  # per seed, the rounds' lineage FLOPs / the combined one's
    labelled_tokens_ratio: Interval  # per seed, the rounds' lineage labelled tokens / the combined one's


class RoundsComparison(BaseModel):
    """`study.rounds` against the study's one combined unlearning of the same family, per attack kind."""

    family: str
    rounds: list[list[str] | None]  # each round's forget parts (None: a file of documents)
    pairs: dict[str, list[RoundsPair]]  # attack kind -> the pairs


class Results(BaseModel):
    run_dir: str
    config_hash: str
    code_version: str
    setting: str
    score: str
    complete: bool
    seeds: list[int]
    budgets: list[int]
    attack_kinds: list[str]
    selection: dict[int, dict[str, TeacherChoice]]
    skipped: dict[str, str]
    wall_time_s: dict[str, float]
    models: list[ModelRecord]
    claims: dict[str, dict[str, AnyClaim]] = {}  # attack kind -> claim id -> claim (`undo.report.claims`)
    oracle_budget: str | None = None  # an oracle pretrained here: same_compute or same_examples
    hosts: list[HostCount] = []  # the machines that made the study's artifacts (several: numbers differ slightly)
    hosts_unrecorded: int = 0  # artifacts made before hosts were recorded
    chance: float | None = None  # a multiple-choice score's chance level
    evaluation: str | None = None  # what every reported number is measured on, in words (the setting's own)
    rounds: list[list[str] | None] = []  # `study.rounds`: each round's forget parts (None: a file)
    rounds_comparison: RoundsComparison | None = None  # with rounds: them against the combined unlearning

    @field_validator("claims", mode="before")
    @classmethod
    def _claims_named_by_their_key(cls, value: Any) -> Any:
        """A results.json written before claims carried their id names each by its key ("R1": {...})."""
        if isinstance(value, dict):
            return {kind: {name: {"id": name, **claim} if isinstance(claim, dict) and "id" not in claim else claim
                           for name, claim in by_name.items()} if isinstance(by_name, dict) else by_name
                    for kind, by_name in value.items()}
        return value

    @property
    def scoring(self) -> Score:
        """How this study's scores compare and print."""
        return Score(self.score, self.chance)


