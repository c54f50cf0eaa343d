"""A study as a graph of stages: `undo run STUDY.yaml`.

The plan (a list of tasks in dependency order) reads like the paper:

    pretrain base, oracle
      -> per seed: unlearn every sweep point -> choose each method's teacher
           -> Unlearn-and-Distill (random-init student) for study.distill_methods
           -> UNDO (shrink-and-perturb student) for each alpha, from study.undo_method's teacher
           -> oracle matching: the oracle distilled into the base model and into a random init
           -> attack base, oracle, every teacher and student (and every sweep point if asked)
      -> report

Each task calls a stage from `undo.stages`: a pure function of the config and its input artifacts that returns
its artifact folder. The stage itself skips work whose artifact is complete (its key hashes the stage's resolved
config and its inputs' keys) and resumes work left half done, so running the same study again, after a crash or
a SIGKILL, recomputes nothing that finished. The executor runs tasks in process, in order, or (`workers` > 1) in
a pool of worker processes, each task as soon as its inputs exist; since a task only needs its inputs' outputs, a
distributed executor (e.g. Ray) can run the same plan.

The plan's outcome is `<run_dir>/study.json` (the manifest: every model of the study, its role, its artifact
and its attack), which `undo report` reads together with the artifacts.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from undo import stages
from undo.artifacts import NotComputed, dry_run, stable_hash
from undo.config import ExperimentConfig, config_hash
from undo.errors import UserError

console = Console(stderr=True, soft_wrap=True)  # paths stay whole in logs
MANIFEST = "study.json"


class SkipTask(Exception):
    """Raised by a task with nothing to make (e.g. no teacher qualified); its dependants are skipped too."""


@dataclass
class Task:
    """One node of the study graph: `fn(cfg, **inputs, **params)`, where each input is the output of another task
    (an artifact folder, or a list of them) and `params` are plain values. A task raises SkipTask when it has
    nothing to make, and every dependant is skipped with the reason. Tasks hold no state of their own, so an
    executor on other machines can run them from this description."""

    name: str
    fn: Callable[..., Any]
    cfg: ExperimentConfig
    inputs: dict[str, str | list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None  # the model this task makes, for the manifest (role, family, seed, ...)
    attack_of: str | None = None  # for an attack task: the task whose model it attacks

    @property
    def needs(self) -> list[str]:
        return [n for value in self.inputs.values() for n in ([value] if isinstance(value, str) else value)]

    def inputs_from(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """The outputs this task needs (what travels to a worker process)."""
        return {n: outputs[n] for n in self.needs}

    def run(self, outputs: dict[str, Any]) -> Any:
        resolved = {arg: outputs[value] if isinstance(value, str) else [outputs[v] for v in value]
                    for arg, value in self.inputs.items()}
        return self.fn(self.cfg, **resolved, **self.params)


@dataclass
class Plan:
    cfg: ExperimentConfig
    tasks: list[Task] = field(default_factory=list)

    def add(self, name: str, fn: Callable[..., Any], cfg: ExperimentConfig, **fields) -> str:
        task = Task(name, fn, cfg, **fields)
        known = {t.name for t in self.tasks}
        assert name not in known and set(task.needs) <= known, f"bad plan at {name}"  # a bug, not a user error
        self.tasks.append(task)
        return name


def choose_teachers(cfg: ExperimentConfig, runs: list[Path], points: list[stages.SweepPoint]) -> dict[str, Any]:
    return stages.teacher_selection(cfg, list(zip(points, runs)))


def chosen_teacher(cfg: ExperimentConfig, selection: dict[str, Any], family: str) -> Path:
    chosen = selection[family]["chosen"]
    if chosen is None:
        raise SkipTask(f"no {family} run kept {cfg.unlearn.selection.min_retain_fraction:.0%} of the base model's "
                       "retain performance, so it has no teacher")
    return Path(next(c["path"] for c in selection[family]["candidates"] if c["name"] == chosen))


def build_plan(cfg: ExperimentConfig, progress: bool = True) -> Plan:
    """The study's tasks in dependency order."""
    plan = Plan(cfg)
    quiet = {"progress": progress}
    base = plan.add("pretrain base", stages.pretrain, cfg, params={"which": "base", **quiet},
                    model={"id": "base", "role": "base"})
    oracle = None
    if cfg.pretrain.oracle:
        oracle = plan.add("pretrain oracle", stages.pretrain, cfg, params={"which": "oracle", **quiet},
                          model={"id": "oracle", "role": "oracle"})

    for seed in cfg.seeds:
        scfg = cfg.model_copy(update={"seed": seed})
        tag = f"seed {seed}"
        points = stages.sweep_points(scfg)
        unlearned = [plan.add(f"{tag} / unlearn {point.description}", stages.unlearn, scfg, inputs={"base": base},
                              params={"point": point, **quiet},
                              model={"id": point.description, "role": "unlearn", "family": point.label,
                                     "seed": seed, "lr": point.lr, "knobs": dict(point.knobs)})
                     for point in points]
        selection = plan.add(f"{tag} / choose teachers", choose_teachers, scfg, inputs={"runs": unlearned},
                             params={"points": points})
        teachers = {family: plan.add(f"{tag} / teacher {family}", chosen_teacher, scfg,
                                     inputs={"selection": selection}, params={"family": family},
                                     model={"id": f"{family} (unlearn-only)", "role": "teacher", "family": family,
                                            "seed": seed})
                    for family in dict.fromkeys(p.label for p in points)}

        students = [plan.add(f"{tag} / distill {family} -> random init", stages.distill, scfg,
                             inputs={"teacher": teachers[family]}, params={"init": "random", **quiet},
                             model={"id": f"{family} + distill", "role": "distilled", "family": family,
                                    "seed": seed})
                    for family in cfg.distilled_families]
        if cfg.undo_family is not None:
            family = cfg.undo_family
            students += [plan.add(f"{tag} / UNDO {family} alpha={alpha:g}", stages.distill, scfg,
                                  inputs={"teacher": teachers[family]},
                                  params={"init": "noised", "alpha": alpha, **quiet},
                                  model={"id": f"UNDO {family} a={alpha:g}", "role": "undo", "family": family,
                                         "alpha": alpha, "beta": cfg.distill.beta, "seed": seed})
                         for alpha in cfg.distill.alphas]
        if cfg.study.oracle_matching and oracle is not None:
            students.append(plan.add(f"{tag} / oracle matching: base -> oracle logits", stages.distill, scfg,
                                     inputs={"teacher": oracle, "start": base}, params={"init": "model", **quiet},
                                     model={"id": "base distilled from oracle", "role": "oracle_match_base",
                                            "seed": seed}))
            students.append(plan.add(f"{tag} / oracle matching: random init -> oracle logits", stages.distill,
                                     scfg, inputs={"teacher": oracle}, params={"init": "random", **quiet},
                                     model={"id": "random init distilled from oracle",
                                            "role": "oracle_match_random", "seed": seed}))

        attacked_teachers = [teachers[f] for f in (cfg.study.attack_teachers or teachers)]
        # Distilled teachers are always attacked: their students are compared with them.
        attacked_teachers += [teachers[f] for f in [*cfg.distilled_families, cfg.undo_family]
                              if f is not None and teachers[f] not in attacked_teachers]
        targets = [base, *([oracle] if oracle else []), *attacked_teachers, *students]
        if cfg.study.attack_sweep_points:
            targets += unlearned
        for target in targets:
            plan.add(f"{tag} / attack {_short(target)}", stages.attack, scfg, inputs={"target": target},
                     params=quiet, attack_of=target)
    return plan


def _short(task_name: str) -> str:
    return task_name.split(" / ", 1)[-1]


def execute(plan: Plan, *, dry: bool = False, workers: int = 1) -> dict[str, Any]:
    """Run every task (a task whose input is None is skipped, with the reason). Returns outputs by name and writes
    the manifest after every task. `workers` > 1 runs independent tasks at once in that many processes, each with
    its share of the CPU threads. With `dry`, nothing new is computed: complete artifacts are collected and the rest
    is marked "not computed yet" (what `undo report` does)."""
    if dry:
        with dry_run():
            return execute(plan)
    outputs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    pending: set[str] = set()  # not computed yet (dry run), and everything that needs them
    started = time.perf_counter()
    numbers = {task.name: number for number, task in enumerate(plan.tasks, 1)}
    total = len(plan.tasks)

    def skip_if_input_missing(task: Task) -> bool:
        missing = [n for n in task.needs if outputs.get(n) is None]
        if not missing:
            return False
        reason = skipped.get(missing[0]) or f"{missing[0]} produced nothing"
        skipped[task.name] = reason
        if pending & set(missing):
            pending.add(task.name)
        outputs[task.name] = None
        console.print(f"[yellow]({numbers[task.name]}/{total}) skip {task.name}[/]: {reason}")
        return True

    def record(task: Task, run: Callable[[], Any]) -> None:
        try:
            outputs[task.name] = run()
        except (SkipTask, NotComputed) as reason:
            outputs[task.name], skipped[task.name] = None, str(reason)
            if isinstance(reason, NotComputed):
                pending.add(task.name)
            console.print(f"[yellow]nothing made[/] ({task.name}): {reason}")
        write_manifest(plan, outputs, skipped, pending)

    if workers <= 1:
        for task in plan.tasks:
            if skip_if_input_missing(task):
                continue
            console.print(f"[bold]({numbers[task.name]}/{total}) {task.name}[/]")
            record(task, lambda task=task: task.run(outputs))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        waiting = list(plan.tasks)
        running: dict[Future, Task] = {}
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(threads,)) as pool:
            try:
                while waiting or running:
                    settled = True
                    while settled:  # plan order: everything whose inputs are settled (a skip may settle more)
                        settled = False
                        for task in list(waiting):
                            if any(n not in outputs for n in task.needs):
                                continue
                            waiting.remove(task)
                            settled = skip_if_input_missing(task) or settled
                            if task.name not in outputs:  # queued; a free worker takes tasks in plan order
                                running[pool.submit(_run_task, task, task.inputs_from(outputs))] = task
                    assert running or not waiting, "a task waits on inputs nothing will produce"  # a plan bug
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = running.pop(future)
                        console.print(f"[bold]({numbers[task.name]}/{total}) done: {task.name}[/]")
                        record(task, future.result)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    console.print(f"[green]study done[/] in {time.perf_counter() - started:.0f}s: "
                  f"{Path(plan.cfg.run_dir) / MANIFEST}")
    return outputs


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_task(task: Task, inputs: dict[str, Any]) -> Any:
    """A task in a worker process: its inputs' outputs travel with it, its output (a path) travels back."""
    return task.run(inputs)


def write_manifest(plan: Plan, outputs: dict[str, Any], skipped: dict[str, str], pending: set[str]) -> Path:
    """`<run_dir>/study.json`: the config, the teacher choices, and each model with its artifact and attack."""
    cfg = plan.cfg
    attacks = {(t.attack_of, t.cfg.seed): outputs.get(t.name) for t in plan.tasks if t.attack_of}
    models = []
    for task in plan.tasks:
        if task.model is None:
            continue
        artifact = outputs.get(task.name)
        # The base model and oracle are shared by every seed and attacked once per seed: one entry per seed.
        for seed in [task.model["seed"]] if "seed" in task.model else cfg.seeds:
            attack = attacks.get((task.name, seed))
            models.append({**task.model, "seed": seed, "task": task.name,
                           "artifact": str(artifact) if artifact is not None else None,
                           "attack": str(attack) if attack is not None else None,
                           "skipped": skipped.get(task.name)})
    selections = {t.name.split(" / ")[0]: outputs.get(t.name) for t in plan.tasks if t.name.endswith("teachers")}
    manifest = {
        "config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg), "seeds": cfg.seeds,
        "plan_key": stable_hash([t.name for t in plan.tasks]),
        "complete": all(t.name in outputs for t in plan.tasks) and not pending,
        "selection": selections, "models": models,
        "skipped": skipped,
    }
    path = Path(cfg.run_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def run_study(cfg: ExperimentConfig, *, progress: bool = True, report: bool = True, workers: int = 1) -> Path:
    """Build the plan, execute it (in `workers` processes), then write the report. Returns the run directory."""
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    plan = build_plan(cfg, progress=progress and workers == 1)  # parallel tasks would garble progress bars
    execute(plan, workers=workers)
    if report:
        from undo.report import write_report

        write_report(Path(cfg.run_dir))
    return Path(cfg.run_dir)


def collect_study(cfg: ExperimentConfig) -> Path:
    """Write the manifest of what the study's complete artifacts are, computing nothing; returns its path."""
    with dry_run():
        try:
            stages.pretrain(cfg, "base", progress=False)
        except NotComputed:
            raise UserError(f"nothing of this study is computed in {cfg.run_dir} yet (no base model): run "
                            "`undo run STUDY.yaml` first") from None
    execute(build_plan(cfg, progress=False), dry=True)
    return Path(cfg.run_dir) / MANIFEST
