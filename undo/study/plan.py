"""A study as a graph of tasks: `undo run STUDY.yaml`. The plan reads like the paper:

    pretrain base, oracle (and an oracle per imperfect filter of pretrain.filter_recalls)
      -> per seed: (with pretrain.classifier_filter: a classifier trained on the seed's unlearning labels, and the
                    oracle of what it keeps) unlearn every sweep point (from the base model, or `unlearn.start`)
                    -> choose each method's teacher
           -> Unlearn-and-Distill (random-init student) for study.distill_methods
           -> UNDO (shrink-and-perturb student) for each alpha, from study.undo_method's teacher
           -> oracle matching: the oracle distilled into the base model and into a random init
           -> with study.rounds: the UNDO family's sweep round by round, each from the last round's teacher, then
              the last teacher distilled (random init, each UNDO alpha)
           -> attack base, oracle, every teacher and student (and every sweep point if asked), with each attack kind
      -> report

Each task calls a stage (`undo.stages`), whose artifact is reused when complete and resumed when half done. Tasks
hold no state: a task's inputs are the outputs of other tasks, and those outputs are artifact paths relative to the
run directory, so an executor on other machines that see the run directory can run any task from its description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from undo.config import ExperimentConfig
from undo.core.artifacts import stable_hash
from undo.stages.attack import Attack, attack
from undo.stages.base import Resources, Stage
from undo.stages.distill import Distill, distill
from undo.stages.filter import TrainFilter, train_filter
from undo.stages.pretrain import Pretrain, pretrain
from undo.stages.labels import RoundData
from undo.stages.unlearn import SweepPoint, Unlearn, sweep_points, unlearn
from undo.stages.selection import TeacherChoice, teacher_selection
from undo.schema.study import ModelSpec, Role

DECISION = Resources(cpus=1, gpus=0.0)  # tasks that read evaluations and decide (no training)


class SkipTask(Exception):
    """Raised by a task with nothing to make (e.g. no teacher qualified); its dependants are skipped too."""


@dataclass
class Task:
    """One node of the graph: `action(cfg, **inputs, **params)`, where each input is the output of another task (a
    run-relative artifact path, or a list of them) and `params` are plain values."""

    name: str
    action: Callable[..., Any]
    cfg: ExperimentConfig
    inputs: dict[str, str | list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    stage: type[Stage] | None = None  # the kind of stage it runs (None: a task that only reads and decides)
    model: ModelSpec | None = None  # the model this task makes, for the manifest
    attack_of: str | None = None  # an attack task: the task whose model it attacks
    attack_kind: str | None = None

    @property
    def resources(self) -> Resources:
        return self.stage.resources if self.stage is not None else DECISION

    @property
    def needs(self) -> list[str]:
        return [n for value in self.inputs.values() for n in ([value] if isinstance(value, str) else value)]

    def inputs_from(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The outputs this task needs (what travels to a worker)."""
        return {n: outputs[n] for n in self.needs}

    def run(self, outputs: dict[str, Any]) -> Any:
        resolved = {arg: outputs[value] if isinstance(value, str) else [outputs[v] for v in value]
                    for arg, value in self.inputs.items()}
        return self.action(self.cfg, **resolved, **self.params)


@dataclass
class Plan:
    cfg: ExperimentConfig
    tasks: list[Task] = field(default_factory=list)

    def add(self, name: str, action: Callable[..., Any], cfg: ExperimentConfig, **fields) -> str:
        task = Task(name, action, cfg, **fields)
        known = {t.name for t in self.tasks}
        assert name not in known and set(task.needs) <= known, f"bad plan at {name}"  # a bug, not a user error
        self.tasks.append(task)
        return name

    @property
    def key(self) -> str:
        return stable_hash([t.name for t in self.tasks])


# ----------------------------------------------------------------------------------------------------------
# Task actions: module-level functions (a worker process or a remote executor imports them by name). Each takes
# and returns artifact paths relative to the run directory.


def _relative(cfg: ExperimentConfig, path: Path) -> str:
    run_dir = Path(cfg.run_dir)
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def _folder(cfg: ExperimentConfig, artifact: str) -> Path:
    return Path(cfg.run_dir) / artifact  # an absolute artifact path stays itself


def pretrain_task(cfg: ExperimentConfig, *, which: str, progress: bool, recall: float | None = None) -> str:
    return _relative(cfg, pretrain(cfg, which, recall=recall, progress=progress))


def start_task(cfg: ExperimentConfig) -> str:
    """Where the study's unlearning starts (`unlearn.start`), as the other tasks name artifacts."""
    return _relative(cfg, Path(cfg.unlearn.start).expanduser().resolve())


def unlearn_task(cfg: ExperimentConfig, base: str, *, point: SweepPoint, progress: bool,
                 round_data: RoundData | None = None) -> str:
    return _relative(cfg, unlearn(cfg, point, _folder(cfg, base), round_data=round_data, progress=progress))


def select_task(cfg: ExperimentConfig, base: str, runs: list[str], *,
                points: list[SweepPoint]) -> dict[str, TeacherChoice]:
    return teacher_selection(cfg, [(point, _folder(cfg, run)) for point, run in zip(points, runs)],
                             _folder(cfg, base))


def select_round_task(cfg: ExperimentConfig, base: str, runs: list[str], *,
                      points: list[SweepPoint]) -> dict[str, TeacherChoice]:
    """A round's teacher choice: the same rule, against the *base* model's retain (so rounds cannot lose retain bit
    by bit); its own action, so the manifest's `selection` stays the combined unlearning's."""
    return select_task(cfg, base, runs, points=points)


def teacher_task(cfg: ExperimentConfig, selection: dict[str, TeacherChoice], *, family: str) -> str:
    chosen = selection[family].chosen_candidate()
    if chosen is None:
        raise SkipTask(f"no {family} run kept {cfg.unlearn.selection.min_retain_fraction:.0%} of the base model's "
                       "retain performance, so it has no teacher")
    return chosen.path


def distill_task(cfg: ExperimentConfig, teacher: str, start: str | None = None, *, init: str,
                 alpha: float | None = None, progress: bool) -> str:
    return _relative(cfg, distill(cfg, _folder(cfg, teacher), init=init, alpha=alpha,
                                  start=None if start is None else _folder(cfg, start), progress=progress))


def filter_task(cfg: ExperimentConfig, *, progress: bool) -> str:
    return _relative(cfg, train_filter(cfg, progress=progress))


def classified_oracle_task(cfg: ExperimentConfig, classifier: str, *, progress: bool) -> str:
    return _relative(cfg, pretrain(cfg, "oracle", classifier=_folder(cfg, classifier), progress=progress))


def attack_task(cfg: ExperimentConfig, target: str, *, kind: str, progress: bool) -> str:
    return _relative(cfg, attack(cfg, _folder(cfg, target), kind=kind, progress=progress))


# ----------------------------------------------------------------------------------------------------------


def build_plan(cfg: ExperimentConfig, progress: bool = True) -> Plan:
    """The study's tasks in dependency order."""
    plan = Plan(cfg)
    quiet = {"progress": progress}
    base = plan.add("pretrain base", pretrain_task, cfg, params={"which": "base", **quiet},
                    stage=Pretrain, model=ModelSpec(id="base", role=Role.BASE))
    oracle = None
    if cfg.oracle_source is not None:
        oracle = plan.add("pretrain oracle", pretrain_task, cfg, params={"which": "oracle", **quiet},
                          stage=Pretrain, model=ModelSpec(id="oracle", role=Role.ORACLE))
    filtered = [plan.add(f"pretrain oracle, filter recall {recall:g}", pretrain_task, cfg,
                         params={"which": "oracle", "recall": recall, **quiet}, stage=Pretrain,
                         model=ModelSpec(id=f"filter recall {recall:g}", role=Role.FILTERED, filter_recall=recall))
                for recall in cfg.pretrain.filter_recalls]

    start = base  # where unlearning starts: the base model, or `unlearn.start` (a model of an earlier round)
    if cfg.unlearn.start is not None:
        start = plan.add("unlearning start", start_task, cfg)

    for seed in cfg.seeds:
        scfg = cfg.model_copy(update={"seed": seed})
        tag = f"seed {seed}"
        points = sweep_points(scfg)
        unlearned = [plan.add(f"{tag} / unlearn {point.description}", unlearn_task, scfg, inputs={"base": start},
                              params={"point": point, **quiet}, stage=Unlearn,
                              model=ModelSpec(id=point.description, role=Role.UNLEARN, family=point.label,
                                              seed=seed, lr=point.lr, knobs=dict(point.knobs)))
                     for point in points]
        if cfg.pretrain.classifier_filter is not None:  # trained on this seed's unlearning labels
            classifier = plan.add(f"{tag} / train the classifier filter", filter_task, scfg, params=quiet,
                                  stage=TrainFilter)
            # Pretrained like the oracle (the study's own seed and stream); only the classifier is this seed's.
            filtered_here = [plan.add(f"{tag} / pretrain oracle, classifier filter", classified_oracle_task, cfg,
                                      inputs={"classifier": classifier}, params=quiet, stage=Pretrain,
                                      model=ModelSpec(id="classifier filter", role=Role.FILTERED, seed=seed))]
        else:
            filtered_here = []
        selection = plan.add(f"{tag} / choose teachers", select_task, scfg,
                             inputs={"base": base, "runs": unlearned}, params={"points": points})
        teachers = {family: plan.add(f"{tag} / teacher {family}", teacher_task, scfg,
                                     inputs={"selection": selection}, params={"family": family},
                                     model=ModelSpec(id=f"{family} (unlearn-only)", role=Role.TEACHER,
                                                     family=family, seed=seed))
                    for family in dict.fromkeys(p.label for p in points)}

        def student(name: str, spec: ModelSpec, **task) -> str:
            return plan.add(f"{tag} / {name}", distill_task, scfg, stage=Distill, model=spec, **task)

        students = [student(f"distill {family} -> random init", ModelSpec(
                        id=f"{family} + distill", role=Role.DISTILLED, family=family, seed=seed),
                        inputs={"teacher": teachers[family]}, params={"init": "random", **quiet})
                    for family in cfg.distilled_families]
        if cfg.undo_family is not None:
            family = cfg.undo_family
            students += [student(f"UNDO {family} alpha={alpha:g}", ModelSpec(
                             id=f"UNDO {family} a={alpha:g}", role=Role.UNDO, family=family, alpha=alpha,
                             beta=cfg.distill.beta, seed=seed),
                             inputs={"teacher": teachers[family]}, params={"init": "noised", "alpha": alpha, **quiet})
                         for alpha in cfg.distill.alphas]
        if cfg.study.oracle_matching and oracle is not None:
            students.append(student("oracle matching: base -> oracle logits", ModelSpec(
                id="base distilled from oracle", role=Role.ORACLE_MATCH_BASE, seed=seed),
                inputs={"teacher": oracle, "start": base}, params={"init": "model", **quiet}))
            students.append(student("oracle matching: random init -> oracle logits", ModelSpec(
                id="random init distilled from oracle", role=Role.ORACLE_MATCH_RANDOM, seed=seed),
                inputs={"teacher": oracle}, params={"init": "random", **quiet}))

        rounds = plan_rounds(plan, scfg, base, start, points, quiet) if cfg.study.rounds else []

        attacked_teachers = [teachers[f] for f in (cfg.study.attack_teachers or teachers)]
        # Distilled teachers are always attacked: their students are compared with them.
        attacked_teachers += [teachers[f] for f in [*cfg.distilled_families, cfg.undo_family]
                              if f is not None and teachers[f] not in attacked_teachers]
        targets = [base, *([oracle] if oracle else []), *filtered, *filtered_here, *attacked_teachers, *students,
                   *rounds]
        if cfg.study.attack_sweep_points:
            targets += unlearned
        for kind in cfg.attack.kinds:
            label = "attack" if kind == "finetune" else f"attack ({kind})"
            for target in targets:
                plan.add(f"{tag} / {label} {target.split(' / ', 1)[-1]}", attack_task, scfg,
                         inputs={"target": target}, params={"kind": kind, **quiet}, stage=Attack,
                         attack_of=target, attack_kind=kind)
    return plan


def plan_rounds(plan: Plan, cfg: ExperimentConfig, base: str, start: str, points: list[SweepPoint],
                quiet: dict[str, bool]) -> list[str]:
    """The responsive loop of `study.rounds` for one seed: the UNDO family's sweep once per round, each round from
    the previous round's teacher (the first from `start`, where the study's unlearning starts) on that round's forget
    data, then the last teacher
    distilled into a random init and into each UNDO alpha's noised copy. Returns what is attacked: the last teacher
    and its students (the same attack as the combined unlearning's models, so the two compare paired by seed)."""
    family, seed = cfg.undo_family, cfg.seed
    swept = [point for point in points if point.label == family]
    for number, round_ in enumerate(cfg.study.rounds, 1):
        data = RoundData(number, tuple(round_.forget) if round_.forget else None, round_.forget_data)
        tag = f"seed {seed} / round {number}"
        runs = [plan.add(f"{tag} / unlearn {point.description}", unlearn_task, cfg, inputs={"base": start},
                         params={"point": point, "round_data": data, **quiet}, stage=Unlearn)
                for point in swept]
        choice = plan.add(f"{tag} / choose the teacher", select_round_task, cfg, inputs={"base": base, "runs": runs},
                          params={"points": swept})
        start = plan.add(f"{tag} / teacher {family}", teacher_task, cfg, inputs={"selection": choice},
                         params={"family": family},
                         model=ModelSpec(id=f"{family} after round {number} (unlearn-only)", role=Role.ROUND_TEACHER,
                                         family=family, seed=seed, round=number))
    last = len(cfg.study.rounds)
    students = [plan.add(f"seed {seed} / rounds: distill {family} -> random init", distill_task, cfg,
                         inputs={"teacher": start}, params={"init": "random", **quiet}, stage=Distill,
                         model=ModelSpec(id=f"{family} rounds + distill", role=Role.ROUNDS_DISTILLED, family=family,
                                         seed=seed, round=last))]
    students += [plan.add(f"seed {seed} / rounds: UNDO {family} alpha={alpha:g}", distill_task, cfg,
                          inputs={"teacher": start}, params={"init": "noised", "alpha": alpha, **quiet}, stage=Distill,
                          model=ModelSpec(id=f"UNDO {family} rounds a={alpha:g}", role=Role.ROUNDS_UNDO, family=family,
                                          alpha=alpha, beta=cfg.distill.beta, seed=seed, round=last))
                 for alpha in cfg.distill.alphas]
    return [start, *students]
