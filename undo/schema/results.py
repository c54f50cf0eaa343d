"""What each stage records: its typed result, which becomes its artifact's meta.json.

The runner (`undo.stages.base.run_stage`) fills the identity fields every result shares (`name`, `key`, `inputs`,
`code_version`, `model_sha256`, `files`); each stage fills the rest in its own subclass. `kind` tells the subclasses
apart, so a meta.json reads back as the right one (`undo.schema.io.read_result`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from undo.schema.curves import BestCurve, Curve, Snapshot


class HostRecord(BaseModel):
    """The machine a stage ran on (`undo.core.host`): the same seed gives slightly different numbers on another CPU
    or GPU, since float kernels differ."""

    cpu: str  # the CPU model
    cores: int | None
    machine: str  # the architecture, e.g. x86_64
    torch: str
    blas: str | None = None  # the BLAS library torch was built with, e.g. mkl
    onednn: str | None = None  # torch's oneDNN (MKL-DNN) version
    cpu_capability: str | None = None  # the vector instructions torch's kernels use, e.g. AVX512
    threads: int  # torch's intra-op threads in the process that ran the stage
    device: str  # "cpu", or the GPU's name
    python: str
    os: str

    @property
    def label(self) -> str:
        """The host in one line; threads left out (the same machine runs stages with different thread counts)."""
        build = ", ".join(part for part in (self.cpu_capability, self.blas and f"BLAS {self.blas}",
                                            self.onednn and f"oneDNN {self.onednn}") if part)
        return (f"{self.cpu} ({self.cores} cores, {self.machine}{', ' + build if build else ''}), torch {self.torch}, "
                f"{self.device}")


class StageResult(BaseModel):
    """What every artifact's meta.json records."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str = ""
    key: str = ""
    code_version: str = ""
    model_sha256: str | None = None
    seed: int
    inputs: dict[str, str | None] = {}  # input role -> that artifact's key
    input_paths: dict[str, str | None] = {}
    steps: int = 0
    tokens: int = 0
    labelled_tokens: int = 0  # tokens read with a retain/forget label (only unlearning reads labels)
    flops: dict[str, int] = {}
    wall_time_s: float = 0.0
    # This process's run of the stage (loading and saving included; a resumed stage: since the resume) split into
    # phases, in seconds (`undo.core.timing`).
    time_split: dict[str, float] = {}
    evaluation_key: str | None = None  # the evaluation identity `final_metrics` were measured under
    final_metrics: dict[str, float] = {}
    flops_total: int = 0  # sum of `flops`, set by the runner
    files: dict[str, dict[str, Any]] = {}  # model/'s files (sha256, size), checked at every reuse
    host: HostRecord | None = None  # the machine that made it (None: made before hosts were recorded)


# --- pretraining ---------------------------------------------------------------------------------------------


class FilterRecord(BaseModel):
    """What a data filter did to the base stream."""

    method: Literal["recall", "classifier"] = "recall"  # a filter of a given recall, or a trained classifier
    recall: float | None  # a recall filter's configured recall
    forget_documents: int  # in the base stream
    removed: int  # forget documents it removed
    retain_documents: int = 0  # in the base stream (a recall filter never removes one)
    retain_removed: int = 0  # retain documents it removed (a classifier's false positives)

    @property
    def measured_recall(self) -> float:
        return self.removed / self.forget_documents if self.forget_documents else 1.0

    @property
    def retain_removed_share(self) -> float | None:
        return self.retain_removed / self.retain_documents if self.retain_documents else None


class PretrainResult(StageResult):
    kind: Literal["pretrain"] = "pretrain"
    which: Literal["base", "oracle"]
    source: str | None = None  # the checkpoint it was loaded from (then it trained 0 steps here)
    oracle_budget: Literal["same_compute", "same_examples"] | None = None  # an oracle pretrained here: its budget
    filtering: FilterRecord | None = None  # an imperfect filter's oracle: what its filter removed
    flops_per_token: int
    parameters: int
    matmul_parameters: int
    data: dict[str, Any]  # the setting's summary of the stream (`Setting.data_summary`) and its packed sequences


# --- unlearning ----------------------------------------------------------------------------------------------


class UnlearnResult(StageResult):
    kind: Literal["unlearn"] = "unlearn"
    label: str
    method: str
    lr: float
    knobs: dict[str, Any]
    sam_rho: float | None
    metrics_before: dict[str, float]  # the base model at step 0, under `evaluation_key`


# --- distillation --------------------------------------------------------------------------------------------

DistillInit = Literal["random", "noised", "model"]


class StopRuleRecord(BaseModel):
    tolerance: float | None  # None: no stop rule
    on: list[str]
    threshold: float | None
    forget_ceiling: float | None
    resolution: float | None  # probes at most this share of the step apart (None: no stop rule)
    probe_every: int | None  # the smallest probe interval
    probes: int  # probes made before the run ended
    max_steps: int | None


class DistillResult(StageResult):
    kind: Literal["distill"] = "distill"
    init: DistillInit
    alpha: float | None
    beta: float | None
    teacher_metrics: dict[str, float]
    stop_rule: StopRuleRecord
    stopped_early: bool
    stop_step: int | None
    previous_probe: int | None  # the probe before the stop: the first qualifying step lies in (previous_probe, stop]
    flops_at_stop: int | None
    flops_per_token: int
    parameters: int
    matmul_parameters: int
    data: dict[str, int]  # documents and packed sequences of the distillation stream


# --- the relearning attack -----------------------------------------------------------------------------------


class AttackData(BaseModel):
    key: str
    kind: str
    documents: int
    sequences: int
    tokens_per_step: int


class LrRun(BaseModel):
    """One LR of the grid: its totals and its forget and retain curves (every evaluated step from 0) on the test
    split (reported) and on the validation split (the attacker's choices)."""

    lr: float
    steps: int
    tokens: int
    flops: dict[str, int]
    wall_time_s: float
    forget: Curve
    retain: Curve
    validation_forget: Curve | None = None
    validation_retain: Curve | None = None


class GridRecord(BaseModel):
    """The LR grid the attacker searched: as configured, the LRs added at its edges, and the budgets where the
    best LR is still an edge (then a stronger attack may exist beyond it)."""

    configured: list[float]
    extended: list[float]
    searched: list[float]  # the LRs whose runs count (a diverged one does not: its loss became NaN/inf)
    diverged: list[float] = []
    edge_at: dict[str, str]  # budget -> "top" or "bottom"
    single_lr: bool


class AttackArea(BaseModel):
    """The area under the reported attacker-best curve up to the largest budget, divided by its span."""

    up_to: int
    value: float


class AttackResult(StageResult):
    kind: Literal["attack"] = "attack"
    attack_kind: str
    attack: dict[str, Any]  # the attack section it ran under, as configured
    data: AttackData
    metrics_before: dict[str, float]
    per_lr: list[LrRun]
    grid: GridRecord
    best: BestCurve  # the reported attacker-best curve: the test score of the LR chosen on validation
    validation_best: BestCurve  # the attacker's own view: the best validation score over LRs at each step
    max_retain_drop: float | None
    snapshots: list[Snapshot]  # `best` at each budget
    area: AttackArea

    def run_at(self, lr: float) -> LrRun:
        return next(run for run in self.per_lr if run.lr == lr)


# --- the label-budget-matched data filter --------------------------------------------------------------------


class ClassifierScores(BaseModel):
    """Forget is the positive class (what the filter removes)."""

    precision: float
    recall: float
    accuracy: float
    documents: int  # held-out labelled documents asked for per side (`pretrain.classifier_filter.heldout_per_side`)
    # Per side, the distinct held-out texts scored, none a training text: `documents`, or fewer where the setting
    # has fewer unseen ones. None in artifacts made before it was recorded (their draws could repeat training texts).
    unique_documents: dict[str, int] | None = None


class FilterResult(StageResult):
    kind: Literal["filter"] = "filter"
    vectorizer: dict[str, Any]  # scikit-learn HashingVectorizer's parameters
    regularisation: float
    training_documents: dict[str, int]  # per side: the unlearning step's read documents
    heldout: ClassifierScores
    iterations: int


AnyResult = PretrainResult | UnlearnResult | DistillResult | AttackResult | FilterResult
