"""The study's records: the roles models play, each model the plan makes (`ModelSpec`, `ModelEntry`), the teacher
choices (`TeacherChoice`) and the manifest `<run_dir>/study.json` (`Manifest`) that the report reads.

Paths are relative to the run directory (so a run directory can be moved, or seen from other machines); each model
of the study appears once per seed with its role, its artifact and one attack artifact per attack kind.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from undo.schema.errors import UserError
from undo.schema.score import Score
from undo.schema.strict import StrictModel

MANIFEST = "study.json"


class SelectionRule(StrictModel):
    """How a sweep picks its teacher: the lowest forget metric among runs that keep enough retain performance (a
    config section, `unlearn.selection`, recorded with every choice)."""

    min_retain_fraction: float = Field(0.95, ge=0, le=1, description="retain metric >= this x the base model's")


class Candidate(BaseModel):
    name: str  # the unlearning artifact's folder name
    path: str = ""  # its folder, relative to the run directory when it lies there
    lr: float = 0.0
    knobs: dict[str, Any] = {}
    retain: float
    forget: float
    qualifies: bool | None = None


class TeacherChoice(BaseModel):
    rule: SelectionRule
    base_retain: float
    retain_threshold: float
    chosen: str | None  # a candidate's name
    candidates: list[Candidate]

    def chosen_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.name == self.chosen), None)


class Role(str, Enum):
    """What a model is in the study (the paper's vocabulary)."""

    BASE = "base"  # pretrained on retain + forget data
    ORACLE = "oracle"  # pretrained on retain data only: perfect data filtering
    FILTERED = "filtered"  # pretrained on the base stream after an imperfect filter (a recall below 1)
    UNLEARN = "unlearn"  # one unlearning sweep point
    TEACHER = "teacher"  # the sweep point chosen for its family: the unlearn-only model
    DISTILLED = "distilled"  # Unlearn-and-Distill: the teacher distilled into a random init
    UNDO = "undo"  # the teacher distilled into a shrink-and-perturbed copy of itself
    ORACLE_MATCH_BASE = "oracle_match_base"  # the base model distilled toward the oracle's outputs
    ORACLE_MATCH_RANDOM = "oracle_match_random"  # a random init distilled from the oracle
    # `study.rounds`: the responsive loop, compared with the one combined unlearning above
    ROUND_TEACHER = "round_teacher"  # the teacher chosen after a round (from the previous round's teacher)
    ROUNDS_DISTILLED = "rounds_distilled"  # the last round's teacher distilled into a random init
    ROUNDS_UNDO = "rounds_undo"  # the last round's teacher distilled into a shrink-and-perturbed copy of itself

    @property
    def stage_kind(self) -> str:
        return {Role.BASE: "pretrain", Role.ORACLE: "pretrain", Role.FILTERED: "pretrain", Role.UNLEARN: "unlearn",
                Role.TEACHER: "unlearn", Role.ROUND_TEACHER: "unlearn"}.get(self, "distill")


ROUNDS_ROLES = (Role.ROUND_TEACHER, Role.ROUNDS_DISTILLED, Role.ROUNDS_UNDO)


class ModelSpec(BaseModel):
    """A model the plan makes, as the report names it."""

    id: str
    role: Role
    seed: int | None = None  # None: shared by every seed (the pretrained base and oracle)
    family: str | None = None
    alpha: float | None = None
    beta: float | None = None
    lr: float | None = None
    knobs: dict[str, Any] | None = None
    filter_recall: float | None = None  # an imperfect filter's oracle: its recall
    round: int | None = None  # a model of `study.rounds`: the round whose teacher it is (or distils: the last)


class ModelEntry(ModelSpec):
    seed: int
    task: str
    artifact: str | None  # relative to the run directory; None when not made (see `skipped`)
    attacks: dict[str, str | None] = {}  # attack kind -> its artifact (relative), None when not made
    skipped: str | None = None


class Manifest(BaseModel):
    config: dict[str, Any]  # the resolved config, for people (the report reads the typed fields below)
    config_hash: str
    setting: str  # the setting's registered name
    score: Score  # how its scores compare and print
    evaluation: str | None = None  # what the reported numbers are measured on, in words
    budgets: list[int]  # the attack budgets the report reads curves at
    pretraining_tokens: int | None = None  # a checkpoint's declared pretraining tokens (`model.pretraining_tokens`)
    run_dir: str  # where the study ran, resolved (a relative run_dir depends on the working directory)
    evaluation_key: str  # the evaluation identity every reported metric is measured under
    seeds: list[int]
    attack_kinds: list[str]
    rounds: list[list[str] | None] = []  # `study.rounds`: each round's forget parts (None: a file of documents)
    plan_key: str
    complete: bool
    selection: dict[int, dict[str, TeacherChoice]]  # seed -> method family -> its teacher choice
    models: list[ModelEntry]
    skipped: dict[str, str]  # task name -> why it made nothing

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, run_dir: Path) -> Manifest:
        path = Path(run_dir) / MANIFEST
        if not path.is_file():
            raise UserError(f"no study at {run_dir}: {MANIFEST} is missing; run `undo run STUDY.yaml` first")
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{path} is damaged ({type(err).__name__}); run `undo run` with the study's config again "
                            "to rewrite it (complete artifacts are reused)") from None
