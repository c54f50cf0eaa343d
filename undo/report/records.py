"""Gathering a study's numbers: one typed record per (model, seed), read from the manifest and the artifacts only.

A record holds the model's evaluation under the study's evaluation set, its stage's steps and wall time, its
accounting (computed here, along its lineage, against the study's own base and oracle), a distillation summary, and
one attack record per attack kind with robustness normalised against the same family's unlearn-only teacher and
the oracle of the same seed.
"""

from __future__ import annotations

import json

from collections import Counter, defaultdict
from pathlib import Path

from undo.analysis.accounting import account, artifact_metas
from undo.analysis.robustness import area_under, recovery_target, robustness_or_none, steps_to_reach
from undo.core.artifacts import code_version
from undo.schema.curves import Curve, index_at
from undo.schema.errors import UserError
from undo.schema.io import read_evaluation, read_result
from undo.schema.report import (
    AttackRecord, BudgetSnapshot, ClassifierSummary, DistillSummary, HostCount, ModelRecord, RecoveryCost, Results,
)
from undo.schema.results import AttackResult, DistillResult, FilterResult, PretrainResult, StageResult
from undo.schema.score import Score
from undo.schema.study import Manifest, ModelEntry, Role


class Artifacts:
    """The records of a study's artifacts, each read once: those in the run directory by `artifact_metas` (which the
    accounting needs whole), any other (an artifact made elsewhere) when first asked for."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.by_key = artifact_metas(run_dir)
        self._by_path = {run_dir / m.name: m for m in self.by_key.values()}

    def __getitem__(self, folder: Path) -> StageResult:
        if folder not in self._by_path:
            self._by_path[folder] = read_result(folder)
        return self._by_path[folder]


def test_metrics_at(lr_dir: Path, step: int) -> dict[str, float]:
    """The test-split metrics one LR of an attack logged at `step` (its metrics.jsonl eval line, `test/` names), or
    none where its log is not there."""
    try:
        lines = [json.loads(line) for line in (lr_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    line = next((x for x in lines if x.get("kind") == "eval" and x.get("step") == step), {})
    return {name[len("test/"):]: float(value) for name, value in line.items()
            if name.startswith("test/") and isinstance(value, (int, float))}


def attack_record(kind: str, attack_dir: Path, budgets: list[int], artifacts: Artifacts) -> AttackRecord:
    result = artifacts[attack_dir]
    if not isinstance(result, AttackResult):  # study.json names another kind of artifact here
        raise UserError(f"{attack_dir} is a {result.kind} artifact, not an attack; run `undo report` with the "
                        "study's config to rewrite study.json")
    best = result.best
    at = {}
    for budget in budgets:
        index = index_at(best, budget)
        lr = best.best_lr[index]
        at[str(budget)] = BudgetSnapshot(
            forget=best.values[index], step=best.steps[index], lr=lr,
            retain_at_best_lr=result.run_at(lr).retain.values[index] if lr is not None else None,
            tokens=best.steps[index] * result.data.tokens_per_step,
            metrics={} if lr is None else test_metrics_at(attack_dir / f"lr_{lr:g}", best.steps[index]))
    one_lr = result.per_lr[0]
    return AttackRecord(kind=kind, artifact=attack_dir.name, before=result.metrics_before, best=best,
                        at=at, area=area_under(best, max(budgets)), area_up_to=max(budgets),
                        tokens_per_step=result.data.tokens_per_step,
                        flops_per_step=sum(one_lr.flops.values()) // max(one_lr.steps, 1),
                        wall_time_s=result.wall_time_s, flops_total=result.flops_total,
                        lrs_searched=result.grid.searched, lrs_added=result.grid.extended,
                        edge_at=result.grid.edge_at, single_lr=result.grid.single_lr)


def model_record(entry: ModelEntry, run_dir: Path, evaluation_key: str, budgets: list[int],
                 artifacts: Artifacts, base: StageResult | None, oracle: StageResult | None,
                 pretraining_tokens: int | None) -> ModelRecord:
    record = ModelRecord(**entry.model_dump(include={"id", "role", "seed", "family", "alpha", "beta", "lr", "knobs",
                                                     "filter_recall", "round", "skipped"}))
    if entry.artifact:
        folder = run_dir / entry.artifact
        meta = artifacts[folder]
        metas = artifacts.by_key
        record.artifact = folder.name
        record.metrics = read_evaluation(folder, evaluation_key)
        record.wall_time_s = meta.wall_time_s
        record.steps = meta.steps
        record.accounting = account(meta, metas, oracle=oracle, base=base, pretraining_tokens=pretraining_tokens)
        if isinstance(meta, PretrainResult) and meta.filtering is not None:
            record.filter_removed = meta.filtering.measured_recall
            record.filter_retain_removed = meta.filtering.retain_removed_share
            trained = metas.get(meta.inputs.get("filter"))  # a classifier filter's, by stage key
            if isinstance(trained, FilterResult):
                record.classifier = ClassifierSummary(
                    training_documents=sum(trained.training_documents.values()), precision=trained.heldout.precision,
                    recall=trained.heldout.recall, artifact=trained.name, wall_time_s=trained.wall_time_s)
        if isinstance(meta, DistillResult):
            record.distill = DistillSummary(init=meta.init, stopped_early=meta.stopped_early, stop_step=meta.stop_step,
                                            previous_probe=meta.previous_probe,
                                            flops=meta.flops, flops_at_stop=meta.flops_at_stop,
                                            teacher_metrics=meta.teacher_metrics,
                                            teacher=Path(meta.input_paths.get("teacher") or "").name or None)
    record.attacks = {kind: attack_record(kind, run_dir / path, budgets, artifacts)
                      for kind, path in entry.attacks.items()
                      if path is not None}
    return record


def floored_area(attack: AttackRecord, score: Score, up_to: int) -> float:
    """The area under the attacker-best curve with every point floored at chance (the plain area without one)."""
    if score.chance is None:
        return attack.area
    return area_under(Curve(attack.best.steps, [score.floored(v) for v in attack.best.values]), up_to)


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


def add_recovery_cost(records: list[ModelRecord], kinds: list[str], score: Score) -> None:
    """The attacker's cost for every attacked model: the steps, tokens and FLOPs the attacker-best needs to bring
    its forget score back halfway from the oracle's to the base model's (both before the attack, same seed and
    attack kind; chance-floored like robustness), and that cost as a multiple of its family's unlearn-only teacher's
    (a data filter's oracle against the teacher UNDO distils)."""
    anchors = {(r.seed, r.role, r.family): r for r in records if r.role in (Role.BASE, Role.ORACLE, Role.TEACHER)}
    undo_family = next((r.family for r in records if r.role == Role.UNDO), None)
    f = score.floored
    for kind in kinds:
        for r in records:
            base, oracle = (anchors.get((r.seed, role, None)) for role in (Role.BASE, Role.ORACLE))
            attack = r.attack(kind)
            if not (attack and base and oracle and base.attack(kind) and oracle.attack(kind)):
                continue
            target = recovery_target(f(base.attack(kind).best.values[0]), f(oracle.attack(kind).best.values[0]))
            if target is None:
                continue
            steps, reached = steps_to_reach(Curve(attack.best.steps, [f(v) for v in attack.best.values]), target)
            r.recovery[kind] = RecoveryCost(target=target, reached=reached, steps=steps,
                                            tokens=steps * attack.tokens_per_step, flops=steps * attack.flops_per_step)
        for r in records:
            family = undo_family if r.role == Role.FILTERED else r.family
            teacher = anchors.get((r.seed, Role.TEACHER, family))
            mine, theirs = r.recovery.get(kind), teacher.recovery.get(kind) if teacher else None
            if mine and theirs and theirs.reached and theirs.steps > 0:
                mine.times_unlearn_only = mine.steps / theirs.steps
                mine.times_is_lower_bound = not mine.reached


def hosts_of(results: list[StageResult]) -> tuple[list[HostCount], int]:
    """The distinct machines that made these artifacts (most artifacts first), and how many recorded none."""
    recorded = [result.host for result in results if result.host is not None]
    host_of = {host.label: host for host in recorded}
    counts = Counter(host.label for host in recorded).most_common()
    return [HostCount(host=host_of[label], artifacts=n) for label, n in counts], len(results) - len(recorded)


def gather(run_dir: Path) -> Results:
    """Every record of the study in `run_dir` and its wall times (the claims are `undo.report.claims`)."""
    manifest = Manifest.read(run_dir)
    budgets, score = manifest.budgets, manifest.score
    artifacts = Artifacts(run_dir)
    shared = {e.role: artifacts[run_dir / e.artifact] for e in manifest.models
              if e.role in (Role.BASE, Role.ORACLE) and e.artifact}
    records = [model_record(entry, run_dir, manifest.evaluation_key, budgets, artifacts, shared.get(Role.BASE),
                            shared.get(Role.ORACLE), manifest.pretraining_tokens) for entry in manifest.models]
    add_robustness(records, budgets, manifest.attack_kinds, score)
    add_recovery_cost(records, manifest.attack_kinds, score)
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
    made = {r.artifact for r in records} | {a.artifact for r in records for a in r.attacks.values()} | {
        r.classifier.artifact for r in records if r.classifier}
    hosts, unrecorded = hosts_of([m for m in artifacts.by_key.values() if m.name in made])
    oracle = shared.get(Role.ORACLE)
    return Results(hosts=hosts, hosts_unrecorded=unrecorded,
        run_dir=str(run_dir), config_hash=manifest.config_hash, code_version=code_version(), setting=manifest.setting,
        score=score.kind, chance=score.chance, complete=manifest.complete, seeds=manifest.seeds, budgets=budgets,
        attack_kinds=manifest.attack_kinds, selection=manifest.selection, skipped=manifest.skipped,
        oracle_budget=oracle.oracle_budget if isinstance(oracle, PretrainResult) else None,
        evaluation=manifest.evaluation, rounds=manifest.rounds,
        wall_time_s={**{k: round(v, 1) for k, v in sorted(wall.items())}, "total": round(sum(wall.values()), 1)},
        models=records)
