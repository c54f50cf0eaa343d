"""Gathering a study's numbers: one typed record per (model, seed), read from the manifest and the artifacts only.

A record holds the model's evaluation under the study's evaluation set, its stage's steps and wall time, its
accounting (computed here, along its lineage, against the study's own base and oracle), a distillation summary, and
one attack record per attack kind with robustness normalised against the same family's unlearn-only teacher and
the oracle of the same seed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from undo.analysis.accounting import Accounting, account, artifact_metas
from undo.analysis.robustness import BestCurve, Curve, area_under, robustness_or_none
from undo.core.artifacts import code_version
from undo.core.errors import UserError
from undo.settings import SETTINGS, Score
from undo.stages.attack import AttackResult
from undo.stages.distill import DistillResult
from undo.stages.evaluation import read_evaluation
from undo.stages.filter import FilterResult
from undo.stages.pretrain import FilterRecord
from undo.stages.selection import TeacherChoice
from undo.study.manifest import Manifest, ModelEntry, Role


class Snapshot(BaseModel):
    """The attacker-best forget score at a budget: the last evaluated step <= the budget, its LR, and the retain
    score of that LR at that step."""

    forget: float
    step: int
    lr: float | None
    retain_at_best_lr: float | None
    tokens: int


class AttackRecord(BaseModel):
    kind: str
    artifact: str
    before: dict[str, float]
    best: dict[str, Any]
    at: dict[str, Snapshot]  # budget (as text) -> snapshot
    area: float
    area_up_to: int
    wall_time_s: float
    flops_total: int
    lrs_searched: list[float] = []
    lrs_added: list[float] = []  # added at the grid's edges (`attack.extend_grid`)
    edge_at: dict[str, str] = {}  # budget -> "top"/"bottom": the best LR is still an edge there
    single_lr: bool = False


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

    def attack(self, kind: str) -> AttackRecord | None:
        return self.attacks.get(kind)

    @property
    def compute(self) -> float | None:
        """FLOPs spent on making this model, as a share of the oracle's pretraining FLOPs: a data filter's oracle
        counts its whole lineage (a classifier's training, classifying the corpus, pretraining); a model made from
        the base model (unlearning, distillation) its own stage, as R3 and R5 count UNDO."""
        if self.accounting is None:
            return None
        if self.role == Role.FILTERED:
            return self.accounting.lineage_fraction_of_oracle
        return self.accounting.stage_fraction_of_oracle


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
    claims: dict[str, dict[str, Any]] = {}  # attack kind -> claim id -> claim
    oracle_budget: str | None = None  # an oracle pretrained here: same_compute or same_examples


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def attack_record(kind: str, attack_dir: Path, budgets: list[int]) -> AttackRecord:
    result = AttackResult.model_validate(load_json(attack_dir / "meta.json"))
    best = BestCurve.from_dict(result.best)
    retain_by_lr = {run.lr: run.retain for run in result.per_lr}
    at = {}
    for budget in budgets:
        index = max(i for i, step in enumerate(best.steps) if step <= budget)
        lr = best.best_lr[index]
        at[str(budget)] = Snapshot(forget=best.values[index], step=best.steps[index], lr=lr,
                                   retain_at_best_lr=retain_by_lr[lr]["values"][index] if lr is not None else None,
                                   tokens=budget * result.data.tokens_per_step)
    return AttackRecord(kind=kind, artifact=attack_dir.name, before=result.metrics_before, best=best.to_dict(),
                        at=at, area=area_under(best, max(budgets)), area_up_to=max(budgets),
                        wall_time_s=result.wall_time_s, flops_total=result.flops_total,
                        lrs_searched=result.grid.searched, lrs_added=result.grid.extended,
                        edge_at=result.grid.edge_at, single_lr=result.grid.single_lr)


def model_record(entry: ModelEntry, run_dir: Path, evaluation_key: str, budgets: list[int],
                 metas: dict[str, dict[str, Any]], base: dict | None, oracle: dict | None,
                 pretraining_tokens: int | None) -> ModelRecord:
    record = ModelRecord(**entry.model_dump(include={"id", "role", "seed", "family", "alpha", "beta", "lr", "knobs",
                                                     "filter_recall", "skipped"}))
    if entry.artifact:
        folder = run_dir / entry.artifact
        meta = load_json(folder / "meta.json")
        record.artifact = folder.name
        record.metrics = read_evaluation(folder, evaluation_key)
        record.wall_time_s = meta.get("wall_time_s")
        record.steps = meta.get("steps")
        record.accounting = account(meta, metas, oracle=oracle, base=base, pretraining_tokens=pretraining_tokens)
        if meta.get("filtering"):
            filtering = FilterRecord.model_validate(meta["filtering"])
            record.filter_removed = filtering.measured_recall
            if filtering.retain_documents:
                record.filter_retain_removed = filtering.retain_removed / filtering.retain_documents
            trained = metas.get((meta.get("inputs") or {}).get("filter"))  # a classifier filter's, by stage key
            if trained:
                f = FilterResult.model_validate(trained)
                record.classifier = ClassifierSummary(training_documents=sum(f.training_documents.values()),
                                                      precision=f.heldout.precision, recall=f.heldout.recall,
                                                      artifact=trained["name"], wall_time_s=f.wall_time_s)
        if meta["kind"] == "distill":
            d = DistillResult.model_validate(meta)
            record.distill = DistillSummary(init=d.init, stopped_early=d.stopped_early, stop_step=d.stop_step,
                                            previous_probe=d.previous_probe,
                                            flops=d.flops, flops_at_stop=d.flops_at_stop,
                                            teacher_metrics=d.teacher_metrics,
                                            teacher=Path(d.input_paths.get("teacher") or "").name or None)
    record.attacks = {kind: attack_record(kind, run_dir / path, budgets) for kind, path in entry.attacks.items()
                      if path is not None}
    return record


def floored_area(attack: AttackRecord, score: Score, up_to: int) -> float:
    """The area under the attacker-best curve with every point floored at chance (the plain area without one)."""
    if score.chance is None:
        return attack.area
    best = BestCurve.from_dict(attack.best)
    return area_under(Curve(best.steps, [score.floored(v) for v in best.values]), up_to)


def add_robustness(records: list[ModelRecord], budgets: list[int], kinds: list[str], score: Score) -> None:
    """Normalised robustness of every attacked model that has a method family, against that family's teacher
    (unlearn-only, 0) and the oracle (1) of the same seed, under the same attack kind. Forget scores below a
    multiple-choice chance level count as chance (`Score.floored`). A data filter's oracle has no family: it is
    measured in UNDO's units, against the teacher UNDO distils (so it sits on UNDO's scale in the report)."""
    anchors = {(r.seed, r.role, r.family): r for r in records if r.role in (Role.TEACHER, Role.ORACLE)}
    undo_family = next((r.family for r in records if r.role == Role.UNDO), None)
    for r in records:
        family = undo_family if r.role == Role.FILTERED else r.family
        teacher = anchors.get((r.seed, Role.TEACHER, family))
        oracle = anchors.get((r.seed, Role.ORACLE, None))
        if not (family and teacher and oracle):
            continue
        for kind in kinds:
            p, u, o = (x.attack(kind) for x in (r, teacher, oracle))
            if not (p and u and o):
                continue
            f = score.floored
            rob = {key: robustness_or_none(f(p.at[key].forget), f(u.at[key].forget), f(o.at[key].forget))
                   for key in (str(b) for b in budgets)}
            rob["area"] = robustness_or_none(*(floored_area(x, score, max(budgets)) for x in (p, u, o)))
            r.robustness[kind] = rob


def gather(run_dir: Path) -> Results:
    """Every record of the study in `run_dir` and its wall times (the claims are `undo.report.claims`)."""
    manifest = Manifest.read(run_dir)
    cfg = manifest.config
    setting_name = cfg["setting"]["name"]
    if setting_name not in SETTINGS:
        raise UserError(f"{run_dir} is a study of the setting {setting_name!r}, which is not registered here")
    budgets = list(cfg["attack"]["budgets"])
    metas = artifact_metas(run_dir)
    shared = {e.role: load_json(run_dir / e.artifact / "meta.json") for e in manifest.models
              if e.role in (Role.BASE, Role.ORACLE) and e.artifact}
    declared = cfg["model"].get("pretraining_tokens") if cfg["model"].get("pretrained") else None
    records = [model_record(entry, run_dir, manifest.evaluation_key, budgets, metas, shared.get(Role.BASE),
                            shared.get(Role.ORACLE), declared) for entry in manifest.models]
    add_robustness(records, budgets, manifest.attack_kinds, SETTINGS[setting_name].score)
    seen, wall = set(), defaultdict(float)
    for r in records:  # every artifact's own wall time, once (base and oracle appear once per seed)
        parts = [(r.artifact, r.wall_time_s, r.role.stage_kind)]
        parts += [(a.artifact, a.wall_time_s, "attack") for a in r.attacks.values()]
        if r.classifier:  # a classifier filter's oracle: its classifier's own stage
            parts.append((r.classifier.artifact, r.classifier.wall_time_s, "filter"))
        for name, seconds, kind in parts:
            if name and name not in seen and seconds is not None:
                seen.add(name)
                wall[kind] += seconds
    return Results(
        run_dir=str(run_dir), config_hash=manifest.config_hash, code_version=code_version(), setting=setting_name,
        score=SETTINGS[setting_name].score.kind, complete=manifest.complete, seeds=manifest.seeds, budgets=budgets,
        attack_kinds=manifest.attack_kinds, selection=manifest.selection, skipped=manifest.skipped,
        oracle_budget=(shared.get(Role.ORACLE) or {}).get("oracle_budget"),
        wall_time_s={**{k: round(v, 1) for k, v in sorted(wall.items())}, "total": round(sum(wall.values()), 1)},
        models=records)
