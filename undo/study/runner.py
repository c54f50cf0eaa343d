"""Running a study: build the plan, execute it with an executor, keep the manifest current. (The report is the
layer above: `undo.api.run_study` runs the study, then writes it.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from undo.config import ExperimentConfig, config_hash
from undo.core import distributed
from undo.core.artifacts import Artifact, dry_run
from undo.schema.errors import UserError
from undo.core.locks import command_line, run_dir_lock
from undo.stages.pretrain import pretrain_key
from undo.stages.evaluation import report_key, setting_for
from undo.study.executors import Executor, SerialExecutor, console, execute, executor_kind
from undo.study.index import elsewhere, remember
from undo.schema.study import MANIFEST, Manifest, ModelEntry
from undo.study.plan import Plan, build_plan, select_task


def study_header(plan: Plan) -> dict[str, Any]:
    """What the manifest says of the study as a whole: the same after every task, so computed once (the evaluation
    identity hashes the setting's files)."""
    cfg = plan.cfg
    return {"config": cfg.model_dump(mode="json"), "config_hash": config_hash(cfg), "setting": cfg.setting.name,
            "score": cfg.setting.score, "budgets": list(cfg.attack.budgets),
            "evaluation": setting_for(cfg, purpose="report").describe_evaluation(),
            "pretraining_tokens": cfg.model.pretraining_tokens if cfg.model.pretrained else None,
            "run_dir": str(Path(cfg.run_dir).resolve()), "evaluation_key": report_key(cfg), "seeds": cfg.seeds,
            "attack_kinds": cfg.attack.kinds, "rounds": [r.forget for r in cfg.study.rounds], "plan_key": plan.key}


def manifest_of(plan: Plan, header: dict[str, Any], outputs: dict[str, Any], skipped: dict[str, str],
                pending: set[str]) -> Manifest:
    """What the plan has made so far: every model (once per seed) with its artifact and its attacks."""
    cfg = plan.cfg
    attacks: dict[tuple[str, int], dict[str, str | None]] = {}
    for task in plan.tasks:
        if task.attack_of is not None:
            attacks.setdefault((task.attack_of, task.cfg.seed), {})[task.attack_kind] = outputs.get(task.name)
    models = []
    for task in plan.tasks:
        if task.model is None:
            continue
        # The base model and oracle are shared by every seed and attacked once per seed: one entry per seed.
        for seed in [task.model.seed] if task.model.seed is not None else cfg.seeds:
            models.append(ModelEntry(**{**task.model.model_dump(), "seed": seed}, task=task.name,
                                     artifact=outputs.get(task.name), attacks=attacks.get((task.name, seed), {}),
                                     skipped=skipped.get(task.name)))
    selection = {t.cfg.seed: outputs[t.name] for t in plan.tasks
                 if t.action is select_task and outputs.get(t.name) is not None}
    return Manifest(**header, complete=all(t.name in outputs for t in plan.tasks) and not pending,
                    selection=selection, models=models, skipped=skipped)


def execute_plan(plan: Plan, executor: Executor) -> dict[str, Any]:
    run_dir = Path(plan.cfg.run_dir)
    header = study_header(plan) if distributed.is_main() else {}

    def write(outputs, skipped, pending) -> None:
        if distributed.is_main():
            manifest_of(plan, header, outputs, skipped, pending).write(run_dir)

    return execute(plan, executor, write)


def run_study(cfg: ExperimentConfig, *, progress: bool = True, workers: int | None = None, executor: str = "local",
              address: str | None = None, then: Callable[[Path], Any] | None = None) -> Path:
    """Build the plan, execute it with the executor kind named `executor` (`undo.study.executors.EXECUTORS`: "local",
    in this process or in `workers` processes, by default the config's `study.workers`; "ray", as Ray tasks on the
    cluster at `address`, a local Ray when None), then call
    `then(run_dir)` in the main process while the run directory is still locked (the report). Returns the run
    directory."""
    kind = executor_kind(executor)
    workers = kind.default_workers(cfg) if workers is None else workers
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    kind.check(cfg, workers, address)
    others = [] if (Path(cfg.run_dir) / MANIFEST).is_file() else elsewhere(cfg)
    if others:
        console.print(f"[yellow]note[/]: this config's study already exists in {others[0]}; this run starts a new one "
                      f"in {Path(cfg.run_dir).resolve()} (run from there, or pass --run-dir {others[0]}, to reuse it)")
    with run_dir_lock(Path(cfg.run_dir), command_line()):
        if distributed.is_main():
            remember(cfg)
        plan = build_plan(cfg, progress=progress and kind.serial(workers))  # parallel tasks would garble bars
        execute_plan(plan, kind.open(cfg, workers, address))
        if then is not None and distributed.is_main():
            then(Path(cfg.run_dir))
    return Path(cfg.run_dir)


def collect_study(cfg: ExperimentConfig) -> Path:
    """Write the manifest of the study's complete artifacts, computing nothing; returns its path."""
    if not Artifact(cfg.run_dir, "base", pretrain_key(cfg, "base")).is_complete():
        others = elsewhere(cfg)
        where = (f"; this config's study is in {others[0]}: run from there or pass --run-dir {others[0]}" if others
                 else ": run `undo run STUDY.yaml` first")
        raise UserError(f"nothing of this study is computed in {Path(cfg.run_dir).resolve()} yet (no base model)"
                        f"{where}")
    with dry_run():
        execute_plan(build_plan(cfg, progress=False), SerialExecutor())
    return Path(cfg.run_dir) / MANIFEST
